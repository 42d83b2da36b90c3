"""The learning-rate sensitivity figure of a tuned-against-tuned study (analysis.tuned): final value
against the tuned knob, one line per arm - the classic optimiser-benchmark plot. Built on
matplotlib's Figure (no pyplot state)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.tuned import CONTEXT_FIELDS, Tuned, by_keys


def plot_lr_sensitivity(result: Optional[Tuned]) -> Optional[Figure]:
    """Final value against the tuned knob, one line per arm: the median over every seed with its
    order-statistic CI, the arm's pick circled, ✕ k/n where runs diverged, and a ▲ on the top edge
    where the median is +inf (half or more diverged) - nothing leaves the panel silently."""
    if result is None or result.sensitivity.empty:
        return None
    sens, knob = result.sensitivity, result.protocol.knobs[0]
    ctx = [c for c in CONTEXT_FIELDS if c in sens.columns and sens[c].nunique(dropna=False) > 1]
    panels = list(by_keys(sens, ctx))
    fig = Figure(figsize=(max(7.0, 5.2 * len(panels)), 4.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    picks = result.picks.set_index("arm")[f"pick_{knob}"].to_dict() if len(result.picks) else {}
    finite = sens["high"].replace(np.inf, np.nan)
    top = float(np.nanmax(finite.to_numpy())) * 1.15 if finite.notna().any() else 1.0
    for ax, (key, g) in zip(axes, panels):
        for i, (arm, a) in enumerate(g.sort_values(knob).groupby("arm", sort=False)):
            _sensitivity_line(ax, a, knob, top, f"C{i % 10}", arm, picks.get(arm))
        ax.set_xscale("log")
        ax.set_yscale("log" if (sens["low"] > 0).all() else "linear")
        ax.set_xlabel(knob)
        ax.set_ylabel(f"final {result.protocol.metric} (median, CI)")
        ax.set_title(", ".join(f"{c}={v}" for c, v in zip(ctx, key)) or "all trials", fontsize=9)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{knob} sensitivity: every arm over the grid, every seed (median, order-statistic CI)\n"
                 f"○ the arm's pick on the tuning seeds   ✕ k/n diverged   ▲ median ∞ (half or more diverged)",
                 fontsize=9)
    return fig


def _sensitivity_line(ax, a: pd.DataFrame, knob: str, top: float, color: str, arm: str, picked) -> None:
    inf = ~np.isfinite(a["median"].to_numpy())
    y = a["median"].where(~inf)
    ax.errorbar(a[knob], y, yerr=[y - a["low"], a["high"].clip(upper=top) - y], color=color, marker="o", ms=3,
                capsize=2, label=arm)
    ax.scatter(a.loc[inf, knob], [top] * int(inf.sum()), marker="^", color=color, clip_on=False, zorder=3)
    for r in a[a["diverged"] > 0].to_dict("records"):
        ax.annotate(f"✕{r['diverged']}/{r['runs']}", (r[knob], min(r["median"], top)), color=color,
                    fontsize=7, textcoords="offset points", xytext=(2, 4))
    if picked is not None and np.isfinite(picked):
        at = a[np.isclose(a[knob], picked)]
        if len(at) and np.isfinite(at["median"].iloc[0]):
            ax.scatter([picked], [at["median"].iloc[0]], s=140, facecolors="none", edgecolors=color, zorder=4)
