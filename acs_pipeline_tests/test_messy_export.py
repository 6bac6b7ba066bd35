"""A hostile export ingests in ONE run of the `ingest` job, and every ECG is accounted for.

The export is the synthetic cohort damaged the ways real exports are: bad npz files of several
kinds, table rows that do not join, a patient mismatch, files missing or without metadata, a
waveform copied across cohorts, a file in microvolts, CR-only line endings, a repeated header,
a short row, trailing spaces on every id, and no holdout folder.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from acs_pipeline.cohort import build, tables
from acs_pipeline.defs.cohort.assets import QUARANTINE
from acs_pipeline.defs.common import COHORT
from acs_pipeline.ingest.manifest import ecg_id_for_key
from acs_pipeline.io import frames
from acs_pipeline.io.storage import Storage
from acs_pipeline_tests.conftest import env_for

NPZ = "ecg-waveforms-npz"


def npz_path(v1: Path, ecg_id: str) -> Path:
    name = ecg_id.removeprefix("ecg")
    return v1 / NPZ / name[:2] / f"{name}.npz"


def npz_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, x)
    return buf.getvalue()


def edit_lines(path: Path, fn) -> None:
    """Rewrite a CSV's lines (LF-separated, header first) through ``fn(lines) -> lines``."""
    lines = path.read_text().splitlines()
    path.write_text("\n".join(fn(lines)) + "\n")


@dataclass
class Hostile:
    """What was damaged, by ecg_id (the expectations of the test)."""

    v1: Path
    corrupt: dict[str, str] = field(default_factory=dict)  # ecg_id -> tensor-stage reason
    microvolts: str = ""
    no_encounter: str = ""
    duplicated: str = ""
    no_patient: list[str] = field(default_factory=list)
    mismatch: list[str] = field(default_factory=list)
    no_file: str = ""
    short_row: str = ""
    copies: tuple[str, str] = ("", "")  # (tested validation ECG, untested train ECG)


def make_hostile(root: Path) -> Hostile:
    """Damage the synthetic cohort under ``root`` (in place); returns what was done."""
    v1 = root / "ed-bwh-ecg" / "v1"
    shutil.rmtree(root / "ed-bwh-ecg" / "holdout")  # no holdout folder at all
    clean, rej = tables.read_tables(lambda f: (v1 / f).read_bytes())
    assert rej.is_empty()
    cohort, _ = build.build_cohort(clean, seed=0)
    h = Hostile(v1)
    # The ECGs to damage: one per case, no two from one patient, spread over shards.
    by_patient = cohort.group_by("patient_ngsci_id", maintain_order=True).agg(
        "ecg_id", "cohort", "split", "ed_enc_id")
    singles = iter(by_patient.iter_rows())
    used: set[str] = set()

    def take(want=lambda row: True) -> tuple:
        for row in singles:
            if row[0] not in used and want(row):
                used.add(row[0])
                return row
        raise AssertionError("the synthetic cohort is too small for the hostile cases")

    # Bad npz files of several kinds.
    bad = {"corrupt_npz": b"PK\x03\x04 this is not a zip archive",
           "wrong_shape": npz_bytes(np.zeros((12, 5000), np.float32)),
           "all_leads_missing": npz_bytes(np.full((15, 5000), np.nan, np.float32)),
           "empty_npz": _empty_npz()}
    for reason, data in bad.items():
        ecg = take()[1][0]
        npz_path(v1, ecg).write_bytes(data)
        h.corrupt[ecg] = reason
    truncated = take()[1][0]
    p = npz_path(v1, truncated)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    h.corrupt[truncated] = "corrupt_npz"
    # A file stored in microvolts.
    h.microvolts = take()[1][0]
    p = npz_path(v1, h.microvolts)
    with np.load(p) as z:
        x = z[z.files[0]]
    p.write_bytes(npz_bytes(x * 1000))
    # A byte-identical waveform under two ids in different cohorts and (drawn) splits.
    tested = take(lambda r: "tested" in r[2] and "validation" in r[3])
    untested = take(lambda r: set(r[2]) == {"untested"} and "train" in r[3])
    a = tested[1][tested[3].index("validation")]
    b = untested[1][0]
    shutil.copyfile(npz_path(v1, a), npz_path(v1, b))
    h.copies = (a, b)
    # An id listed without a waveform file.
    h.no_file = take()[1][0]
    npz_path(v1, h.no_file).unlink()
    # An ECG without an encounter; a duplicated ecg_id row; a short row.
    h.no_encounter = take()[1][0]
    h.duplicated = take()[1][0]
    h.short_row = take()[1][0]
    edit_lines(v1 / "ecg-ed-enc.csv", lambda ls: [ln for ln in ls if h.no_encounter not in ln])

    def meta(ls: list[str]) -> list[str]:
        out = []
        for ln in ls:
            if h.short_row in ln:
                ln = ",".join(ln.split(",")[:5])
            out.append(ln)
            if h.duplicated in ln:
                out.append(ln)
        return out

    edit_lines(v1 / "ecg-metadata.csv", meta)
    # An encounter whose patient is not in patient.csv (the patient row is gone).
    gone = take()
    h.no_patient = list(gone[1])
    edit_lines(v1 / "patient.csv", lambda ls: [ln for ln in ls if gone[0] not in ln])
    # An encounter whose patient differs from its ECGs' patient.
    moved, other = take(), take()
    h.mismatch = list(moved[1])
    encs = set(moved[4])
    edit_lines(v1 / "ed-encounter.csv", lambda ls: [
        ln.replace(moved[0], other[0]) if any(e in ln for e in encs) else ln for ln in ls])
    # A repeated header line inside ecg-ed-enc.csv, trailing spaces on every ed_enc_id.
    edit_lines(v1 / "ecg-ed-enc.csv", lambda ls: [ls[0]] + [ln + "  " for ln in ls[1:40]]
               + [ls[0]] + [ln + " " for ln in ls[40:]])
    # CR-only line endings in patient.csv, CRLF in ed-encounter.csv.
    for name, eol in (("patient.csv", b"\r"), ("ed-encounter.csv", b"\r\n")):
        f = v1 / name
        f.write_bytes(f.read_bytes().replace(b"\n", eol))
    # A file with an unexpected name.
    (v1 / NPZ / "zz").mkdir()
    (v1 / NPZ / "zz" / "not-an-ecg.npz").write_bytes(b"junk")
    return h


def _empty_npz() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w"):
        pass
    return buf.getvalue()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Hostile]:
    from acs_pipeline.synth import cohort as synth

    root = tmp_path_factory.mktemp("hostile")
    synth.generate(root, n_patients=90, seed=5, tested_fraction=0.4)
    return root, make_hostile(root)


def test_a_hostile_export_ingests_in_one_run(hostile, tmp_path, monkeypatch):
    root, h = hostile
    env = env_for(root, tmp_path / "storage", ACS_INGEST_WORKERS="1")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from acs_pipeline.definitions import defs

    job = defs().resolve_job_def("ingest")
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        events = result.all_events
        assert not [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"clinical_tables", "cohort", "quarantine", "ecg_3by4", "ecg_12lead"} <= done
        assert not done & {"holdout_manifest", "holdout_ecg_3by4", "holdout_ecg_12lead"}
        checks = {(c.asset_key.to_user_string(), c.check_name): c
                  for c in result.get_asset_check_evaluations()}
    # The row-level findings warn; the view and split checks pass.
    gx = checks[("clinical_tables", "clinical_tables_expectations")]
    assert not gx.passed and gx.severity == dg.AssetCheckSeverity.WARN
    q_check = checks[("quarantine", "quarantine_reasons")]
    assert not q_check.passed and q_check.severity == dg.AssetCheckSeverity.WARN
    for view in ("ecg_3by4", "ecg_12lead"):
        assert checks[(view, "tensor_values")].passed
        assert checks[(view, "every_file_accounted_for")].passed
    assert checks[("cohort", "cohort_split_leaks")].passed

    st = Storage(str(tmp_path / "storage"))
    cohort = frames.read_parquet(st, COHORT)
    q = frames.read_parquet(st, QUARANTINE)
    reasons = {(s, r) for s, r in q.select("stage", "reason").iter_rows()}
    why = {e: set(g) for e, g in q.group_by("ecg_id").agg("reason").iter_rows()}

    # Every id listed in ecg-metadata.csv or present on disk is accepted or quarantined.
    listed = {ln.split(",")[1].strip() for ln in
              (h.v1 / "ecg-metadata.csv").read_text().splitlines()[1:]}
    on_disk = {ecg_id_for_key(str(p.relative_to(h.v1))) for p in (h.v1 / NPZ).rglob("*.npz")}
    assert None in on_disk  # the oddly named file: quarantined by key
    assert q.filter(pl.col("reason") == "unexpected_file_name")["key"].to_list() == [
        f"{NPZ}/zz/not-an-ecg.npz"] * 2  # once per view
    accepted = set(cohort["ecg_id"])
    assert (listed | on_disk - {None}) <= accepted | set(why)
    # No id both in the cohort and quarantined for a missing waveform.
    assert not accepted & {e for e, r in why.items() if "no_waveform_file" in r}
    assert h.no_file in why and h.no_file not in accepted
    # The copies across cohorts share one split; no waveform copy is in two splits.
    pair = cohort.filter(pl.col("ecg_id").is_in(h.copies))
    assert set(pair["cohort"]) == {"tested", "untested"} and pair["split"].n_unique() == 1
    assert pair["waveform_sha256"].n_unique() == 1
    assert build.split_leaks(cohort) == {"patient_ngsci_id": 0, "waveform_sha256": 0}
    # Each damage has its reason.
    for ecg, reason in h.corrupt.items():
        assert why[ecg] == {reason}, (ecg, why[ecg])
    assert why[h.microvolts] == {"amplitude"}
    detail = q.filter(pl.col("ecg_id") == h.microvolts)["detail"][0]
    assert "mV" in detail and "span" in detail
    assert why[h.no_encounter] == {"no_encounter"}
    assert why[h.duplicated] == {"duplicate_ecg_id"} and h.duplicated not in accepted
    assert why[h.short_row] == {"short_row", "no_metadata"}
    assert q.filter((pl.col("ecg_id") == h.short_row) & (pl.col("stage") == "tables"))[
        "key"][0].startswith("ecg-metadata.csv:")
    assert all(why[e] == {"no_patient"} for e in h.no_patient)
    assert all(why[e] == {"patient_mismatch"} for e in h.mismatch)
    header = q.filter(pl.col("reason") == "repeated_header")
    assert header["key"].to_list() == ["ecg-ed-enc.csv:41"]
    assert {("tables", "short_row"), ("cohort", "patient_mismatch"),
            ("v1:ecg_3by4", "amplitude"), ("v1:ecg_12lead", "amplitude"),
            ("v1:manifest", "unexpected_file_name")} <= reasons
    # Trailing spaces and line endings did not cost a join: every other ECG is in the cohort.
    damaged = {*h.corrupt, h.microvolts, h.no_encounter, h.duplicated, h.no_file, h.short_row,
               *h.no_patient, *h.mismatch}
    assert listed - damaged == accepted - set(h.corrupt) - {h.microvolts}


def _materialize(env: dict[str, str], *keys: str,
                 instance: dg.DagsterInstance | None = None) -> dg.ExecuteInProcessResult:
    from acs_pipeline.definitions import defs
    from acs_pipeline.defs.resources import resources_from_env

    d = defs()
    return dg.materialize([*d.assets, *d.asset_checks], selection=list(keys),
                          resources=resources_from_env(env), raise_on_error=False,
                          instance=instance)


def test_a_missing_column_fails_at_once_naming_file_and_column(tmp_path):
    v1 = tmp_path / "ed-bwh-ecg" / "v1"
    v1.mkdir(parents=True)
    from acs_pipeline_tests.cohort.test_tables import FILES

    for name, data in FILES.items():
        (v1 / name).write_bytes(data.replace(b"cath_010_day", b"cath_day"))
    result = _materialize(env_for(tmp_path, tmp_path / "storage"), "clinical_tables")
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert len(failures) == 1  # RETRY_IO does not apply: no retry, one failure
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    message = failures[0].step_failure_data.error.message
    assert "ed-encounter.csv: missing required column" in message and "cath_010_day" in message


def test_without_a_holdout_root_the_holdout_says_so_and_yields_nothing(tmp_path):
    tree = tmp_path / "ed-bwh-ecg" / "v1"
    from acs_pipeline_tests.ingest.raw_tree import write_tree

    write_tree(tree)
    for holdout in ("", str(tmp_path / "no-such-folder")):
        env = env_for(tmp_path, tmp_path / "storage", ACS_HOLDOUT_URI=holdout)
        with dg.instance_for_test() as instance:
            result = _materialize(env, "holdout_manifest", "holdout_ecg_3by4",
                                  instance=instance)
            logs = [e.user_message for e in instance.all_logs(result.run_id)]
        assert result.success
        assert not result.get_asset_materialization_events()
        said = "no holdout root configured" if not holdout else "holds no ecg-waveforms-npz"
        assert any(said in m and "holdout skipped" in m for m in logs), holdout
        skipped = [e.step_key for e in result.all_events if e.event_type_value == "STEP_SKIPPED"]
        assert "holdout_ecg_3by4.holdout_ecg_3by4_plan" in skipped


def test_tensor_values_fails_for_a_systemic_fault_not_for_one_file(tmp_path):
    """One file in microvolts is quarantined and the view passes; when a shard's files are in
    microvolts by the handful the view's check fails, naming shard and reason."""
    from acs_pipeline.ingest.stats import SYSTEMIC_MIN
    from acs_pipeline_tests.ingest.raw_tree import write_tree

    v1 = tmp_path / "ed-bwh-ecg" / "v1"
    files = write_tree(v1, n=3 * SYSTEMIC_MIN + 3)
    good_aa = sorted(k for k in files if k.startswith(f"{NPZ}/aa/") and "ffff" not in k)

    def to_microvolts(keys: list[str]) -> None:
        for key in keys:
            with np.load(v1 / key) as z:
                (v1 / key).write_bytes(npz_bytes(z[z.files[0]] * 1000))

    env = env_for(tmp_path, tmp_path / "storage", ACS_HOLDOUT_URI="")
    to_microvolts(good_aa[:1])
    with dg.instance_for_test() as instance:
        one = _materialize(env, "ecg_manifest", "ecg_3by4", instance=instance)
        assert one.success
        checks = {c.check_name: c for c in one.get_asset_check_evaluations()}
        assert checks["tensor_values"].passed
        to_microvolts(good_aa[1:SYSTEMIC_MIN])
        many = _materialize(env, "ecg_manifest", "ecg_3by4", instance=instance)
    checks = {c.check_name: c for c in many.get_asset_check_evaluations()}
    # the check runs in the view's index step: the step fails naming it (what depends on the
    # view does not run), and the view's materialization stays recorded beside the result
    assert not many.success
    (failed,) = [e for e in many.all_events if e.is_step_failure]
    assert failed.step_key == "ecg_3by4.ecg_3by4_index"
    assert "ecg_3by4: tensor_values" in failed.step_failure_data.error.message
    assert [e.asset_key.to_user_string() for e in many.get_asset_materialization_events()] == [
        "ecg_manifest", "ecg_3by4"]
    assert not checks["tensor_values"].passed
    assert f"shard aa: {SYSTEMIC_MIN} of " in checks["tensor_values"].description
    assert "amplitude" in checks["tensor_values"].description
    assert checks["every_file_accounted_for"].passed
