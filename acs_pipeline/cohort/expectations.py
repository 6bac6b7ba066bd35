"""Great Expectations (1.x) checks on the typed clinical tables of ``ed-bwh-ecg`` v1.

One suite per table, run on an in-memory (ephemeral) context with a pandas data source:

- every required column of :data:`acs_pipeline.cohort.tables.TABLES` exists;
- id columns are not null and match :data:`acs_pipeline.cohort.tables.ID_PATTERNS`;
- each table's key (``TableSpec.key``) is unique;
- labels, exclusion and the four classical flags are booleans without nulls; race columns are
  booleans (nulls allowed);
- ``age_at_admit`` lies in [0, 120] for at least 99 % of the visits; ``sex`` is in
  :data:`SEX_VALUES`;
- join coverage (:data:`JOINS`): every ECG has an encounter link, every linked encounter exists,
  every encounter's patient exists. The membership is computed in polars into a derived boolean
  column (``<column>__in__<other table>``, null where the id is null) that must be True: handing
  GX the other table's ids as a ``value_set`` copies that list thousands of times while it
  builds metrics (about 40 s per join at 112,900 ids);
- ACS implies tested: ``cath_010_day`` is True on every row where ``stent_or_cabg_010_day`` is
  True (a GX row condition; a null ``cath_010_day`` is left to the not-null check).

``great_expectations`` is imported inside :func:`validate_tables` only (it takes seconds).
Unexpected examples are capped at :data:`MAX_EXAMPLES` distinct values: the offending values, or
for null checks and the ACS check the key of the offending rows, for join coverage the ids that
do not join.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS, ID_PATTERNS, RACE_COLUMNS, TABLES

MAX_EXAMPLES = 5
# Bump when an expectation, its threshold or the report changes: a result recorded for tables of
# the same content is then not reused (see ``tables_version``).
SUITE_VERSION = "1"
SEX_VALUES = ("F", "M", "Female", "Male", "0", "1")
LABEL_COLUMNS = (
    "stent_or_cabg_010_day",
    "macetrop_pos_or_death_030",
    "cath_010_day",
    "exclude_modeling",
)
AGE_RANGE = (0.0, 120.0)
AGE_MOSTLY = 0.99
# (table, column) must take its values among (other table, column).
JOINS = (
    ("ecg_metadata", "ecg_id", "ecg_ed_enc", "ecg_id"),
    ("ecg_ed_enc", "ed_enc_id", "ed_encounter", "ed_enc_id"),
    ("ed_encounter", "patient_ngsci_id", "patient", "patient_ngsci_id"),
)


class ExpectationsError(ValueError):
    """The tables cannot be validated (for example a table is missing from the mapping)."""


@dataclass(frozen=True)
class ExpectationOutcome:
    table: str
    expectation: str  # the GX expectation type, e.g. ``expect_column_values_to_be_unique``
    column: str | None  # ``"a,b"`` when the expectation involves two columns
    success: bool
    unexpected_count: int
    unexpected_examples: list
    description: str


@dataclass(frozen=True)
class ValidationReport:
    outcomes: list[ExpectationOutcome]
    seconds: float

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def markdown(self) -> str:
        """A Markdown table of the failed expectations, or ``all N expectations passed``."""
        fails = self.failures()
        n = len(self.outcomes)
        if not fails:
            return f"all {n} expectations passed"
        lines = [
            f"{len(fails)} of {n} expectations failed",
            "",
            "| table | expectation | column | unexpected | examples | description |",
            "|---|---|---|---|---|---|",
        ]
        for o in fails:
            cells = [
                o.table,
                o.expectation,
                o.column or "",
                str(o.unexpected_count),
                ", ".join(map(str, o.unexpected_examples)),
                o.description,
            ]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)

    def as_metadata(self) -> dict:
        """JSON-ready counts: totals, per table, and the failures with their examples."""
        per_table: dict[str, dict[str, int]] = {}
        for o in self.outcomes:
            t = per_table.setdefault(o.table, {"expectations": 0, "failed": 0})
            t["expectations"] += 1
            t["failed"] += int(not o.success)
        fails = self.failures()
        return {
            "success": self.success,
            "expectations": len(self.outcomes),
            "passed": len(self.outcomes) - len(fails),
            "failed": len(fails),
            "seconds": round(self.seconds, 3),
            "per_table": per_table,
            "failures": [
                {
                    "table": o.table,
                    "expectation": o.expectation,
                    "column": o.column,
                    "unexpected_count": o.unexpected_count,
                    "examples": o.unexpected_examples,
                }
                for o in fails
            ],
        }


@dataclass
class _Check:
    table: str
    column: str | None
    description: str
    expectation: Any  # a great_expectations Expectation
    examples_from: str | None = None  # report this column at the offending rows, not the values


@dataclass
class _Plan:
    checks: dict[str, list[_Check]] = field(default_factory=dict)
    derived: dict[str, list[pl.Expr]] = field(default_factory=dict)

    def add(self, check: _Check) -> None:
        self.checks.setdefault(check.table, []).append(check)


def _plan(tables: Mapping[str, pl.DataFrame], gxe: Any, column_cond: Any) -> _Plan:
    """The expectations for each table (only on columns that exist; existence is checked too)."""
    plan = _Plan()
    for name, spec in TABLES.items():
        cols = set(tables[name].columns)
        key = next((k for k in spec.key if k in cols), None)

        def add(column, description, expectation, examples_from=None, _name=name):
            plan.add(_Check(_name, column, description, expectation, examples_from))

        for c in spec.required:
            add(c, "required column exists", gxe.ExpectColumnToExist(column=c))
        for c in (c for c in ID_PATTERNS if c in spec.required and c in cols):
            add(c, "id is not null", gxe.ExpectColumnValuesToNotBeNull(column=c), key)
            add(
                c,
                f"id matches {ID_PATTERNS[c]}",
                gxe.ExpectColumnValuesToMatchRegex(column=c, regex=ID_PATTERNS[c]),
            )
        if key:
            add(key, "key is unique", gxe.ExpectColumnValuesToBeUnique(column=key))
        for c in (c for c in (*LABEL_COLUMNS, *CLASSICAL_FLAGS) if c in spec.booleans):
            if c in cols:
                add(
                    c, "boolean", gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True, False])
                )
                add(c, "boolean without nulls", gxe.ExpectColumnValuesToNotBeNull(column=c), key)
        for c in (c for c in RACE_COLUMNS if c in cols):
            add(
                c,
                "boolean (nulls allowed)",
                gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[True, False]),
            )
        if name == "patient" and "sex" in cols:
            add(
                "sex",
                f"sex in {list(SEX_VALUES)} (nulls allowed)",
                gxe.ExpectColumnValuesToBeInSet(column="sex", value_set=list(SEX_VALUES)),
            )
        if name == "ed_encounter":
            if "age_at_admit" in cols:
                lo, hi = AGE_RANGE
                add(
                    "age_at_admit",
                    f"age in [{lo:g}, {hi:g}] for >= {AGE_MOSTLY:.0%} of visits",
                    gxe.ExpectColumnValuesToBeBetween(
                        column="age_at_admit", min_value=lo, max_value=hi, mostly=AGE_MOSTLY
                    ),
                )
            if {"stent_or_cabg_010_day", "cath_010_day"} <= cols:
                acs_rows = column_cond("stent_or_cabg_010_day") == True  # noqa: E712 (a GX condition)
                add(
                    "stent_or_cabg_010_day,cath_010_day",
                    "ACS implies tested: cath_010_day is True wherever stent_or_cabg_010_day is",
                    gxe.ExpectColumnValuesToBeInSet(
                        column="cath_010_day", value_set=[True], row_condition=acs_rows
                    ),
                    key,
                )
    for table, col, other, other_col in JOINS:
        if col in tables[table].columns and other_col in tables[other].columns:
            flag = f"{col}__in__{other}"
            ids = tables[other][other_col].drop_nulls().unique().implode()
            plan.derived.setdefault(table, []).append(
                pl.when(pl.col(col).is_null())
                .then(None)
                .otherwise(pl.col(col).is_in(ids))
                .alias(flag)
            )
            plan.add(
                _Check(
                    table,
                    col,
                    f"join coverage: every {table}.{col} is in {other}.{other_col}",
                    gxe.ExpectColumnValuesToBeInSet(column=flag, value_set=[True]),
                    col,
                )
            )
    return plan


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)):
        v = v.item()  # numpy scalar
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dt.date | dt.datetime):
        return v.isoformat()
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)


def _examples(check: _Check, result: dict, frame: Any) -> list:
    if check.examples_from is not None and check.examples_from in frame.columns:
        values = frame[check.examples_from]  # a pandas Series on a RangeIndex
        raw = [
            values.iloc[i]
            for i in result.get("partial_unexpected_index_list") or []
            if isinstance(i, int) and 0 <= i < len(values)
        ]
    else:
        raw = result.get("partial_unexpected_list") or []
    out: list = []
    for v in map(_jsonable, raw):
        if v not in out:
            out.append(v)
        if len(out) == MAX_EXAMPLES:
            break
    return out


def validate_tables(tables: Mapping[str, pl.DataFrame]) -> ValidationReport:
    """Run every expectation on the four typed tables (from :func:`tables.parse_table`)."""
    missing = [n for n in TABLES if n not in tables]
    if missing:
        raise ExpectationsError(
            f"cannot validate: missing table(s) {missing}; expected all of {list(TABLES)}"
        )
    start = time.perf_counter()
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.expectations.row_conditions import Column

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("acs_tables")
    plan = _plan(tables, gxe, Column)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": 4 * MAX_EXAMPLES}
    outcomes: list[ExpectationOutcome] = []
    for name, checks in plan.checks.items():
        df = tables[name]
        used = {c for ch in checks if ch.column for c in ch.column.split(",")} | set(
            TABLES[name].required
        )
        frame = df.select(
            *[c for c in df.columns if c in used], *plan.derived.get(name, [])
        ).to_pandas()
        suite = gx.ExpectationSuite(name=f"acs_{name}")
        for i, ch in enumerate(checks):
            ch.expectation.meta = {"check": i}
            suite.add_expectation(ch.expectation)
        batch = (
            source.add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe(name)
            .get_batch(batch_parameters={"dataframe": frame})
        )
        suite_result = batch.validate(suite, result_format=result_format)
        by_index = {r.expectation_config.meta["check"]: r for r in suite_result.results}
        for i, ch in enumerate(checks):
            r = by_index[i]
            info = r.exception_info or {}
            # Errors come either flat or keyed by metric id.
            errors = [info] if "raised_exception" in info else list(info.values())
            messages = [e.get("exception_message") for e in errors if e.get("raised_exception")]
            description = ch.description
            if messages:
                description += f" (error: {messages[0]})"
            res = r.result or {}
            outcomes.append(
                ExpectationOutcome(
                    table=name,
                    expectation=r.expectation_config.type,
                    column=ch.column,
                    success=bool(r.success) and not messages,
                    unexpected_count=int(res.get("unexpected_count") or 0),
                    unexpected_examples=_examples(ch, res, frame),
                    description=description,
                )
            )
    return ValidationReport(outcomes=outcomes, seconds=time.perf_counter() - start)


def tables_version(table_bytes: Mapping[str, bytes]) -> str:
    """What a validation's result depends on: the suite and each table's stored bytes (by
    name), so a result can be reused while neither changed."""
    h = hashlib.sha256(f"{SUITE_VERSION}\n".encode())
    for name in sorted(table_bytes):
        h.update(f"{name}:{hashlib.sha256(table_bytes[name]).hexdigest()}\n".encode())
    return h.hexdigest()[:16]
