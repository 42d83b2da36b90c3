"""The rate–distortion figure: each group against the baseline's own frontier over β."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from plvae import metrics as M
from plvae.priors import PRIOR_FIELDS

from analysis.columns import BETA, DISTORTION, RATE, ci, num
from analysis.compare import Comparison
from analysis.groups import context_text, contexts, matching, setting_text
from analysis.plotting import (W2_MARKER, TopEdge, by_variant, cap, diverged_count, epoch_note, equiv_label,
                               equiv_suffix, errorbars, figure_legend, finite, is_baseline_rows, is_w2, panels,
                               plain_log_ticks, suptitle, variant_color)

RD_TITLE = ("Rate–distortion: distortion = " + M.VAL_RECON_MU + ", "
            "rate = KL summed over latent dims (nats/example)")
RD_COLUMNS = (*ci(RATE), *ci(DISTORTION))


def _rd_cols(df: pd.DataFrame):
    return [df[c].astype(float) if c in df else pd.Series(np.nan, index=df.index) for c in RD_COLUMNS]


def _rd_point(ax, r: dict, color: str, marker: str, label: Optional[str], hollow: bool = False):
    x, xlo, xhi, y, ylo, yhi = (num(r.get(c)) for c in RD_COLUMNS)

    def err(v, lo, hi):
        return [[max(v - lo, 0.0) if math.isfinite(lo) else 0.0], [max(hi - v, 0.0) if math.isfinite(hi) else 0.0]]

    ax.errorbar([x], [y], xerr=err(x, xlo, xhi), yerr=err(y, ylo, yhi), marker=marker, ms=6, capsize=2.5,
                color=color, mfc="none" if hollow else color, ls="none", label=label, zorder=4)


def plot_rate_distortion(comparison: Comparison) -> Optional[Figure]:
    """Where each group sits on the rate–distortion trade-off, against the baseline's own
    frontier traced over kl_coeff (β): one panel per frontier context. The frontier is a line
    through the baseline's β points (median rate and distortion across seeds, 95% CIs both ways,
    each point labelled with β); every variant group of the context is a point with its CIs, in
    its variant's colour; W2-objective groups get a distinct marker (◇) and say so. Without a β
    sweep the baseline's single point stands in for the frontier. A group whose median rate or
    distortion is infinite (diverged) is a ▲ on the top edge with "k/n diverged". Log x-axis
    when the rates span more than a decade."""
    groups = comparison.groups
    if groups.empty or RATE not in groups or DISTORTION not in groups:
        return None
    rate, _, _, dist, _, _ = _rd_cols(groups)
    if not (rate.notna() & dist.notna()).any():
        return None
    frontier = comparison.frontier
    fkeys = list(comparison.frontier_keys or [k for k in comparison.context_keys if k != BETA])
    fkeys = [k for k in fkeys if k in groups]
    has_frontier = not frontier.empty and RATE in frontier and DISTORTION in frontier
    ctxs, note = cap(contexts(groups, fkeys))
    fig, axes = panels(len(ctxs), width=5.4, height=5.6)
    for ax, (ctx, cg) in zip(axes, ctxs):
        edge = TopEdge(ax)
        fr = frontier[matching(frontier, fkeys, ctx)] if has_frontier else pd.DataFrame()
        rates = _draw_frontier(ax, fr, edge, comparison.baseline) if not fr.empty else []
        shown = cg if fr.empty else cg[~is_baseline_rows(cg, comparison.baseline)]  # the frontier holds the baseline's
        rates += _draw_groups(ax, shown, edge, comparison.baseline, no_frontier=fr.empty)
        pos = [v for v in rates if math.isfinite(v) and v > 0]
        if len(pos) >= 2 and max(pos) / min(pos) > 10:
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis, math.log10(max(pos) / min(pos)))
        ax.set_xlabel("rate: KL summed over latent dims (nats/example)")
        ax.set_ylabel(f"distortion: {M.VAL_RECON_MU}")
        if fkeys:
            ax.set_title(context_text(fkeys, ctx), fontsize=9, pad=14)
        ax.grid(alpha=0.3, which="both")
    figure_legend(fig, axes)
    sub = ("baseline frontier traced over β (kl_coeff); points: median across seeds, 95% CIs both ways"
           if has_frontier else "no β sweep: the baseline is a single point, not a frontier")
    suptitle(fig, f"{RD_TITLE}{epoch_note(groups)}{note}\n{sub}")
    return fig


def _draw_frontier(ax, fr: pd.DataFrame, edge: TopEdge, baseline: str) -> list:
    """The baseline's frontier of one panel: a line through its β points, each labelled with β
    (and its diverged seeds); a β point whose median is infinite goes to the top edge. Returns
    the rates drawn."""
    color = variant_color(baseline)
    fr = fr.sort_values(BETA) if BETA in fr else fr
    x, xlo, xhi, y, ylo, yhi = _rd_cols(fr)
    ok = np.isfinite(x) & np.isfinite(y)
    n_seeds = pd.to_numeric(fr["n"], errors="coerce") if "n" in fr else pd.Series(dtype=float)
    n_txt = f", n={int(n_seeds.min())}" if n_seeds.notna().any() and n_seeds.nunique() == 1 else ""
    ax.errorbar(x[ok], y[ok], xerr=errorbars(x[ok], finite(xlo[ok]), finite(xhi[ok])),
                yerr=errorbars(y[ok], finite(ylo[ok]), finite(yhi[ok])), color=color,
                marker="s", ms=5, capsize=2.5, lw=1.6, label=f"{baseline} frontier over β{n_txt}")
    for r in fr.to_dict("records"):
        b = num(r.get(BETA))
        k, n = diverged_count(r)
        txt = (f"β={b:g}" if math.isfinite(b) else "β=?") + (f" ({k}/{n} div.)" if k else "")
        if math.isfinite(num(r.get(RATE))) and math.isfinite(num(r.get(DISTORTION))):
            ax.annotate(txt, (r[RATE], r[DISTORTION]), xytext=(4, 4), textcoords="offset points",
                        fontsize=6, color=color)
        else:
            edge.diverged(0.02, k, n, color, x_in_axes=True, who=f"{baseline} {txt}: ")
    return list(x[ok])


def _draw_groups(ax, shown: pd.DataFrame, edge: TopEdge, baseline: str, no_frontier: bool) -> list:
    """Every group of one panel as a point with its CIs, one path per setting besides γ through
    its points in γ order; γ written at the path's two ends only (labels on every point overprint
    where points cluster). Returns the rates drawn."""
    rates, labelled = [], set()
    for variant, vg in by_variant(shown):
        color = variant_color(variant)
        vary = [p for p in (*PRIOR_FIELDS, BETA) if p in vg and vg[p].nunique(dropna=True) > 1]
        others = [p for p in vary if p != "gamma"]
        for _, lg in (vg.groupby(others, dropna=False, sort=True) if others else [((), vg)]):
            recs = (lg.sort_values("gamma") if "gamma" in vary else lg).to_dict("records")
            path = [(num(r.get(RATE)), num(r.get(DISTORTION))) for r in recs]
            path = [(x, y) for x, y in path if math.isfinite(x) and math.isfinite(y)]
            if "gamma" in vary and len(path) >= 2:
                ax.plot(*zip(*path), color=color, lw=0.8, alpha=0.45, zorder=3)
            for i, r in enumerate(recs):
                w2 = is_w2(r)
                base_row = bool(r.get("is_baseline", variant == baseline))
                label = variant + (" (W2 objective)" if w2 else "") + equiv_suffix(pd.DataFrame([r]))
                if base_row and no_frontier:
                    label += " (baseline; no β sweep)"
                k, n = diverged_count(r)
                x, y = num(r.get(RATE)), num(r.get(DISTORTION))
                if math.isfinite(x) and math.isfinite(y):
                    _rd_point(ax, r, color, W2_MARKER if w2 else ("s" if base_row else "o"),
                              None if label in labelled else label, hollow=bool(equiv_label(r)))
                    rates.append(x)
                    ends = i in (0, len(recs) - 1)
                    txt = ", ".join(t for t in (setting_text(r, vary) if ends else "",
                                                f"{k}/{n} div." if k else "") if t)
                    if txt:
                        ax.annotate(txt, (x, y), xytext=(4, -8), textcoords="offset points", fontsize=6, color=color)
                else:
                    pn = setting_text(r, vary)
                    edge.diverged(0.02, k, n, color, x_in_axes=True,
                                  label=None if label in labelled else label + ": median ∞",
                                  who=f"{variant}{' ' + pn if pn else ''}: ")
                labelled.add(label)
    return rates
