"""Reading a generated cohort back in the synth tests (the layout spelled out independently)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from acs_pipeline.ecg.leads import LEADS
from acs_pipeline.synth.cohort import SynthSummary

LEAD_INDEX = {name: i for i, name in enumerate(LEADS)}


def npz_path(root: Path, ecg_id: str) -> Path:
    hexid = ecg_id[3:]
    return root / "ecg-waveforms-npz" / hexid[:2] / f"{hexid}.npz"


def load(root: Path, ecg_id: str) -> np.ndarray:
    with np.load(npz_path(root, ecg_id)) as z:
        return z[z.files[0]]


def joined(s: SynthSummary) -> pd.DataFrame:
    d = s.dataset_dir
    meta = pd.read_csv(d / "ecg-metadata.csv")
    link = pd.read_csv(d / "ecg-ed-enc.csv")
    enc = pd.read_csv(d / "ed-encounter.csv").drop(columns="patient_ngsci_id")
    truth = pd.read_csv(s.truth_path, keep_default_na=False)
    return meta.merge(link, on="ecg_id").merge(enc, on="ed_enc_id").merge(truth, on="ecg_id")
