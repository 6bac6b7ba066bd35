"""File layout and column names of the synthetic ``ed-bwh-ecg`` cohort (data contract §1, 2, 7)."""

from __future__ import annotations

from datetime import datetime

from acs_pipeline.cohort.tables import RACE_COLUMNS, TABLES

DATASET = "ed-bwh-ecg"
TRUTH_FILE = "synthetic-truth.csv"
PATIENT_FILE = TABLES["patient"].file
METADATA_FILE = TABLES["ecg_metadata"].file
LINK_FILE = TABLES["ecg_ed_enc"].file
ENCOUNTER_FILE = TABLES["ed_encounter"].file
NPY_INDEX_FILE = "ecg-npy-index.csv"
LEGACY_FILE = "ecg-waveform.npy"

AGI_COLUMNS = (
    "agi_under_25k", "agi_25k_to_50k", "agi_50k_to_75k", "agi_75k_to_100k", "agi_100k_to_200k",
    "agi_above_200k",
)  # fmt: skip
PATIENT_COLUMNS = ("patient_ngsci_id", "sex", *RACE_COLUMNS, *AGI_COLUMNS)
INTERVALS = ("pr_interval", "qrs_duration", "qtqtc", "qt_interval", "qtc_interval", "vent_rate")
FLAGS = (
    "has_bbb", "has_afib", "has_st", "has_pacemaker", "has_lvh", "has_normal", "has_normal_ecg",
    "has_normal_sinus", "has_depress", "has_st_eleva", "has_twave", "has_aberran_bbb",
    "has_jpoint_repol", "has_jpoint_eleva", "has_twave_inver", "has_twave_abnormal",
    "has_nonspecific", "has_rhythm_disturbance", "has_prolonged_qt", "has_lead_reversal",
    "has_poor_or_quality",
)  # fmt: skip
METADATA_COLUMNS = (
    "patient_ngsci_id", "ecg_id", "date", "p-r-t_axes", "p_axes", "r_axes", "t_axes",
    *(c for name in INTERVALS for c in (name, f"{name}_units")),
    *FLAGS,
)  # fmt: skip
LINK_COLUMNS = ("ecg_id", "ed_enc_id")
ENCOUNTER_COLUMNS = (
    "patient_ngsci_id", "ed_enc_id", "start_datetime", "end_datetime", "age_at_admit",
    "macetrop_030_pos", "death_030_day", "macetrop_pos_or_death_030", "stent_010_day",
    "cabg_010_day", "stent_or_cabg_010_day", "ami_day_of", "days_to_ami", "maxtrop_sameday",
    "tn_group_sameday", "disch_disp", "disch_obs", "test_010_day", "stress_010_day",
    "cath_010_day", "days_to_stress", "days_to_cath", "first_test", "excl_flag_c_int",
    "excl_flag_chronic", "excl_flag_death", "exclude_modeling", "exclude",
)  # fmt: skip
NPY_INDEX_COLUMNS = ("ecg_id", "npy_index")
TRUTH_COLUMNS = (
    "ecg_id", "dataset", "oracle_risk", "acs", "mace", "territory", "subtle", "duplicate_of",
)  # fmt: skip


def fmt_datetime(ts: datetime) -> str:
    """A timestamp as the tables print it."""
    return ts.strftime("%Y-%m-%d %H:%M:%S")
