"""Tests of the cohort generator (`acs_pipeline.synth.cohort`): layout, joins, labels, bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import find_peaks
from sklearn.metrics import roc_auc_score

from acs_pipeline.synth import SynthError, cohort
from acs_pipeline.synth.cohort import generate
from acs_pipeline.synth.dipole import TERRITORY_LEADS
from acs_pipeline_tests.synth.cohort_files import LEAD_INDEX, joined, load, npz_path

PATIENT_COLUMNS = [
    "patient_ngsci_id", "sex", "race_black", "race_hispanic", "race_white", "race_other",
    "agi_under_25k", "agi_25k_to_50k", "agi_50k_to_75k", "agi_75k_to_100k", "agi_100k_to_200k",
    "agi_above_200k",
]  # fmt: skip
FLAG_COLUMNS = [
    "has_bbb", "has_afib", "has_st", "has_pacemaker", "has_lvh", "has_normal", "has_normal_ecg",
    "has_normal_sinus", "has_depress", "has_st_eleva", "has_twave", "has_aberran_bbb",
    "has_jpoint_repol", "has_jpoint_eleva", "has_twave_inver", "has_twave_abnormal",
    "has_nonspecific", "has_rhythm_disturbance", "has_prolonged_qt", "has_lead_reversal",
    "has_poor_or_quality",
]  # fmt: skip
METADATA_COLUMNS = [
    "patient_ngsci_id", "ecg_id", "date", "p-r-t_axes", "p_axes", "r_axes", "t_axes",
    "pr_interval", "pr_interval_units", "qrs_duration", "qrs_duration_units", "qtqtc",
    "qtqtc_units", "qt_interval", "qt_interval_units", "qtc_interval", "qtc_interval_units",
    "vent_rate", "vent_rate_units", *FLAG_COLUMNS,
]  # fmt: skip
ENCOUNTER_COLUMNS = [
    "patient_ngsci_id", "ed_enc_id", "start_datetime", "end_datetime", "age_at_admit",
    "macetrop_030_pos", "death_030_day", "macetrop_pos_or_death_030", "stent_010_day",
    "cabg_010_day", "stent_or_cabg_010_day", "ami_day_of", "days_to_ami", "maxtrop_sameday",
    "tn_group_sameday", "disch_disp", "disch_obs", "test_010_day", "stress_010_day",
    "cath_010_day", "days_to_stress", "days_to_cath", "first_test", "excl_flag_c_int",
    "excl_flag_chronic", "excl_flag_death", "exclude_modeling", "exclude",
]  # fmt: skip
TRUTH_COLUMNS = [
    "ecg_id", "dataset", "oracle_risk", "acs", "mace", "territory", "subtle", "duplicate_of",
]  # fmt: skip


# ----------------------------------------------------------------------------- layout


def test_layout_and_column_names_exact(tiny):
    v1, ho = tiny.dataset_dir, tiny.holdout_dir
    assert v1 == tiny.root / "ed-bwh-ecg" / "v1" and ho == tiny.root / "ed-bwh-ecg" / "holdout"
    assert sorted(p.name for p in v1.iterdir()) == sorted(
        [
            "patient.csv", "ecg-metadata.csv", "ecg-ed-enc.csv", "ed-encounter.csv",
            "ecg-npy-index.csv", "ecg-waveform.npy", "ecg-waveforms-npz",
        ]
    )  # fmt: skip
    assert [p.name for p in ho.iterdir()] == ["ecg-waveforms-npz"]
    assert sorted(p.name for p in tiny.root.iterdir()) == ["ed-bwh-ecg", "synthetic-truth.csv"]

    def cols(name: str) -> list[str]:
        return list(pd.read_csv(v1 / name, nrows=0).columns)

    assert cols("patient.csv") == PATIENT_COLUMNS
    assert cols("ecg-metadata.csv") == METADATA_COLUMNS
    assert cols("ecg-ed-enc.csv") == ["ecg_id", "ed_enc_id"]
    assert cols("ed-encounter.csv") == ENCOUNTER_COLUMNS and len(ENCOUNTER_COLUMNS) == 28
    assert cols("ecg-npy-index.csv") == ["ecg_id", "npy_index"]
    assert list(pd.read_csv(tiny.truth_path, nrows=0).columns) == TRUTH_COLUMNS

    meta = pd.read_csv(v1 / "ecg-metadata.csv")
    assert len(meta) == tiny.n_ecgs
    assert set(meta["vent_rate_units"]) == {"BPM"} and set(meta["qt_interval_units"]) == {"ms"}
    for flag in FLAG_COLUMNS:
        assert set(meta[flag].unique()) <= {0, 1}, flag
    qt, qtc = meta["qtqtc"].str.split("/", expand=True).astype(int).T.values
    assert (qt == meta["qt_interval"]).all() and (qtc == meta["qtc_interval"]).all()
    pats = pd.read_csv(v1 / "patient.csv")
    assert set(pats["sex"]) <= {"Female", "Male"}
    race = pats[["race_black", "race_hispanic", "race_white", "race_other"]].to_numpy()
    assert (race.sum(axis=1) == 1).all()
    assert np.allclose(pats[PATIENT_COLUMNS[6:]].sum(axis=1), 1.0, atol=0.01)


def test_ids_dates_and_joins(tiny):
    v1 = tiny.dataset_dir
    meta = pd.read_csv(v1 / "ecg-metadata.csv")
    enc = pd.read_csv(v1 / "ed-encounter.csv")
    link = pd.read_csv(v1 / "ecg-ed-enc.csv")
    pats = pd.read_csv(v1 / "patient.csv")
    truth = pd.read_csv(tiny.truth_path)
    assert meta["ecg_id"].str.fullmatch(r"ecg[0-9a-f]{10}").all()
    assert truth["ecg_id"].str.fullmatch(r"ecg[0-9a-f]{10}").all()
    assert pats["patient_ngsci_id"].str.fullmatch(r"pat[0-9a-f]{8}").all()
    assert enc["ed_enc_id"].str.fullmatch(r"enc[0-9a-f]{10}").all()
    assert truth["ecg_id"].is_unique and pats["patient_ngsci_id"].is_unique
    assert enc["ed_enc_id"].is_unique
    for col in (meta["date"], enc["start_datetime"], enc["end_datetime"]):
        years = pd.to_datetime(col).dt.year
        assert years.between(2110, 2119).all()
    # every ECG joins to exactly one visit of its own patient, every visit has an ECG
    j = meta.merge(link, on="ecg_id").merge(enc, on="ed_enc_id", suffixes=("", "_enc"))
    assert len(j) == len(meta)
    assert (j["patient_ngsci_id"] == j["patient_ngsci_id_enc"]).all()
    assert set(enc["ed_enc_id"]) == set(link["ed_enc_id"])
    assert set(enc["patient_ngsci_id"]) == set(pats["patient_ngsci_id"])
    # ECGs are recorded during their visit; a patient's visits do not overlap
    date = pd.to_datetime(j["date"])
    assert (date > pd.to_datetime(j["start_datetime"])).all()
    assert (date < pd.to_datetime(j["end_datetime"])).all()
    enc = enc.sort_values(["patient_ngsci_id", "start_datetime"])
    nxt = enc.groupby("patient_ngsci_id")["start_datetime"].shift(-1).dropna()
    assert (pd.to_datetime(nxt) > pd.to_datetime(enc.loc[nxt.index, "end_datetime"])).all()
    assert len(pats) == tiny.n_patients == 40
    assert 1.3 <= tiny.n_ecgs / tiny.n_patients <= 4.0


# ----------------------------------------------------------------------------- determinism


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_same_bytes(tiny, tmp_path):
    again = generate(tmp_path / "a", n_patients=40, seed=11, workers=2)
    assert _tree_digest(again.root) == _tree_digest(tiny.root)
    other = generate(tmp_path / "b", n_patients=40, seed=12)
    assert _tree_digest(other.root) != _tree_digest(tiny.root)


def test_existing_output_needs_overwrite(tmp_path):
    first = generate(tmp_path, n_patients=3, seed=1, n_holdout=2)
    with pytest.raises(SynthError, match="overwrite"):
        generate(tmp_path, n_patients=3, seed=1)
    again = generate(tmp_path, n_patients=3, seed=2, n_holdout=1, overwrite=True)
    assert again.n_holdout == 1
    truth = pd.read_csv(again.truth_path)
    assert (truth["dataset"] == "holdout").sum() == 1
    assert len(list(again.holdout_dir.rglob("*.npz"))) == 1
    assert first.truth_path == again.truth_path
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_arguments_raise():
    with pytest.raises(SynthError, match="n_patients"):
        generate(Path("/nonexistent/never"), n_patients=0)
    with pytest.raises(SynthError, match="tested_fraction"):
        generate(Path("/nonexistent/never"), n_patients=5, tested_fraction=1.5)


# ----------------------------------------------------------------------------- cohort


def test_truth_rows_match_npz_files(medium):
    truth = pd.read_csv(medium.truth_path, keep_default_na=False)
    v1_files = {p.stem for p in medium.dataset_dir.rglob("*.npz")}
    ho_files = {p.stem for p in medium.holdout_dir.rglob("*.npz")}
    assert {e[3:] for e in truth.loc[truth["dataset"] == "v1", "ecg_id"]} == v1_files
    assert {e[3:] for e in truth.loc[truth["dataset"] == "holdout", "ecg_id"]} == ho_files
    assert len(truth) == len(v1_files) + len(ho_files) == medium.n_ecgs + medium.n_holdout
    assert medium.n_holdout == round(0.1 * medium.n_ecgs)
    meta = pd.read_csv(medium.dataset_dir / "ecg-metadata.csv")
    assert set(meta["ecg_id"]) == set(truth.loc[truth["dataset"] == "v1", "ecg_id"])
    assert truth["oracle_risk"].between(0, 1).all()
    assert set(truth["territory"]) <= {"none", "LAD", "RCA", "LCx"}
    assert set(truth["subtle"].astype(str)) <= {"True", "False"}
    assert not (truth["subtle"].astype(str).eq("True") & truth["territory"].eq("none")).any()


def test_duplicates_are_byte_identical_same_visit(medium):
    df = joined(medium)
    dups = df[df["duplicate_of"] != ""]
    assert len(dups) == medium.n_duplicates >= 1
    assert medium.n_duplicates <= 0.03 * medium.n_ecgs
    by_id = df.set_index("ecg_id")
    for ecg_id, src in zip(dups["ecg_id"], dups["duplicate_of"], strict=True):
        a = npz_path(medium.dataset_dir, ecg_id).read_bytes()
        b = npz_path(medium.dataset_dir, src).read_bytes()
        assert a == b
        assert by_id.loc[ecg_id, "ed_enc_id"] == by_id.loc[src, "ed_enc_id"]
        assert by_id.loc[ecg_id, "patient_ngsci_id"] == by_id.loc[src, "patient_ngsci_id"]
        assert by_id.loc[src, "duplicate_of"] == ""
    # originals are all distinct
    originals = df[df["duplicate_of"] == ""]["ecg_id"].head(60)
    digests = {hashlib.sha256(npz_path(medium.dataset_dir, e).read_bytes()).digest()
               for e in originals}  # fmt: skip
    assert len(digests) == len(originals)


def test_cohort_rates_roughly_right(medium):
    df = joined(medium)
    enc = pd.read_csv(medium.dataset_dir / "ed-encounter.csv")
    assert 1.4 <= len(enc) / medium.n_patients <= 1.9
    assert 2.0 <= medium.n_ecgs / medium.n_patients <= 3.4
    assert df["exclude_modeling"].dtype == bool
    assert 0.25 <= df["exclude_modeling"].mean() <= 0.45
    inc = df[~df["exclude_modeling"]]
    tested = inc[inc["cath_010_day"] == 1]
    untested = inc[inc["cath_010_day"] == 0]
    assert 0.2 <= len(tested) / len(inc) <= 0.4  # tested_fraction 0.3
    assert 0.25 <= tested["stent_or_cabg_010_day"].mean() <= 0.55
    assert untested["stent_or_cabg_010_day"].sum() == 0
    assert 0.03 <= untested["macetrop_pos_or_death_030"].mean() <= 0.16
    acs = df[df["stent_or_cabg_010_day"] == 1]
    assert acs["macetrop_pos_or_death_030"].mean() >= 0.75
    assert (acs["cath_010_day"] == 1).all()
    assert (df["stent_or_cabg_010_day"] == df["acs"]).all()
    assert (df["macetrop_pos_or_death_030"] == df["mace"]).all()
    assert (df["macetrop_pos_or_death_030"] == (df["macetrop_030_pos"] | df["death_030_day"])).all()
    # the oracle ranks ACS in the tested cohort well; MACE follows the same latent
    assert roc_auc_score(tested["acs"], tested["oracle_risk"]) > 0.6  # ~90 visits: noisy
    assert roc_auc_score(untested["mace"], untested["oracle_risk"]) > 0.6


def _st_j60(x: np.ndarray) -> np.ndarray:
    """ST deviation (mV) of each short lead: median beat at R + 100 ms minus R - 60 ms.

    R-peaks: maxima of the summed slope of the three long strips."""
    energy = np.abs(np.diff(x[12:15], axis=1)).sum(axis=0)
    peaks, _ = find_peaks(energy, distance=150, height=0.4 * energy.max())
    out = np.full(12, np.nan)
    for j in range(12):
        valid = np.flatnonzero(np.isfinite(x[j]))
        if valid.size == 0:
            continue
        r = peaks[(peaks - 40 >= valid[0]) & (peaks + 60 <= valid[-1])]
        if r.size:
            out[j] = np.median(x[j, r + 50]) - np.median(x[j, r - 30])
    return out


def test_planted_signal_in_territory_leads(medium):
    truth = pd.read_csv(medium.truth_path, keep_default_na=False)
    truth = truth[truth["duplicate_of"] == ""]
    rows = []
    for ecg_id, ds, territory in zip(truth["ecg_id"], truth["dataset"], truth["territory"],
                                     strict=True):  # fmt: skip
        root = medium.dataset_dir if ds == "v1" else medium.holdout_dir
        rows.append((territory, _st_j60(load(root, ecg_id))))
    # per territory: ST in its facing leads, ischaemic ECGs vs ECGs without ischaemia
    diffs, variances = [], []
    for territory, leads in TERRITORY_LEADS.items():
        idx = [LEAD_INDEX[n] for n in leads]
        isch = np.array([np.nanmean(st[idx]) for t, st in rows if t == territory])
        none = np.array([np.nanmean(st[idx]) for t, st in rows if t == "none"])
        isch, none = isch[np.isfinite(isch)], none[np.isfinite(none)]
        assert len(isch) >= 10, territory
        diffs.append(isch.mean() - none.mean())
        variances.append(isch.var() / len(isch) + none.var() / len(none))
    # mostly subtle (below the 0.1-mV flag threshold), but clearly there on average
    assert sum(d > 0.01 for d in diffs) >= 2 and max(diffs) < 0.1, diffs
    pooled_z = np.sum(diffs) / np.sqrt(np.sum(variances))
    assert pooled_z > 3.5, (diffs, variances)


def test_failure_leaves_no_partial_cohort(tmp_path, monkeypatch):
    def boom(specs, workers):
        raise RuntimeError("disk full")

    monkeypatch.setattr(cohort, "_run", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path, n_patients=3, seed=1)
    assert list(tmp_path.iterdir()) == []
