"""Test data shared by the evaluation tests: labelled scores with ties, and a realistic fake
evaluation input (also used by ``benchmarks/evaluate.py``)."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import polars as pl
from scipy import special, stats

from acs_pipeline.evaluation.inputs import EvaluationInput, ModelScores
from acs_pipeline.evaluation.paper import PAPER_SOURCE
from acs_pipeline.models.baseline import fit_logistic


def labelled_scores(
    n: int = 400, seed: int = 0, shift: float = 0.8, decimals: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (39 % positives) and rounded normal scores shifted by ``shift`` for positives."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.39).astype(int)
    s = np.round(rng.normal(size=n) + shift * y, decimals)  # rounding makes many ties
    return y, s


def synthetic_evaluation_input(
    n: int = 1295, prevalence: float = 0.3876, seed: int = 0
) -> EvaluationInput:
    """A realistic fake evaluation input for demos, tests and benchmarks.

    Six predictors roughly at the paper's AUROCs (five networks, the logistic regression on the
    flags), the four classical flags at the paper's PPV and sensitivity, an oracle, sex, race and
    age. Scores are binormal: ``logit p = logit(prev) + d*z - d^2/2`` with ``z ~ N(d*y, 1)``,
    which is calibrated; some models get their logits stretched to be miscalibrated.
    """
    rng = np.random.default_rng(seed)
    m = int(round(n * prevalence))
    y = np.zeros(n, dtype=np.int8)
    y[rng.choice(n, m, replace=False)] = 1
    ids = [f"ecg{v:010x}" for v in rng.choice(16**10, size=n, replace=False)]
    base = special.logit(prevalence)

    def binormal(auc: float, stretch: float = 1.0, shift: float = 0.0) -> np.ndarray:
        d = math.sqrt(2) * stats.norm.ppf(auc)
        z = rng.normal(d * y, 1.0)
        return special.expit(stretch * (base + d * z - d * d / 2) + shift)

    paper_flags = {  # (sensitivity, ppv)
        "has_st_eleva": (0.106, 0.654),
        "has_depress": (0.056, 0.491),
        "has_twave_inver": (0.122, 0.415),
        "has_twave_abnormal": (0.305, 0.347),
    }
    flags = {}
    for name, (sens, ppv) in paper_flags.items():
        fpr = sens * m * (1 - ppv) / ppv / (n - m)
        flags[name] = (rng.uniform(size=n) < np.where(y == 1, sens, fpr)).astype(np.int8)
    fmat = np.column_stack(list(flags.values())).astype(np.float64)
    lr = fit_logistic(fmat, y, feature_names=list(flags))
    version = "s3://acs/models/{0}/acs/best.ckpt sha256:{1}"
    specs = [  # name, its key in the checkpoint URI, AUROC, logit stretch and shift
        ("S4", "s4", 0.703, 1.0, 0.0),
        ("ResNet-18", "resnet18", 0.677, 1.3, 0.0),
        ("HuBERT-ECG", "hubertecg", 0.637, 0.8, 0.2),
        ("ECG-OMI", "ecgomi", 0.625, 1.0, -0.3),
        ("ResNet-50", "resnet50", 0.603, 1.6, 0.0),
    ]
    scores = [
        ModelScores(name, binormal(auc, stretch, shift), version.format(key, f"{i:02x}" * 6))
        for i, (name, key, auc, stretch, shift) in enumerate(specs)
    ]
    scores.append(
        ModelScores(
            "logistic regression (4 flags)",
            lr.predict_proba(fmat),
            "sklearn LogisticRegression(penalty=None) on the 4 flags, fitted on train",
            kind="baseline",
        )
    )
    scores.append(ModelScores("oracle", binormal(0.85), "synth truth: oracle risk", "oracle"))
    sex = rng.choice(np.array(["F", "M"], dtype=object), size=n, p=[0.42, 0.58])
    race = rng.choice(
        np.array(["White", "Black", "Hispanic", "Other"], dtype=object),
        size=n,
        p=[0.62, 0.18, 0.12, 0.08],
    )
    race[rng.choice(n, 5, replace=False)] = None
    age = np.clip(rng.normal(63, 13, size=n), 18, 100).round()
    age[rng.choice(n, 3, replace=False)] = np.nan
    return EvaluationInput(
        ecg_ids=ids,
        y=y,
        scores=scores,
        flags=flags,
        sex=sex,
        race=race,
        age=age,
        data_version=f"synthetic ed-bwh-ecg v1 (seed {seed}) cohort sha256:abc123",
        title="ACS-BenchWork evaluation (synthetic demo)",
    )


def table_row(table: pl.DataFrame, model: str, metric: str, source_is_paper: bool = False) -> dict:
    """The one row of the benchmark table for ``model`` and ``metric`` (ours, or the paper's:
    kind ``reference``, source ``PAPER_SOURCE``)."""
    paper = (pl.col("kind") == "reference") & (pl.col("source") == PAPER_SOURCE)
    rows = table.filter(
        (pl.col("model") == model)
        & (pl.col("metric") == metric)
        & (paper if source_is_paper else pl.col("kind") != "reference")
    )
    assert rows.height == 1, (model, metric, rows)
    return rows.row(0, named=True)


def html_rows(table: str) -> list[list[str]]:
    """The body rows of an HTML ``table`` (from ``<tbody>`` on): each row's cells as text."""
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    return [[html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
             for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]
