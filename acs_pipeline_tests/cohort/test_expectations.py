import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

from acs_pipeline.cohort import expectations as ex
from acs_pipeline.cohort.tables import CLASSICAL_FLAGS, RACE_COLUMNS, parse_table

PATIENT = """patient_ngsci_id,sex,race_black,race_hispanic,race_white,race_other
pat0000000a,Female,0,0,1,0
pat0000000b,Male,1,0,0,0
pat0000000c,Female,0,0,0,1
"""
META = """patient_ngsci_id,ecg_id,date,has_depress,has_st_eleva,has_twave_inver,has_twave_abnormal
pat0000000a,ecg000000000a,2113-01-02 10:00:00,0,0,0,1
pat0000000a,ecg000000000b,2113-01-02 11:00:00,1,0,0,0
pat0000000b,ecg000000000c,2114-05-06 08:30:00,0,1,0,0
pat0000000c,ecg000000000d,2115-07-08 12:00:00,0,0,1,0
pat0000000c,ecg000000000e,2116-01-01 09:00:00,0,0,0,0
"""
LINK = """ecg_id,ed_enc_id
ecg000000000a,enc0000000001
ecg000000000b,enc0000000001
ecg000000000c,enc0000000002
ecg000000000d,enc0000000003
ecg000000000e,enc0000000004
"""
ENC = """patient_ngsci_id,ed_enc_id,start_datetime,age_at_admit,macetrop_pos_or_death_030,\
stent_or_cabg_010_day,cath_010_day,exclude_modeling
pat0000000a,enc0000000001,2113-01-02 09:00:00,61,1,1,1,False
pat0000000b,enc0000000002,2114-05-06 08:00:00,70.5,0,0,1,False
pat0000000c,enc0000000003,2115-07-08 11:00:00,45,0,0,0,False
pat0000000c,enc0000000004,2116-01-01 08:00:00,46,1,0,0,True
"""
CSV = {"patient": PATIENT, "ecg_metadata": META, "ecg_ed_enc": LINK, "ed_encounter": ENC}


def parsed(**changes: str) -> dict[str, pl.DataFrame]:
    """The four tables through ``parse_table``, with some tables' CSV text replaced."""
    csv = {**CSV, **changes}
    return {name: parse_table(name, text.encode()) for name, text in csv.items()}


@pytest.fixture(scope="module")
def clean_report() -> ex.ValidationReport:
    """One validation of the clean tables; it also pays the great_expectations import once."""
    return ex.validate_tables(parsed())


def failed(report: ex.ValidationReport) -> set[tuple[str, str, str | None]]:
    return {(o.table, o.expectation, o.column) for o in report.failures()}


def test_import_is_lazy():
    code = ("import sys, acs_pipeline.cohort.expectations; "
            "print('great_expectations' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_clean_tables_pass_every_expectation(clean_report):
    report = clean_report
    assert report.success, report.markdown()
    assert report.failures() == []
    n = len(report.outcomes)
    # 23 required columns exist; 7 id columns x (not null, regex); 4 keys unique;
    # 8 label/flag columns x (in set, not null); 4 race columns; sex; age; ACS; 3 joins.
    assert n == 23 + 14 + 4 + 16 + 4 + 1 + 1 + 1 + 3
    assert report.markdown() == f"all {n} expectations passed"
    kinds = {(o.table, o.expectation, o.column) for o in report.outcomes}
    assert ("ecg_metadata", "expect_column_values_to_be_unique", "ecg_id") in kinds
    assert ("ed_encounter", "expect_column_values_to_be_between", "age_at_admit") in kinds
    assert ("ecg_ed_enc", "expect_column_values_to_be_in_set", "ed_enc_id") in kinds
    assert ("ed_encounter", "expect_column_values_to_not_be_null", "cath_010_day") in kinds
    meta = report.as_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert (meta["success"], meta["expectations"], meta["passed"], meta["failed"]) == (
        True,
        n,
        n,
        0,
    )
    assert meta["per_table"]["ed_encounter"]["failed"] == 0
    assert sum(t["expectations"] for t in meta["per_table"].values()) == n
    assert report.seconds > 0


def _drop_line(text: str, needle: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if needle not in line)


BROKEN = {
    "bad id pattern": (
        {
            "ecg_metadata": META.replace("ecg000000000c", "ecg00000000zz"),
            "ecg_ed_enc": LINK.replace("ecg000000000c", "ecg00000000zz"),
        },
        {
            ("ecg_metadata", "expect_column_values_to_match_regex", "ecg_id"),
            ("ecg_ed_enc", "expect_column_values_to_match_regex", "ecg_id"),
        },
        ["ecg00000000zz"],
    ),
    "duplicate key": (
        {
            "ecg_metadata": META + "pat0000000b,ecg000000000c,2114-05-06 08:31:00,0,1,0,0\n",
            "ecg_ed_enc": LINK,
        },
        {("ecg_metadata", "expect_column_values_to_be_unique", "ecg_id")},
        ["ecg000000000c"],
        2,  # both copies are unexpected
    ),
    "null label": (
        {"ed_encounter": ENC.replace("46,1,0,0,True", "46,1,,0,True")},
        {("ed_encounter", "expect_column_values_to_not_be_null", "stent_or_cabg_010_day")},
        ["enc0000000004"],
    ),
    "ECG without encounter": (
        {"ecg_ed_enc": _drop_line(LINK, "ecg000000000d")},
        {("ecg_metadata", "expect_column_values_to_be_in_set", "ecg_id")},
        ["ecg000000000d"],
    ),
    "encounter without patient": (
        {"patient": _drop_line(PATIENT, "pat0000000b")},
        {("ed_encounter", "expect_column_values_to_be_in_set", "patient_ngsci_id")},
        ["pat0000000b"],
    ),
    "age 300": (
        {"ed_encounter": ENC.replace(",45,", ",300,")},
        {("ed_encounter", "expect_column_values_to_be_between", "age_at_admit")},
        [300.0],
    ),
    "ACS without cath": (
        {"ed_encounter": ENC.replace("46,1,0,0,True", "46,1,1,0,True")},
        {
            (
                "ed_encounter",
                "expect_column_values_to_be_in_set",
                "stent_or_cabg_010_day,cath_010_day",
            )
        },
        ["enc0000000004"],
    ),
    "unknown sex": (
        {"patient": PATIENT.replace("pat0000000c,Female", "pat0000000c,X")},
        {("patient", "expect_column_values_to_be_in_set", "sex")},
        ["X"],
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_table_fails_exactly_its_expectation(clean_report, case):
    changes, expected, examples, *count = BROKEN[case]
    report = ex.validate_tables(parsed(**changes))
    assert not report.success
    assert failed(report) == expected, report.markdown()
    for o in report.failures():
        assert o.unexpected_count == (count[0] if count else 1)
        assert o.unexpected_examples == examples
        assert o.description
    assert len(report.outcomes) == len(clean_report.outcomes)


def test_missing_column_fails_only_its_existence(clean_report):
    tables = parsed()
    tables["ed_encounter"] = tables["ed_encounter"].drop("age_at_admit")
    report = ex.validate_tables(tables)
    assert failed(report) == {("ed_encounter", "expect_column_to_exist", "age_at_admit")}


def test_markdown_and_metadata_name_the_failures(clean_report):
    report = ex.validate_tables(
        parsed(ed_encounter=ENC.replace(",45,", ",300,").replace("46,1,0,0,True", "46,1,1,0,True"))
    )
    md = report.markdown()
    n = len(report.outcomes)
    assert md.startswith(f"2 of {n} expectations failed\n")
    assert "| table | expectation | column | unexpected | examples | description |" in md
    assert "| ed_encounter | expect_column_values_to_be_between | age_at_admit | 1 | 300.0 |" in md
    assert "enc0000000004" in md and "ACS implies tested" in md
    meta = report.as_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert (meta["success"], meta["passed"], meta["failed"]) == (False, n - 2, 2)
    assert meta["per_table"]["ed_encounter"]["failed"] == 2
    assert meta["per_table"]["patient"]["failed"] == 0
    assert {f["column"] for f in meta["failures"]} == {
        "age_at_admit",
        "stent_or_cabg_010_day,cath_010_day",
    }


def test_examples_are_capped():
    extra = "".join(
        f"pat0000000a,ecg{i:010x},2113-01-02 10:00:00,0,0,0,0\n" for i in range(100, 120)
    )
    report = ex.validate_tables(parsed(ecg_metadata=META + extra))
    (fail,) = report.failures()
    assert (fail.table, fail.column, fail.unexpected_count) == ("ecg_metadata", "ecg_id", 20)
    assert fail.unexpected_examples == [f"ecg{i:010x}" for i in range(100, 105)]


def test_missing_table_is_named():
    tables = parsed()
    del tables["ecg_ed_enc"]
    with pytest.raises(ex.ExpectationsError, match="missing table.*ecg_ed_enc"):
        ex.validate_tables(tables)


def _real_sized(n_ecg=112_900, n_enc=71_460, n_pat=44_713) -> dict[str, pl.DataFrame]:
    """Typed tables the size of ed-bwh-ecg v1 (ids in the real formats)."""
    rng = np.random.default_rng(0)
    pat = pl.Series([f"pat{i:08x}" for i in range(n_pat)])
    enc = pl.Series([f"enc{i:010x}" for i in range(n_enc)])
    ecg = pl.Series([f"ecg{i:010x}" for i in range(n_ecg)])
    enc_pat = pat.gather(rng.integers(0, n_pat, n_enc))
    ecg_enc = enc.gather(np.concatenate([np.arange(n_enc), rng.integers(0, n_enc, n_ecg - n_enc)]))
    cath = rng.random(n_enc) < 0.05

    def flags(names, n, p=0.1):
        return {c: rng.random(n) < p for c in names}

    return {
        "patient": pl.DataFrame(
            {
                "patient_ngsci_id": pat,
                "sex": rng.choice(["Female", "Male"], n_pat),
                **flags(RACE_COLUMNS, n_pat, 0.25),
            }
        ),
        "ecg_metadata": pl.DataFrame(
            {
                "patient_ngsci_id": pl.Series(["pat00000000"] * n_ecg),
                "ecg_id": ecg,
                "date": pl.Series([None] * n_ecg, dtype=pl.Datetime),
                **flags(CLASSICAL_FLAGS, n_ecg),
            }
        ),
        "ecg_ed_enc": pl.DataFrame({"ecg_id": ecg.slice(1), "ed_enc_id": ecg_enc.slice(1)}),
        "ed_encounter": pl.DataFrame(
            {
                "patient_ngsci_id": enc_pat,
                "ed_enc_id": enc,
                "start_datetime": pl.Series([None] * n_enc, dtype=pl.Datetime),
                "age_at_admit": rng.uniform(18, 95, n_enc),
                "macetrop_pos_or_death_030": rng.random(n_enc) < 0.16,
                "stent_or_cabg_010_day": cath & (rng.random(n_enc) < 0.4),
                "cath_010_day": cath,
                "exclude_modeling": rng.random(n_enc) < 0.35,
            }
        ),
    }


def test_real_sized_tables_are_fast(clean_report):
    tables = _real_sized()
    report = ex.validate_tables(tables)
    # The first ECG has no encounter link: found among 112,900 ids.
    assert failed(report) == {("ecg_metadata", "expect_column_values_to_be_in_set", "ecg_id")}
    assert report.failures()[0].unexpected_examples == ["ecg0000000000"]
    assert report.seconds < 30, report.seconds


def test_tables_version_follows_content_and_names():
    from acs_pipeline.cohort.expectations import tables_version

    a = {"patient": b"1", "ecg_metadata": b"2"}
    assert tables_version(a) == tables_version(dict(reversed(a.items())))
    assert tables_version(a) != tables_version({**a, "patient": b"1 "})
    assert tables_version(a) != tables_version({"patient": b"2", "ecg_metadata": b"1"})
