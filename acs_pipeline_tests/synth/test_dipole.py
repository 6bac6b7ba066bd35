"""Tests of the heart-dipole model (`acs_pipeline.synth.dipole`)."""

from __future__ import annotations

import pytest

from acs_pipeline.synth import SynthError
from acs_pipeline.synth.dipole import Ischemia


def test_unknown_territory_raises():
    with pytest.raises(SynthError, match="territory"):
        Ischemia("LM", 0.1)
