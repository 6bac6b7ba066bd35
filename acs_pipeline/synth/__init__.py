"""Synthetic ``ed-bwh-ecg`` cohort, laid out exactly like the Nightingale dataset.

Read top to bottom: `layout` (files and columns), `dipole` (the heart-vector model), `render`
(12 leads, noise, the printed page), `reader` (the ECG machine's read), `latent` (the planted
ACS signal and its calibration), `population` (patients and visits), `waveform` (one ECG of the
cohort), `cohort` (`generate`), `cli` (``python -m acs_pipeline synth``).
"""


class SynthError(ValueError):
    """Bad arguments to the generator or an output directory that cannot be written."""
