"""Figures of the evaluation report: ROC, precision-recall, calibration, cumulative risk,
decision curves and the classical-flag Venn diagram, rendered to base64 PNG for the HTML.

matplotlib is imported only when :func:`figures` draws (``Figure`` objects, no pyplot).
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


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def figures(prep: Prepared, det: dict[str, Any]) -> dict[str, str]:
    """The report's figures as base64 PNGs, by name (matplotlib, no pyplot)."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend switching
    from matplotlib.patches import Circle
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = prep.y
    names = display_order(prep, det["scores"])
    palette = matplotlib.colormaps["tab10"].colors
    colors = {n: palette[i % len(palette)] for i, n in enumerate(names)}

    def style(name: str) -> dict[str, Any]:
        kind = prep.kinds[name]
        ls = {"model": "-", "baseline": "--", "oracle": ":"}[kind]
        lw = 2.4 if name == det["best"] else 1.5
        return {"color": colors[name], "ls": ls, "lw": lw}

    flag_names = [k for k in prep.flags]
    markers = "osD^vP*X"
    figs: dict[str, str] = {}

    def flag_points(ax: Any, x: str, y: str) -> None:
        """Each classical flag as one open marker at its threshold metrics (x, y); ``x``
        ``'1-spec'`` is the false-positive rate. A flag without a ``y`` value is left out."""
        for i, name in enumerate(flag_names):
            tm = det["flags"][name]["threshold"]
            if not math.isnan(tm[y]):
                x_value = 1 - tm["spec"] if x == "1-spec" else tm[x]
                ax.plot(x_value, tm[y], markers[i % len(markers)], color="0.25", ms=7,
                        mfc="none", label=flag_label(name))

    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.subplots()
    for name in names:
        fpr, tpr, _ = roc_curve(y, prep.scores[name])
        auc = det["scores"][name]["auroc"]
        ax.plot(fpr, tpr, label=f"{name} ({auc:.3f})", **style(name))
    flag_points(ax, "1-spec", "sens")
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
    figs["roc"] = _png(fig)

    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.subplots()
    for name in names:
        prec, rec, _ = precision_recall_curve(y, prep.scores[name])
        ax.plot(rec, prec, label=f"{name} ({det['scores'][name]['auprc']:.3f})", **style(name))
    flag_points(ax, "sens", "ppv")
    ax.axhline(y.mean(), color="0.7", lw=1, label=f"prevalence {y.mean():.3f}")
    ax.set(
        xlabel="recall (sensitivity)",
        ylabel="precision (PPV)",
        title="Precision-recall curves (AUPRC)",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(fontsize=7.5, loc="upper right")
    figs["pr"] = _png(fig)

    prob_names = [n for n in names if "calibration" in det["scores"][n]]
    if prob_names:
        fig = Figure(figsize=(6.2, 5.6))
        ax = fig.subplots()
        for name in prob_names:
            c = det["scores"][name]["calibration"]
            ax.plot(
                c["bin_mean_predicted"],
                c["bin_observed"],
                marker="o",
                ms=4,
                label=f"{name} (slope {c['slope']:.2f})",
                **style(name),
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
        figs["calibration"] = _png(fig)

    fig = Figure(figsize=(11, 4.6))
    ax1, ax2 = fig.subplots(1, 2)
    for name in names:
        cr = cumulative_risk(y, prep.scores[name])
        ax1.plot(100 * cr["share_flagged"], 100 * cr["share_events"], label=name, **style(name))
        ax2.plot(100 * cr["share_flagged"], 100 * cr["observed_rate"], label=name, **style(name))
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
    figs["cumulative"] = _png(fig)

    if prob_names:
        thr = det["thresholds"]
        fig = Figure(figsize=(6.2, 5.0))
        ax = fig.subplots()
        for name in prob_names:
            ax.plot(thr, det["scores"][name]["net_benefit"], label=name, **style(name))
        ax.plot(thr, net_benefit_treat_all(y, thr), color="0.45", lw=1.2, label="treat all")
        ax.axhline(0, color="0.2", lw=1, label="treat none")
        ax.set(
            xlabel="threshold probability",
            ylabel="net benefit",
            title="Decision curves",
            xlim=(thr.min(), thr.max()),
            ylim=(-0.05, max(0.05, y.mean() * 1.1)),
        )
        ax.legend(fontsize=7.5, loc="upper right")
        figs["decision"] = _png(fig)

    cc = det["scores"][det["best"]].get("classical")
    if cc:
        sel = det["scores"][det["best"]]["topk"]["selected"]
        anyf = prep.flags[ANY_FLAG]
        pos = y == 1
        counts = {
            "model": (cc["n_model_only"], int(np.sum(sel & ~anyf & pos))),
            "both": (cc["n_both"], int(np.sum(sel & anyf & pos))),
            "flag": (cc["n_classical_only"], int(np.sum(~sel & anyf & pos))),
        }
        fig = Figure(figsize=(5.4, 3.9))
        ax = fig.subplots()
        ax.add_patch(Circle((-0.55, 0), 1.0, color=colors[det["best"]], alpha=0.35))
        ax.add_patch(Circle((0.55, 0), 1.0, color="0.45", alpha=0.3))
        for x, key in ((-1.0, "model"), (0.0, "both"), (1.0, "flag")):
            n_all, n_pos = counts[key]
            ax.text(x, 0.05, f"{n_all}", ha="center", va="center", fontsize=15, weight="bold")
            ax.text(x, -0.25, f"{n_pos} ACS", ha="center", va="center", fontsize=9)
        ax.text(
            -0.95,
            1.08,
            f"{det['best']} top-k\nflagged ({cc['k']})",
            ha="center",
            va="bottom",
            fontsize=10,
        )
        ax.text(
            0.95,
            1.08,
            f"any classical\nflag ({int(anyf.sum())})",
            ha="center",
            va="bottom",
            fontsize=10,
        )
        ax.text(
            0,
            -1.25,
            f"neither: {cc['n_neither']} ECGs, {int(np.sum(~sel & ~anyf & pos))} ACS",
            ha="center",
            fontsize=9,
        )
        ax.set(xlim=(-1.8, 1.8), ylim=(-1.4, 1.6), aspect="equal")
        ax.axis("off")
        figs["venn"] = _png(fig)
    return figs
