"""Tests of the synthetic cohort generator (`acs_pipeline.synth.cohort`)."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.signal import find_peaks
from sklearn.metrics import roc_auc_score

from acs_pipeline.synth import cohort as synth

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
LEAD_INDEX = {name: i for i, name in enumerate(synth.LEADS)}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> synth.SynthSummary:
    return synth.generate(tmp_path_factory.mktemp("tiny"), n_patients=40, seed=11)


@pytest.fixture(scope="module")
def medium(tmp_path_factory) -> synth.SynthSummary:
    """A few hundred patients with a 30 % tested share, for rates and the planted signal."""
    return synth.generate(
        tmp_path_factory.mktemp("medium"), n_patients=300, seed=5, tested_fraction=0.3
    )


def _npz_path(root: Path, ecg_id: str) -> Path:
    hexid = ecg_id[3:]
    return root / "ecg-waveforms-npz" / hexid[:2] / f"{hexid}.npz"


def _load(root: Path, ecg_id: str) -> np.ndarray:
    with np.load(_npz_path(root, ecg_id)) as z:
        return z[z.files[0]]


def _joined(s: synth.SynthSummary) -> pd.DataFrame:
    d = s.dataset_dir
    meta = pd.read_csv(d / "ecg-metadata.csv")
    link = pd.read_csv(d / "ecg-ed-enc.csv")
    enc = pd.read_csv(d / "ed-encounter.csv").drop(columns="patient_ngsci_id")
    truth = pd.read_csv(s.truth_path, keep_default_na=False)
    return meta.merge(link, on="ecg_id").merge(enc, on="ed_enc_id").merge(truth, on="ecg_id")


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


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


# ----------------------------------------------------------------------------- waveforms


def test_npz_files_shape_dtype_nan_pattern(tiny):
    truth = pd.read_csv(tiny.truth_path)
    assert (truth["dataset"] == "v1").sum() == tiny.n_ecgs
    assert (truth["dataset"] == "holdout").sum() == tiny.n_holdout > 0
    windows = np.zeros((12, synth.N_SAMPLES), dtype=bool)
    for j in range(12):
        windows[j, (j // 3) * 1250 : (j // 3 + 1) * 1250] = True
    exact = 0
    for ecg_id, ds in zip(truth["ecg_id"], truth["dataset"], strict=True):
        root = tiny.dataset_dir if ds == "v1" else tiny.holdout_dir
        with np.load(_npz_path(root, ecg_id)) as z:
            assert z.files == ["ecg"]
            x = z["ecg"]
        assert x.shape == (15, 5000) and x.dtype == np.float32
        finite = np.isfinite(x)
        assert finite[12:].all(), "long strips are complete"
        # all short leads valid exactly in their 2.5-s window, except rarely one lead that is
        # shifted, shorter (still >= 1080 contiguous samples) or missing
        odd = np.flatnonzero((finite[:12] != windows).any(axis=1))
        exact += odd.size == 0
        assert odd.size <= 1
        for j in odd:
            valid = np.flatnonzero(finite[j])
            assert valid.size == 0 or (
                1080 <= valid.size <= 1250 and valid[-1] - valid[0] + 1 == valid.size
            )
        # the short leads agree with the long strips where both are valid
        for lead, row in (("V1", 12), ("II", 13), ("V5", 14)):
            j = LEAD_INDEX[lead]
            both = finite[j]
            assert np.array_equal(x[j, both], x[row, both])
        # digitised: multiples of 0.005 mV
        q = x[finite] / 0.005
        assert np.allclose(q, np.round(q), atol=1e-3)
        assert 0.2 < np.nanmax(np.abs(x)) < 10.0
    assert exact >= 0.85 * len(truth)


def test_synth_ecg_einthoven_goldberger_exact():
    rng = np.random.default_rng(3)
    for isch in (None, synth.Ischemia("RCA", 0.1, hyperacute_mv=0.2)):
        x = synth.synth_ecg(rng, heart_rate=72.0, ischemia=isch, noise=2.0)
        assert x.shape == (12, 5000) and x.dtype == np.float32
        lead = {name: x[i] for i, name in enumerate(synth.LEADS)}
        assert np.array_equal(lead["III"], lead["II"] - lead["I"])
        assert np.array_equal(lead["aVR"], -(lead["I"] + lead["II"]) / np.float32(2))
        assert np.array_equal(lead["aVL"], lead["I"] - lead["II"] / np.float32(2))
        assert np.array_equal(lead["aVF"], lead["II"] - lead["I"] / np.float32(2))
        assert np.isfinite(x).all() and 0.3 < np.abs(x).max() < 8.0


def test_synth_ecg_heart_rate_and_noise():
    rng = np.random.default_rng(8)
    morph = synth.random_morphology(rng)
    for hr in (55.0, 120.0):
        x = synth.synth_ecg(np.random.default_rng(1), heart_rate=hr, morphology=morph, noise=0.0)
        energy = np.abs(np.diff(x[6:12], axis=1)).sum(axis=0)
        peaks, _ = find_peaks(energy, distance=int(0.25 * 500), height=0.5 * energy.max())
        assert abs(len(peaks) - hr / 6.0) <= 2.5, (hr, len(peaks))
    clean = synth.synth_ecg(np.random.default_rng(2), heart_rate=70.0, morphology=morph, noise=0)
    noisy = synth.synth_ecg(np.random.default_rng(2), heart_rate=70.0, morphology=morph, noise=3)
    assert 0.01 < np.std(noisy - clean) < 0.5


def test_injury_current_raises_st_in_facing_leads():
    """A strong anterior injury current lifts ST in V2-V4 (J + 60 ms) and trips the ST rule."""
    rng = np.random.default_rng(4)
    morph = synth.random_morphology(rng)
    ecgs = {}
    for name, isch in (("none", None), ("lad", synth.Ischemia("LAD", 0.3))):
        twelve, fid = synth._render(
            np.random.default_rng(9), heart_rate=75.0, morphology=morph, ischemia=isch,
            rhythm="sinus", noise=1.0, lead_reversal=False,
        )  # fmt: skip
        ecgs[name] = synth.measure(twelve, fid)
    v = [LEAD_INDEX[n] for n in ("V2", "V3", "V4")]
    assert (ecgs["lad"].st_j60[v] - ecgs["none"].st_j60[v] > 0.2).all()
    assert synth.stemi_rule(ecgs["lad"])["has_st_eleva"]
    assert not synth.stemi_rule(ecgs["none"])["has_st_eleva"]


def test_to_nightingale_layout():
    x = np.arange(12 * 5000, dtype=np.float32).reshape(12, 5000)
    page = synth.to_nightingale(x)
    assert page.shape == (15, 5000) and page.dtype == np.float32
    for j in range(12):
        w = slice((j // 3) * 1250, (j // 3 + 1) * 1250)
        assert np.array_equal(page[j, w], x[j, w])
        assert np.isnan(page[j]).sum() == 3750
    assert np.array_equal(page[12:], x[[6, 1, 10]])
    with pytest.raises(synth.SynthError, match=r"\(12, 5000\)"):
        synth.to_nightingale(np.zeros((15, 5000)))


def test_legacy_npy_matches_index_and_long_strips(tiny):
    v1 = tiny.dataset_dir
    legacy = np.load(v1 / "ecg-waveform.npy")
    index = pd.read_csv(v1 / "ecg-npy-index.csv")
    assert legacy.shape == (tiny.n_ecgs, 3, 1000) and legacy.dtype == np.float32
    assert sorted(index["npy_index"]) == list(range(tiny.n_ecgs))
    for ecg_id, row in zip(index["ecg_id"][:10], index["npy_index"][:10], strict=True):
        long = _load(v1, ecg_id)[12:, ::5]
        for k in range(3):
            assert np.corrcoef(long[k], legacy[row, k])[0, 1] > 0.9


# ----------------------------------------------------------------------------- determinism


def test_same_arguments_same_bytes(tiny, tmp_path):
    again = synth.generate(tmp_path / "a", n_patients=40, seed=11, workers=2)
    assert _tree_digest(again.root) == _tree_digest(tiny.root)
    other = synth.generate(tmp_path / "b", n_patients=40, seed=12)
    assert _tree_digest(other.root) != _tree_digest(tiny.root)


def test_existing_output_needs_overwrite(tmp_path):
    first = synth.generate(tmp_path, n_patients=3, seed=1, n_holdout=2)
    with pytest.raises(synth.SynthError, match="overwrite"):
        synth.generate(tmp_path, n_patients=3, seed=1)
    again = synth.generate(tmp_path, n_patients=3, seed=2, n_holdout=1, overwrite=True)
    assert again.n_holdout == 1
    truth = pd.read_csv(again.truth_path)
    assert (truth["dataset"] == "holdout").sum() == 1
    assert len(list(again.holdout_dir.rglob("*.npz"))) == 1
    assert first.truth_path == again.truth_path
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_arguments_raise():
    with pytest.raises(synth.SynthError, match="n_patients"):
        synth.generate(Path("/nonexistent/never"), n_patients=0)
    with pytest.raises(synth.SynthError, match="tested_fraction"):
        synth.generate(Path("/nonexistent/never"), n_patients=5, tested_fraction=1.5)
    with pytest.raises(synth.SynthError, match="territory"):
        synth.Ischemia("LM", 0.1)
    with pytest.raises(synth.SynthError, match="rhythm"):
        synth.synth_ecg(np.random.default_rng(0), heart_rate=70, rhythm="vf")


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    synth.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["synth", "--out", str(tmp_path), "--patients", "4", "--seed", "2"])
    assert synth.run_cli(args) == 0
    assert "4 patients" in capsys.readouterr().out
    assert (tmp_path / "ed-bwh-ecg" / "v1" / "ecg-metadata.csv").exists()
    assert synth.run_cli(args) == 2  # exists, no --overwrite
    assert "overwrite" in capsys.readouterr().err


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
    df = _joined(medium)
    dups = df[df["duplicate_of"] != ""]
    assert len(dups) == medium.n_duplicates >= 1
    assert medium.n_duplicates <= 0.03 * medium.n_ecgs
    by_id = df.set_index("ecg_id")
    for ecg_id, src in zip(dups["ecg_id"], dups["duplicate_of"], strict=True):
        a = _npz_path(medium.dataset_dir, ecg_id).read_bytes()
        b = _npz_path(medium.dataset_dir, src).read_bytes()
        assert a == b
        assert by_id.loc[ecg_id, "ed_enc_id"] == by_id.loc[src, "ed_enc_id"]
        assert by_id.loc[ecg_id, "patient_ngsci_id"] == by_id.loc[src, "patient_ngsci_id"]
        assert by_id.loc[src, "duplicate_of"] == ""
    # originals are all distinct
    originals = df[df["duplicate_of"] == ""]["ecg_id"].head(60)
    digests = {hashlib.sha256(_npz_path(medium.dataset_dir, e).read_bytes()).digest()
               for e in originals}  # fmt: skip
    assert len(digests) == len(originals)


def test_cohort_rates_roughly_right(medium):
    df = _joined(medium)
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


def test_visit_level_rates_match_contract():
    """Without rendering waveforms: the latent model's rates on a large cohort."""
    rng = np.random.default_rng([1, 0])
    cal = synth._calibrate()
    taken: set[str] = set()
    patients = [synth._draw_patient(rng, f"pat{i:08x}") for i in range(3000)]
    visits = synth._draw_visits(rng, patients, cal, 0.05, taken)
    n = np.array([v.n_ecgs for v in visits])
    excluded = np.array([v.group == "excluded" for v in visits])
    tested = np.array([v.tested for v in visits])
    acs = np.array([v.acs for v in visits])
    mace = np.array([v.mace for v in visits])
    assert n.sum() / len(patients) == pytest.approx(2.5, abs=0.25)
    assert n[excluded].sum() / n.sum() == pytest.approx(0.35, abs=0.03)
    inc_t, inc_u = ~excluded & tested, ~excluded & ~tested
    assert n[inc_t].sum() / n[~excluded].sum() == pytest.approx(0.05, abs=0.015)
    assert np.average(acs[inc_t], weights=n[inc_t]) == pytest.approx(0.39, abs=0.1)
    assert np.average(mace[inc_u], weights=n[inc_u]) == pytest.approx(0.084, abs=0.02)
    assert not acs[~tested].any()
    # with half the included ECGs tested: the oracle's AUROC for ACS among tested visits
    visits = synth._draw_visits(rng, patients[:2000], cal, 0.5, taken)
    tv = [v for v in visits if v.group == "tested"]
    auc = roc_auc_score([v.acs for v in tv], [v.risk for v in tv])
    assert len(tv) > 500 and 0.78 <= auc <= 0.92


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
        rows.append((territory, _st_j60(_load(root, ecg_id))))
    # per territory: ST in its facing leads, ischaemic ECGs vs ECGs without ischaemia
    diffs, variances = [], []
    for territory, leads in synth.TERRITORY_LEADS.items():
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

    monkeypatch.setattr(synth, "_run", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        synth.generate(tmp_path, n_patients=3, seed=1)
    assert list(tmp_path.iterdir()) == []
