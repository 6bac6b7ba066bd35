"""Tests of the 12-lead rendering and the printed page (`acs_pipeline.synth.render`)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import find_peaks

from acs_pipeline.ecg.leads import LEADS
from acs_pipeline.synth import SynthError
from acs_pipeline.synth.dipole import Ischemia, random_morphology
from acs_pipeline.synth.render import synth_ecg, to_nightingale


def test_synth_ecg_einthoven_goldberger_exact():
    rng = np.random.default_rng(3)
    for isch in (None, Ischemia("RCA", 0.1, hyperacute_mv=0.2)):
        x = synth_ecg(rng, heart_rate=72.0, ischemia=isch, noise=2.0)
        assert x.shape == (12, 5000) and x.dtype == np.float32
        lead = {name: x[i] for i, name in enumerate(LEADS)}
        assert np.array_equal(lead["III"], lead["II"] - lead["I"])
        assert np.array_equal(lead["aVR"], -(lead["I"] + lead["II"]) / np.float32(2))
        assert np.array_equal(lead["aVL"], lead["I"] - lead["II"] / np.float32(2))
        assert np.array_equal(lead["aVF"], lead["II"] - lead["I"] / np.float32(2))
        assert np.isfinite(x).all() and 0.3 < np.abs(x).max() < 8.0


def test_synth_ecg_heart_rate_and_noise():
    rng = np.random.default_rng(8)
    morph = random_morphology(rng)
    for hr in (55.0, 120.0):
        x = synth_ecg(np.random.default_rng(1), heart_rate=hr, morphology=morph, noise=0.0)
        energy = np.abs(np.diff(x[6:12], axis=1)).sum(axis=0)
        peaks, _ = find_peaks(energy, distance=int(0.25 * 500), height=0.5 * energy.max())
        assert abs(len(peaks) - hr / 6.0) <= 2.5, (hr, len(peaks))
    clean = synth_ecg(np.random.default_rng(2), heart_rate=70.0, morphology=morph, noise=0)
    noisy = synth_ecg(np.random.default_rng(2), heart_rate=70.0, morphology=morph, noise=3)
    assert 0.01 < np.std(noisy - clean) < 0.5


def test_unknown_rhythm_raises():
    with pytest.raises(SynthError, match="rhythm"):
        synth_ecg(np.random.default_rng(0), heart_rate=70, rhythm="vf")


def test_to_nightingale_layout():
    x = np.arange(12 * 5000, dtype=np.float32).reshape(12, 5000)
    page = to_nightingale(x)
    assert page.shape == (15, 5000) and page.dtype == np.float32
    for j in range(12):
        w = slice((j // 3) * 1250, (j // 3 + 1) * 1250)
        assert np.array_equal(page[j, w], x[j, w])
        assert np.isnan(page[j]).sum() == 3750
    assert np.array_equal(page[12:], x[[6, 1, 10]])
    with pytest.raises(SynthError, match=r"\(12, 5000\)"):
        to_nightingale(np.zeros((15, 5000)))
