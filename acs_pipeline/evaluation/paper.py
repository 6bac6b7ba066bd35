"""The paper's published figures (Schubert & Obermeyer; docs/data-contract.md §5) and the
mapping of our predictor names onto the paper's, for the reference rows of the benchmark table.
"""

from __future__ import annotations

import re

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS

PAPER_SOURCE = "paper (Schubert & Obermeyer)"

# The published numbers: (model, metric, value, ci_low, ci_high, n).
PAPER_N = 1295  # the tested cohort's validation split
PAPER_PREVALENCE = 0.3876
PAPER_ROWS: list[tuple[str, str, float, float | None, float | None, int | None]] = [
    ("S4", "auroc", 0.703, 0.674, 0.731, PAPER_N),
    ("ResNet-18", "auroc", 0.677, 0.647, 0.706, PAPER_N),
    ("HuBERT-ECG", "auroc", 0.637, 0.607, 0.667, PAPER_N),
    ("ECG-OMI (ResNet-6)", "auroc", 0.625, 0.594, 0.655, PAPER_N),
    ("ResNet-50", "auroc", 0.603, 0.572, 0.635, PAPER_N),
    ("logistic regression (4 flags)", "auroc", 0.522, 0.492, 0.552, PAPER_N),
    ("S4", "topk_ppv", 0.560, None, None, PAPER_N),
    ("ResNet-18", "topk_ppv", 0.556, None, None, PAPER_N),
    ("HuBERT-ECG", "topk_ppv", 0.488, None, None, PAPER_N),
    ("ECG-OMI (ResNet-6)", "topk_ppv", 0.498, None, None, PAPER_N),
    ("ResNet-50", "topk_ppv", 0.474, None, None, PAPER_N),
    ("logistic regression (4 flags)", "topk_ppv", 0.394, None, None, PAPER_N),
    ("has_st_eleva", "auroc", 0.535, None, None, PAPER_N),
    ("has_depress", "auroc", 0.510, None, None, PAPER_N),
    ("has_twave_inver", "auroc", 0.507, None, None, PAPER_N),
    ("has_twave_abnormal", "auroc", 0.471, None, None, PAPER_N),
    ("has_st_eleva", "ppv", 0.654, None, None, PAPER_N),
    ("has_depress", "ppv", 0.491, None, None, PAPER_N),
    ("has_twave_inver", "ppv", 0.415, None, None, PAPER_N),
    ("has_twave_abnormal", "ppv", 0.347, None, None, PAPER_N),
    ("has_st_eleva", "sensitivity", 0.106, None, None, PAPER_N),
    ("has_depress", "sensitivity", 0.056, None, None, PAPER_N),
    ("has_twave_inver", "sensitivity", 0.122, None, None, PAPER_N),
    ("has_twave_abnormal", "sensitivity", 0.305, None, None, PAPER_N),
    ("S4", "share_flagged_no_classical", 0.526, None, None, None),
    ("S4", "share_tp_no_classical", 0.491, None, None, None),
    ("S4", "auroc[sex=female]", 0.710, None, None, None),
    ("S4", "auroc[sex=male]", 0.695, None, None, None),
    ("S4", "auroc[race=Black]", 0.780, None, None, None),
    ("S4", "auroc[race=Hispanic]", 0.665, None, None, None),
    ("S4", "auroc[race=White]", 0.692, None, None, None),
]
# top-k: PPV equals sensitivity by construction, so the paper's single number is both.
PAPER_ROWS += [
    (name, "topk_sensitivity", v, lo, hi, n)
    for name, metric, v, lo, hi, n in list(PAPER_ROWS)
    if metric == "topk_ppv"
]

_ALIASES = {
    "s4": "S4",
    "resnet18": "ResNet-18",
    "hubert": "HuBERT-ECG",
    "hubertecg": "HuBERT-ECG",
    "ecgomi": "ECG-OMI (ResNet-6)",
    "resnet6": "ECG-OMI (ResNet-6)",
    "ecgomiresnet6": "ECG-OMI (ResNet-6)",
    "resnet50": "ResNet-50",
    "baseline": "logistic regression (4 flags)",
    "logreg": "logistic regression (4 flags)",
    "logisticbaseline": "logistic regression (4 flags)",
    "lrbaseline": "logistic regression (4 flags)",
    "lr": "logistic regression (4 flags)",
    "logisticregression": "logistic regression (4 flags)",
    "logisticregression4flags": "logistic regression (4 flags)",
    "logisticregressiononthe4flags": "logistic regression (4 flags)",
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def paper_name(name: str) -> str | None:
    """The paper's name for one of our predictor names (e.g. ``resnet18`` -> ``ResNet-18``;
    ``s4 (released, authors_prediction_py)``, the authors' weights, -> ``S4``)."""
    name = re.sub(r" \(released(, \w+)?\)$", "", name)
    if name in CLASSICAL_FLAGS or name in {r[0] for r in PAPER_ROWS}:
        return name
    key = _key(name)
    if key in _ALIASES:
        return _ALIASES[key]
    if key.startswith("hubert"):
        return "HuBERT-ECG"
    return None


def paper_lookup() -> dict[tuple[str, str], tuple[float, float | None, float | None]]:
    """``(paper name, metric) -> (value, ci_low, ci_high)`` of the published figures."""
    return {(a, b): (v, lo, hi) for a, b, v, lo, hi, _ in PAPER_ROWS}
