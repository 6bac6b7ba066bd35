"""Tests of the patients, visits and labels (`acs_pipeline.synth.population`, `latent`)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from acs_pipeline.synth.latent import calibrate
from acs_pipeline.synth.population import draw_patient, draw_visits


def test_visit_level_rates_match_contract():
    """Without rendering waveforms: the latent model's rates on a large cohort."""
    rng = np.random.default_rng([1, 0])
    cal = calibrate()
    taken: set[str] = set()
    patients = [draw_patient(rng, f"pat{i:08x}") for i in range(3000)]
    visits = draw_visits(rng, patients, cal, 0.05, taken)
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
    visits = draw_visits(rng, patients[:2000], cal, 0.5, taken)
    tv = [v for v in visits if v.group == "tested"]
    auc = roc_auc_score([v.acs for v in tv], [v.risk for v in tv])
    assert len(tv) > 500 and 0.78 <= auc <= 0.92
