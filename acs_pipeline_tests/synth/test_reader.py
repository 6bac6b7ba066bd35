"""Tests of the machine read (`acs_pipeline.synth.reader`)."""

from __future__ import annotations

import numpy as np

from acs_pipeline.synth.dipole import Ischemia, Recording, random_morphology
from acs_pipeline.synth.reader import measure, stemi_rule
from acs_pipeline.synth.render import render
from acs_pipeline_tests.synth.cohort_files import LEAD_INDEX


def test_injury_current_raises_st_in_facing_leads():
    """A strong anterior injury current lifts ST in V2-V4 (J + 60 ms) and trips the ST rule."""
    rng = np.random.default_rng(4)
    morph = random_morphology(rng)
    ecgs = {}
    for name, isch in (("none", None), ("lad", Ischemia("LAD", 0.3))):
        rec = Recording(morph, 75.0, "sinus", isch, noise=1.0, lead_reversal=False)
        twelve, fid = render(np.random.default_rng(9), rec)
        ecgs[name] = measure(twelve, fid)
    v = [LEAD_INDEX[n] for n in ("V2", "V3", "V4")]
    assert (ecgs["lad"].st_j60[v] - ecgs["none"].st_j60[v] > 0.2).all()
    assert stemi_rule(ecgs["lad"])["has_st_eleva"]
    assert not stemi_rule(ecgs["none"])["has_st_eleva"]
