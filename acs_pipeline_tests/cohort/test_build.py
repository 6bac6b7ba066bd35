import numpy as np
import polars as pl
import pytest

from acs_pipeline.cohort import build as cohort
from acs_pipeline.cohort.tables import CLASSICAL_FLAGS


def make_tables(n_pat=200, ecgs_per=3, seed=0):
    rng = np.random.default_rng(seed)
    pats, metas, links, encs = [], [], [], []
    k = 0
    for p in range(n_pat):
        pid = f"pat{p:08x}"
        pats.append({"patient_ngsci_id": pid, "sex": "F" if p % 2 else "M",
                     "race_black": p % 4 == 0, "race_hispanic": p % 4 == 1,
                     "race_white": p % 4 == 2, "race_other": p % 4 == 3})
        eid = f"enc{p:010x}"
        tested = rng.random() < 0.3
        encs.append({"patient_ngsci_id": pid, "ed_enc_id": eid, "age_at_admit": 50.0,
                     "macetrop_pos_or_death_030": bool(rng.random() < 0.2),
                     "stent_or_cabg_010_day": bool(tested and rng.random() < 0.4),
                     "cath_010_day": tested, "exclude_modeling": bool(rng.random() < 0.2)})
        for _ in range(ecgs_per):
            ecg = f"ecg{k:010x}"
            k += 1
            metas.append({"patient_ngsci_id": pid, "ecg_id": ecg, "date": None,
                          **{f: bool(rng.random() < 0.1) for f in CLASSICAL_FLAGS}})
            links.append({"ecg_id": ecg, "ed_enc_id": eid})
    return {"patient": pl.DataFrame(pats), "ecg_metadata": pl.DataFrame(metas),
            "ecg_ed_enc": pl.DataFrame(links), "ed_encounter": pl.DataFrame(encs)}


def test_labels_cohorts_and_split_fraction():
    t = make_tables()
    df, rej = cohort.build_cohort(t, seed=1)
    assert len(df) == len(t["ecg_metadata"]) and rej.is_empty()
    excluded = df.filter(pl.col("cohort") == "excluded")
    assert excluded["split"].is_null().all()
    assert set(df.filter(pl.col("cohort") != "excluded")["split"].unique()) == set(
        cohort.SPLITS) == {"train", "selection", "validation"}
    assert df.filter(pl.col("cohort") == "untested")["acs"].sum() == 0
    for name in ("tested", "untested"):
        sub = df.filter(pl.col("cohort") == name)
        pats = sub.group_by("patient_ngsci_id").agg(pl.col("split").first())
        assert abs((pats["split"] == "validation").mean() - 0.3) < 0.02
        training = pats.filter(pl.col("split") != "validation")
        assert abs((training["split"] == "selection").mean() - cohort.SELECTION_FRACTION) < 0.02
    assert cohort.split_leaks(df) == {"patient_ngsci_id": 0, "waveform_sha256": 0}


@pytest.mark.parametrize("seed", [0, 7])
def test_the_validation_split_is_todays_and_selection_comes_from_train_only(seed):
    """The validation patients are those of today's 70/30 draw (``split_groups`` per cohort),
    whatever the selection fraction; ``selection`` only takes training patients."""
    t = make_tables()
    df, _ = cohort.build_cohort(t, seed=seed)
    for name in cohort.SPLIT_COHORTS:
        sub = df.filter(pl.col("cohort") == name)
        drawn = cohort.split_groups(sub["patient_ngsci_id"].to_list(), seed=seed)
        want = {p for p, s in drawn.items() if s == "validation"}
        got = set(sub.filter(pl.col("split") == "validation")["patient_ngsci_id"])
        assert got == want
    none, _ = cohort.build_cohort(t, seed=seed, selection_fraction=0.0)
    assert set(none["split"].drop_nulls()) == {"train", "validation"}
    both = df.join(none.select("ecg_id", before="split"), on="ecg_id")
    assert both.filter(pl.col("split") == "selection")["before"].unique().to_list() == ["train"]
    assert both.filter(pl.col("before") == "validation")["split"].unique().to_list() == [
        "validation"]
    more, _ = cohort.build_cohort(t, seed=seed, selection_fraction=0.4)
    assert (more["split"] == "validation").equals(df["split"] == "validation")
    assert (more["split"] == "selection").sum() > (df["split"] == "selection").sum()


def test_waveform_copies_in_training_go_to_selection_together():
    """Two training patients linked by a byte-identical waveform, one drawn into selection and
    one into train on their own, end up in one split: no copy in train and selection."""
    t = make_tables(n_pat=120)
    hashes = {e: f"h{i}" for i, e in enumerate(t["ecg_metadata"]["ecg_id"])}
    df0, _ = cohort.build_cohort(t, hashes, seed=2)
    inc = df0.filter(pl.col("cohort") == "untested")
    tr = inc.filter(pl.col("split") == "train")["ecg_id"][0]
    se = inc.filter(pl.col("split") == "selection")["ecg_id"][0]
    hashes[se] = hashes[tr]
    leaky = df0.with_columns(waveform_sha256=pl.col("ecg_id").replace_strict(
        hashes, default=None))
    assert cohort.split_leaks(leaky)["waveform_sha256"] == 1
    df, _ = cohort.build_cohort(t, hashes, seed=2)
    assert df.filter(pl.col("ecg_id").is_in([tr, se]))["split"].n_unique() == 1
    assert cohort.split_leaks(df) == {"patient_ngsci_id": 0, "waveform_sha256": 0}


def test_split_is_seeded_and_order_independent():
    t = make_tables()
    a, _ = cohort.build_cohort(t, seed=5)
    shuffled = {k: v.sample(fraction=1.0, shuffle=True, seed=9) for k, v in t.items()}
    b, _ = cohort.build_cohort(shuffled, seed=5)
    assert a.select("ecg_id", "split").equals(b.select("ecg_id", "split"))
    assert (a["split"] == "selection").sum() > 0
    c, _ = cohort.build_cohort(t, seed=6)
    assert not a.select("split").equals(c.select("split"))
    # the cohort alone redraws its splits (how other split seeds are drawn)
    d = cohort.assign_splits(a, seed=5, selection_fraction=cohort.SELECTION_FRACTION)
    assert d.select("ecg_id", "split").equals(a.select("ecg_id", "split"))


def test_identical_waveforms_of_two_patients_stay_in_one_split():
    t = make_tables(n_pat=60)
    df0, _ = cohort.build_cohort(t, seed=2)
    inc = df0.filter(pl.col("cohort") == "untested")
    tr = inc.filter(pl.col("split") == "train")["ecg_id"][0]
    va = inc.filter(pl.col("split") == "validation")["ecg_id"][0]
    hashes = {e: f"h{i}" for i, e in enumerate(df0["ecg_id"])}
    hashes[va] = hashes[tr]  # byte-identical waveform across two patients
    df, _ = cohort.build_cohort(t, hashes, seed=2)
    rows = df.filter(pl.col("ecg_id").is_in([tr, va]))
    assert rows["split"].n_unique() == 1
    assert rows["duplicate_of"].drop_nulls().to_list() == [min(tr, va)]
    assert cohort.split_leaks(df)["waveform_sha256"] == 0


def test_rejections_have_reasons():
    t = make_tables(n_pat=10)
    t["ecg_ed_enc"] = t["ecg_ed_enc"].slice(1)  # first ECG loses its encounter
    t["ecg_metadata"] = pl.concat([t["ecg_metadata"], t["ecg_metadata"].slice(2, 1)])
    t["patient"] = t["patient"].filter(pl.col("patient_ngsci_id") != "pat00000009")
    df, rej = cohort.build_cohort(t)
    reasons = dict(rej.group_by("reason").len().iter_rows())
    assert reasons == {"no_encounter": 1, "duplicate_ecg_id": 1, "no_patient": 3}
    assert len(df) + len(rej) == t["ecg_metadata"]["ecg_id"].n_unique()


def test_an_encounter_of_another_patient_is_quarantined():
    t = make_tables(n_pat=10)
    first = t["ed_encounter"]["ed_enc_id"][0]
    t["ed_encounter"] = t["ed_encounter"].with_columns(
        patient_ngsci_id=pl.when(pl.col("ed_enc_id") == first).then(pl.lit("pat00000001"))
        .otherwise("patient_ngsci_id"))
    df, rej = cohort.build_cohort(t)
    mismatch = rej.filter(pl.col("reason") == "patient_mismatch")
    assert len(mismatch) == 3 and not set(mismatch["ecg_id"]) & set(df["ecg_id"])
    assert mismatch["detail"][0] == (
        f"ecg-metadata.csv gives patient pat00000000, its encounter {first} in "
        "ed-encounter.csv gives pat00000001")
    assert set(rej["reason"]) <= set(cohort.REASONS)


def test_waveform_files_decide_membership():
    """An id without a usable file is quarantined, not in the cohort; a file without metadata
    is quarantined too; the clean rows keep the split they had without the files' check."""
    t = make_tables(n_pat=40)
    ids = t["ecg_metadata"]["ecg_id"].to_list()
    hashes = {e: f"h{i}" for i, e in enumerate(ids)}
    with_all, _ = cohort.build_cohort(t, hashes, seed=3)
    missing = ids[5]
    del hashes[missing]
    hashes["ecg00000fffff"] = "orphan"
    df, rej = cohort.build_cohort(t, hashes, seed=3)
    assert missing not in set(df["ecg_id"])
    assert dict(rej.select("ecg_id", "reason").iter_rows()) == {
        missing: "no_waveform_file", "ecg00000fffff": "no_metadata"}
    assert len(df) + 1 == len(with_all)


def test_a_copy_across_cohorts_is_split_with_its_tested_original():
    t = make_tables(n_pat=80)
    hashes = {e: f"h{i}" for i, e in enumerate(t["ecg_metadata"]["ecg_id"])}
    df0, _ = cohort.build_cohort(t, hashes, seed=4)
    tested = df0.filter((pl.col("cohort") == "tested") & (pl.col("split") == "validation"))
    untested = df0.filter((pl.col("cohort") == "untested") & (pl.col("split") == "train"))
    a, b = tested["ecg_id"][0], untested["ecg_id"][0]
    hashes[b] = hashes[a]  # byte-identical waveforms in two cohorts, drawn into two splits
    leaky = df0.with_columns(waveform_sha256=pl.col("ecg_id").replace_strict(
        hashes, default=None))
    assert cohort.split_leaks(leaky)["waveform_sha256"] == 1  # the check sees across cohorts
    df, _ = cohort.build_cohort(t, hashes, seed=4)
    rows = df.filter(pl.col("ecg_id").is_in([a, b]))
    assert set(rows["split"]) == {"validation"}  # the tested cohort's draw decides
    assert cohort.split_leaks(df) == {"patient_ngsci_id": 0, "waveform_sha256": 0}
    # every other ECG keeps its split (the untested patient's other ECGs move with b)
    b_patient = df.filter(pl.col("ecg_id") == b)["patient_ngsci_id"][0]
    changed = df.join(df0.select("ecg_id", old="split"), on="ecg_id").filter(
        pl.col("split") != pl.col("old"))
    assert set(changed["patient_ngsci_id"]) == {b_patient}


def test_nothing_joins_names_the_chain_and_the_counts():
    t = make_tables(n_pat=5)
    t["ecg_ed_enc"] = t["ecg_ed_enc"].with_columns(pl.col("ed_enc_id") + " ")
    with pytest.raises(cohort.CohortError, match=r"no ECG of 15 .*ecg-ed-enc.csv ed_enc_id.*"
                                                 r"rejected: 15 encounter_missing"):
        cohort.build_cohort(t)


def test_a_key_with_conflicting_rows_rejects_its_ecgs_and_identical_copies_are_harmless():
    t = make_tables(n_pat=10)
    link, enc, pat = t["ecg_ed_enc"], t["ed_encounter"], t["patient"]
    t["ecg_ed_enc"] = pl.concat([link, link.slice(0, 1),  # an identical repeat: fine
                                 link.slice(1, 1).with_columns(ed_enc_id=pl.lit("enc99"))])
    t["ed_encounter"] = pl.concat([enc, enc.slice(2, 1).with_columns(age_at_admit=pl.lit(99.0))])
    t["patient"] = pl.concat([pat, pat.slice(3, 1).with_columns(sex=pl.lit("X"))])
    df, rej = cohort.build_cohort(t)
    got = dict(rej.group_by("reason").agg("ecg_id").iter_rows())
    ids = link["ecg_id"].to_list()  # 3 ECGs per patient, one encounter each
    assert {k: sorted(v) for k, v in got.items()} == {
        "ambiguous_encounter_link": [ids[1]], "ambiguous_encounter": ids[6:9],
        "ambiguous_patient": ids[9:12]}
    assert ids[0] in set(df["ecg_id"]) and len(df) + len(rej) == len(ids)
    assert set(rej["reason"]) <= set(cohort.REASONS)
