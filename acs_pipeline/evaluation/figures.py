"""Figures of the evaluation report: ROC, precision-recall, calibration, cumulative risk,
decision curves and the classical-flag Venn diagram, rendered to base64 PNG for the HTML.

matplotlib is imported only when a figure is drawn (``Figure`` objects, no pyplot: no global
state, no backend switching).
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np

from acs_pipeline.evaluation.calibration import cumulative_risk, net_benefit_treat_all
from acs_pipeline.evaluation.flags import ANY_FLAG, flag_label
from acs_pipeline.evaluation.inputs import Prepared, display_order

_MARKERS = "osD^vP*X"  # one per classical flag in the ROC and PR panels
# decision-curve references: black, unlike every predictor, and unlike each other
TREAT_ALL = {"color": "black", "ls": "-.", "lw": 1.8, "zorder": 3}
TREAT_NONE = {"color": "black", "ls": (0, (1, 1.5)), "lw": 2.2, "zorder": 3}


def figures(prep: Prepared, det: dict[str, Any]) -> dict[str, str]:
    """The report's figures as base64 PNGs, by name; ``det`` is ``EvaluationResult.details``."""
    names = display_order(prep, det["scores"])
    styles = _styles(prep, det, names)
    prob_names = [n for n in names if "calibration" in det["scores"][n]]
    figs = {"roc": _png(_roc(prep, det, names, styles)), "pr": _png(_pr(prep, det, names, styles))}
    if prob_names:
        figs["calibration"] = _png(_calibration(det, prob_names, styles))
    figs["cumulative"] = _png(_cumulative(prep, names, styles))
    if prob_names:
        figs["decision"] = _png(_decision(prep, det, prob_names, styles))
    if det["scores"][det["best"]].get("classical"):
        figs["venn"] = _png(_venn(prep, det, styles[det["best"]]["color"]))
    return figs


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def _styles(prep: Prepared, det: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """Line style per predictor: a colour each, dashes by kind, the best model drawn thicker."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    return {
        name: {
            "color": palette[i % len(palette)],
            "ls": {"model": "-", "baseline": "--", "oracle": ":"}[prep.kinds[name]],
            "lw": 2.4 if name == det["best"] else 1.5,
        }
        for i, name in enumerate(names)
    }


def _flag_points(ax: Any, prep: Prepared, det: dict[str, Any], x: str, y: str) -> None:
    """Each classical flag as one open marker at its threshold metrics (x, y); ``x``
    ``'1-spec'`` is the false-positive rate. A flag without a ``y`` value is left out."""
    for i, name in enumerate(prep.flags):
        tm = det["flags"][name]["threshold"]
        if not math.isnan(tm[y]):
            x_value = 1 - tm["spec"] if x == "1-spec" else tm[x]
            ax.plot(x_value, tm[y], _MARKERS[i % len(_MARKERS)], color="0.25", ms=7,
                    mfc="none", label=flag_label(name))


def _roc(prep: Prepared, det: dict[str, Any], names: list[str], styles: dict) -> Any:
    from sklearn.metrics import roc_curve

    fig, ax = _figure(6.2, 5.6)
    for name in names:
        fpr, tpr, _ = roc_curve(prep.y, prep.scores[name])
        auc = det["scores"][name]["auroc"]
        ax.plot(fpr, tpr, label=f"{name} ({auc:.3f})", **styles[name])
    _flag_points(ax, prep, det, "1-spec", "sens")
    ax.plot([0, 1], [0, 1], color="0.7", lw=1)
    ax.set(
        xlabel="1 - specificity",
        ylabel="sensitivity",
        title="ROC curves (AUROC)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        aspect="equal",
    )
    ax.legend(fontsize=7.5, loc="lower right")
    return fig


def _pr(prep: Prepared, det: dict[str, Any], names: list[str], styles: dict) -> Any:
    from sklearn.metrics import precision_recall_curve

    y = prep.y
    fig, ax = _figure(6.2, 5.6)
    for name in names:
        prec, rec, _ = precision_recall_curve(y, prep.scores[name])
        ax.plot(rec, prec, label=f"{name} ({det['scores'][name]['auprc']:.3f})", **styles[name])
    _flag_points(ax, prep, det, "sens", "ppv")
    ax.axhline(y.mean(), color="0.7", lw=1, label=f"prevalence {y.mean():.3f}")
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall curves (AUPRC)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=7.5, loc="upper right")
    return fig


def _calibration(det: dict[str, Any], names: list[str], styles: dict) -> Any:
    fig, ax = _figure(6.2, 5.6)
    for name in names:
        c = det["scores"][name]["calibration"]
        ax.plot(
            c["bin_mean_predicted"],
            c["bin_observed"],
            marker="o",
            ms=4,
            label=f"{name} (slope {c['slope']:.2f})",
            **styles[name],
        )
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="perfect")
    ax.set(
        xlabel="mean predicted probability (decile bins)",
        ylabel="observed ACS rate",
        title="Calibration (reliability)",
        xlim=(0, 1),
        ylim=(0, 1),
        aspect="equal",
    )
    ax.legend(fontsize=7.5, loc="upper left")
    return fig


def _cumulative(prep: Prepared, names: list[str], styles: dict) -> Any:
    from matplotlib.figure import Figure

    y = prep.y
    fig = Figure(figsize=(11, 4.6))
    ax1, ax2 = fig.subplots(1, 2)
    for name in names:
        cr = cumulative_risk(y, prep.scores[name])
        ax1.plot(100 * cr["share_flagged"], 100 * cr["share_events"], label=name, **styles[name])
        ax2.plot(100 * cr["share_flagged"], 100 * cr["observed_rate"], label=name, **styles[name])
    ax1.plot([0, 100], [0, 100], color="0.7", lw=1, label="random")
    ax2.axhline(100 * y.mean(), color="0.7", lw=1, label="prevalence")
    for ax in (ax1, ax2):
        ax.axvline(100 * y.mean(), color="0.5", lw=0.8, ls="--")
        ax.set_xlim(0, 100)
        ax.set_xlabel("ECGs flagged, highest predicted risk first (%)")
    ax1.set(ylabel="ACS cases captured (%)", title="Cumulative share of ACS cases", ylim=(0, 100))
    ax2.set(ylabel="ACS rate among flagged (%)", title="Cumulative observed risk", ylim=(0, 100))
    ax1.legend(fontsize=7.5, loc="lower right")
    fig.text(
        0.5, -0.02, "dashed vertical line: top-k (k = number of ACS cases)", ha="center", fontsize=8
    )
    return fig


def _decision(prep: Prepared, det: dict[str, Any], names: list[str], styles: dict) -> Any:
    y, thr = prep.y, det["thresholds"]
    fig, ax = _figure(6.2, 5.0)
    for name in names:
        ax.plot(thr, det["scores"][name]["net_benefit"], label=name, **styles[name])
    # the references in black (predictors are coloured), each with its own dash pattern and a
    # label on the line itself
    ax.plot(thr, net_benefit_treat_all(y, thr), label="treat all", **TREAT_ALL)
    ax.axhline(0, label="treat none", **TREAT_NONE)
    # treating all crosses 0 at t = prevalence: label it just below, right of the crossing
    ax.annotate("treat all", (float(y.mean()), 0), xytext=(5, -14), textcoords="offset points",
                fontsize=8, weight="bold")
    ax.annotate("treat none", (thr.max(), 0), xytext=(-4, -11), textcoords="offset points",
                ha="right", fontsize=8, weight="bold")
    ax.set(
        xlabel="threshold probability",
        ylabel="net benefit",
        title="Decision curves",
        xlim=(thr.min(), thr.max()),
        ylim=(-0.05, max(0.05, y.mean() * 1.1)),
    )
    ax.legend(fontsize=7.5, loc="upper right")
    return fig


def _venn(prep: Prepared, det: dict[str, Any], color: Any) -> Any:
    """The best model's top-k flagged ECGs vs those with any classical flag (ACS counts below)."""
    from matplotlib.patches import Circle

    best = det["best"]
    cc = det["scores"][best]["classical"]
    sel = det["scores"][best]["topk"]["selected"]
    anyf = prep.flags[ANY_FLAG]
    pos = prep.y == 1
    counts = {
        "model": (cc["n_model_only"], int(np.sum(sel & ~anyf & pos))),
        "both": (cc["n_both"], int(np.sum(sel & anyf & pos))),
        "flag": (cc["n_classical_only"], int(np.sum(~sel & anyf & pos))),
    }
    fig, ax = _figure(5.4, 3.9)
    ax.add_patch(Circle((-0.55, 0), 1.0, color=color, alpha=0.35))
    ax.add_patch(Circle((0.55, 0), 1.0, color="0.45", alpha=0.3))
    for x, key in ((-1.0, "model"), (0.0, "both"), (1.0, "flag")):
        n_all, n_pos = counts[key]
        ax.text(x, 0.05, f"{n_all}", ha="center", va="center", fontsize=15, weight="bold")
        ax.text(x, -0.25, f"{n_pos} ACS", ha="center", va="center", fontsize=9)
    ax.text(-0.95, 1.08, f"{best} top-k\nflagged ({cc['k']})", ha="center", va="bottom",
            fontsize=10)
    ax.text(0.95, 1.08, f"any classical\nflag ({int(anyf.sum())})", ha="center", va="bottom",
            fontsize=10)
    ax.text(0, -1.25, f"neither: {cc['n_neither']} ECGs, {int(np.sum(~sel & ~anyf & pos))} ACS",
            ha="center", fontsize=9)
    ax.set(xlim=(-1.8, 1.8), ylim=(-1.4, 1.6), aspect="equal")
    ax.axis("off")
    return fig
