"""The classical machine-read ECG flags as predictors: their display labels, the "any flag"
predictor, and how a score's top-k relates to them.

The flag columns themselves are :data:`acs_pipeline.cohort.tables.CLASSICAL_FLAGS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from acs_pipeline.cohort.tables import CLASSICAL_FLAGS
from acs_pipeline.evaluation.checks import MetricInputError, as_labels, ratio
from acs_pipeline.evaluation.ranking import topk_metrics

ANY_FLAG = "any classical flag"  # the OR of the flags: its predictor name and display label
FLAG_LABELS = dict(  # flag column -> display label, in the order of CLASSICAL_FLAGS
    zip(
        CLASSICAL_FLAGS,
        (
            "ST depression flag",
            "ST elevation flag",
            "T-wave inversion flag",
            "T-wave abnormal flag",
        ),
        strict=True,
    )
)


def flag_label(name: str) -> str:
    """The display label of a flag (a name that is not a classical flag column is its own)."""
    return FLAG_LABELS.get(name, name)


def any_flag(flags: Mapping[str, object] | Sequence[object], n: int) -> np.ndarray:
    """Element-wise OR of binary flag arrays (each validated: length ``n``, 0/1 or bool)."""
    items = flags.items() if isinstance(flags, Mapping) else enumerate(flags)
    out = np.zeros(n, dtype=bool)
    count = 0
    for name, values in items:
        arr = as_labels(values, name=f"flag {name!r}")
        if arr.size != n:
            raise MetricInputError(f"flag {name!r} has {arr.size} values, expected {n}")
        out |= arr.astype(bool)
        count += 1
    if count == 0:
        raise MetricInputError("no classical flags given")
    return out


def classical_comparison(
    y: object, s: object, flags: Mapping[str, object] | Sequence[object]
) -> dict[str, float | int]:
    """How a score's top-k positives relate to the classical ECG flags (any flag set = flagged).

    Returns counts for a two-set Venn diagram of score-flagged (top-k) vs classical-flagged cases
    (``n_model_only, n_both, n_classical_only, n_neither``), and the headline shares:
    ``share_flagged_no_classical`` (of the top-k cases, the share without any classical flag) and
    ``share_tp_no_classical`` (of the true positives in the top-k, the share without any flag).

    Their chance references, what a random ranking gives in expectation:
    ``chance_flagged_no_classical`` (a random top-k is a uniform sample of all cases, so its
    expected share without a flag is that of all cases) and ``chance_tp_no_classical`` (the true
    positives of a random top-k are a uniform sample of the positives: the share of positives
    without a flag).
    """
    yy = as_labels(y)
    anyflag = any_flag(flags, yy.size)
    top = topk_metrics(yy, s)
    sel = top["selected"]
    assert isinstance(sel, np.ndarray)
    tp_mask = sel & (yy == 1)
    n_sel = int(sel.sum())
    n_tp = int(tp_mask.sum())
    n_sel_noflag = int(np.sum(sel & ~anyflag))
    n_tp_noflag = int(np.sum(tp_mask & ~anyflag))
    pos = yy == 1
    return {
        "k": n_sel,
        "n_model_only": n_sel_noflag,
        "n_both": int(np.sum(sel & anyflag)),
        "n_classical_only": int(np.sum(~sel & anyflag)),
        "n_neither": int(np.sum(~sel & ~anyflag)),
        "n_tp": n_tp,
        "n_tp_no_classical": n_tp_noflag,
        "share_flagged_no_classical": ratio(n_sel_noflag, n_sel),
        "share_tp_no_classical": ratio(n_tp_noflag, n_tp),
        "chance_flagged_no_classical": ratio(int(np.sum(~anyflag)), yy.size),
        "chance_tp_no_classical": ratio(int(np.sum(pos & ~anyflag)), int(pos.sum())),
    }
