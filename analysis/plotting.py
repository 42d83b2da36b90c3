"""The drawing kit every figure shares (matplotlib ``Figure``, never pyplot).

Figures are built on ``matplotlib.figure.Figure`` directly: no global state, no GUI backend (the
Agg canvas renders PNGs), so a notebook's backend is never switched. What the kit guarantees:
- one colour per variant in every panel of every figure (``VARIANT_COLORS``, registry order);
- nothing leaves a panel silently: ``TopEdge`` puts a ▲ on the panel's top edge, with "k/n
  diverged" beside it, for a group whose median is infinite, and a △ for a CI whose upper bound is;
- groups identical by construction (the comparison's ``equiv`` column) are labelled ≡
  (``equiv_suffix``), so two coincident lines do not read as independent evidence.
"""
from __future__ import annotations

import math
import textwrap
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from plvae.priors import PRIOR_FIELDS, VARIANT_NAMES, VARIANTS, W2

from analysis.columns import DIVERGED, EPOCH, n_of, num
from analysis.groups import context_text, contexts, group_label

MAX_PANELS = 6
DPI = 110

# One colour per variant, in registry order, for every figure: the same variant never changes
# colour between panels or figures.
VARIANT_COLORS = {name: to_hex(colormaps["tab10"](i % 10)) for i, name in enumerate(VARIANT_NAMES)}
OTHER_COLOR = to_hex(colormaps["tab10"](9))   # a variant the registry does not know (an old study)
DATA_GAMMA_COLOR = "0.25"
W2_MARKER = "D"


def variant_color(variant: str) -> str:
    """The variant's colour in every figure."""
    return VARIANT_COLORS.get(variant, OTHER_COLOR)


def variant_order(variant: str) -> tuple:
    return (VARIANT_NAMES.index(variant), "") if variant in VARIANT_NAMES else (len(VARIANT_NAMES), str(variant))


def by_variant(df: pd.DataFrame):
    """(variant, rows) in registry order: legends list variants in one order everywhere."""
    if df.empty or "variant" not in df:
        return []
    return sorted(df.groupby("variant", sort=False), key=lambda kv: variant_order(kv[0]))


def is_baseline_rows(df: pd.DataFrame, baseline: str) -> pd.Series:
    if "is_baseline" in df:
        return df["is_baseline"].fillna(False).astype(bool)
    return df["variant"] == baseline


def variant_contexts(df: pd.DataFrame, comparison) -> list:
    """Contexts holding at least one variant besides the baseline (the other β values of a β sweep
    hold the baseline alone: they belong to the rate–distortion figure, not to a panel here); all
    contexts when none does."""
    ctxs = contexts(df, comparison.context_keys)
    with_variants = [(c, g) for c, g in ctxs if (~is_baseline_rows(g, comparison.baseline)).any()]
    return with_variants or ctxs


def cap(ctxs: list) -> tuple[list, str]:
    """At most MAX_PANELS panels, and a title note saying so when there were more."""
    if len(ctxs) <= MAX_PANELS:
        return ctxs, ""
    return ctxs[:MAX_PANELS], f" (first {MAX_PANELS} of {len(ctxs)} contexts)"


MIN_WIDTH = 7.0  # inches: room for a two-line title above a single panel


def panels(n: int, width: float = 5.0, height: float = 3.8):
    fig = Figure(figsize=(max(width * n, MIN_WIDTH), height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, axes


def panel_titles(keys: list, ctxs: list, width: float = 5.0, fontsize: float = 9) -> list:
    """Each panel's context as a title that fits its panel: keys equal in every panel are left out
    (they say nothing about the difference; with two studies the long study names would print
    over each other), and what remains is wrapped to the panel's width."""
    values = [c if isinstance(c, tuple) else (c,) for c, _ in ctxs]
    keep = [i for i, _ in enumerate(keys) if len(values) < 2 or len({str(v[i]) for v in values}) > 1]
    chars = max(20, int(width * 130 / fontsize))
    return [textwrap.fill(context_text([keys[i] for i in keep], tuple(v[i] for i in keep)), chars)
            for v in values]


def suptitle(fig, text: str, fontsize: float = 10) -> None:
    """The figure's title, each line wrapped to the figure's width (a one-panel figure would clip it)."""
    chars = max(40, int(fig.get_figwidth() * 130 / fontsize))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.split("\n")), fontsize=fontsize)


def figure_legend(fig, axes, ncol: int = 3) -> None:
    """One legend for the figure, below the panels (inside a panel it covers the points that
    matter); each label once, though several panels draw it."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=ncol, fontsize=7,
                   frameon=False)


def log_if_wide(ax, values) -> None:
    """A log y-axis when the finite positive values span more than two decades (a collapsed
    prior's loss 10^5 times the others would flatten every other line)."""
    v = np.asarray([x for x in values if isinstance(x, (int, float)) and math.isfinite(x) and x > 0])
    if len(v) >= 2 and v.max() / v.min() > 100:
        ax.set_yscale("log")


def plain_log_ticks(axis, decades: float = 2.0) -> None:
    """Log-scale ticks written as plain numbers (no overprinted 4x10^0): at 1, 2, 3, 5 x 10^k over
    a narrow range, at 10^k only over more than two decades (else the labels overprint)."""
    subs = (1.0, 2.0, 3.0, 5.0) if decades <= 2 else (1.0,)
    axis.set_major_locator(LogLocator(subs=subs, numticks=12 if decades <= 2 else 5))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def uses_gamma(variant: str) -> bool:
    v = VARIANTS.get(variant)
    return bool(v and v.uses("gamma"))


def is_w2(row: dict) -> bool:
    obj = row.get("objective")
    if isinstance(obj, str) and obj:
        return obj.lower() == "w2"
    v = VARIANTS.get(row.get("variant"))
    return bool(v and v.divergence == W2)


def other_varying(groups: pd.DataFrame, variant: str) -> list:
    """Prior parameters besides gamma that take several values for this variant."""
    g = groups[groups["variant"] == variant]
    return [p for p in PRIOR_FIELDS if p != "gamma" and p in g and g[p].nunique(dropna=True) > 1]


def finite(s: pd.Series) -> pd.Series:
    s = s.astype(float)
    return s.where(np.isfinite(s))


def diverged_count(row: dict) -> tuple[int, int]:
    """(seeds diverged, seeds) of a group row; from the divergence rate when n_diverged is absent."""
    n = num(row.get("n"))
    n = int(n) if math.isfinite(n) else 0
    k = num(row.get(n_of(DIVERGED)))
    if not math.isfinite(k):
        k = num(row.get(DIVERGED)) * n
    return (int(round(k)) if math.isfinite(k) else 0), n


def equiv_label(row: dict) -> str:
    e = row.get("equiv")
    return e.strip() if isinstance(e, str) else ""


def equiv_partner(equiv: str, variant: str) -> str:
    """What a group is identical to, from an ``equiv`` label such as
    "powerlaw (γ=0.5) ≡ powerlaw_clamp (γ=0.5, min_decay=0.001)": the other side(s), without γ
    (a line's points differ in γ alone), e.g. "powerlaw_clamp (min_decay=0.001)"."""
    parts = [p.strip() for p in equiv.split("≡") if p.strip()]

    def split(part):
        name, _, rest = part.partition(" (")
        params = [q.strip() for q in rest.rstrip(")").split(",") if q.strip()] if rest else []
        return name.strip(), [q for q in params if not q.startswith(("γ=", "gamma="))]

    sides = [split(p) for p in parts]
    others = [sd for sd in sides if sd[0] != variant]
    if not others:  # the same variant at another setting
        others = sides[1:] or sides
    return ", ".join(name + (f" ({', '.join(ps)})" if ps else "") for name, ps in others)


def equiv_suffix(rows: pd.DataFrame, x: str = "gamma") -> str:
    """' ≡ B' when the rows (one line, or one point) are identical by construction to group(s) B;
    ' (≡ B at γ = 0.5, 1)' when only some of a line's points are."""
    if "equiv" not in rows or rows.empty:
        return ""
    recs = rows.to_dict("records")
    at: dict = {}
    for r in recs:
        e = equiv_label(r)
        if e:
            at.setdefault(equiv_partner(e, str(r.get("variant", ""))), []).append(r.get(x))
    if not at:
        return ""
    if len(at) == 1 and sum(len(v) for v in at.values()) == len(recs):
        return f" ≡ {next(iter(at))}"
    sym = "γ" if x == "gamma" else x
    parts = []
    for partner, xs in at.items():
        where = ", ".join(f"{v:g}" for v in xs if isinstance(v, (int, float, np.number)) and not pd.isna(v))
        parts.append(f"{partner} at {sym} = {where}" if where else partner)
    return " (≡ " + "; ".join(parts) + ")"


class TopEdge:
    """Markers on one panel's top edge (axes y = 1, never clipped) for what has left the plot;
    texts at one x are stacked so that they do not overprint."""

    def __init__(self, ax):
        self.ax = ax
        self.used: dict = {}

    def _slot(self, key) -> int:
        self.used[key] = self.used.get(key, -1) + 1
        return self.used[key]

    def diverged(self, x: float, k: int, n: int, color: str, x_in_axes: bool = False,
                 label: Optional[str] = None, who: str = "") -> None:
        """▲ for an infinite median, with 'k/n diverged'."""
        ax = self.ax
        trans = ax.transAxes if x_in_axes else ax.get_xaxis_transform()
        ax.plot([x], [1.0], ls="none", marker="^", ms=7, color=color, transform=trans, clip_on=False,
                zorder=5, label=label)
        j = self._slot(("axes" if x_in_axes else "data", round(float(x), 9)))
        ax.annotate(f"{who}{k}/{n} diverged", xy=(x, 1.0), xycoords=trans, xytext=(3, -3 - 8 * j),
                    textcoords="offset points", ha="left", va="top", fontsize=6, color=color,
                    annotation_clip=False, zorder=5)

    def unbounded(self, x: float, color: str, x_in_axes: bool = False) -> None:
        """△ for a CI whose upper bound is infinite (the median is finite)."""
        trans = self.ax.transAxes if x_in_axes else self.ax.get_xaxis_transform()
        self.ax.plot([x], [1.0], ls="none", marker="^", ms=6, mfc="none", color=color,
                     transform=trans, clip_on=False, zorder=5)


def errorbars(y, ylo, yhi):
    return np.vstack([(y - ylo).clip(lower=0).fillna(0).to_numpy(float),
                      (yhi - y).clip(lower=0).fillna(0).to_numpy(float)])


def epoch_note(groups: pd.DataFrame) -> str:
    """' (epoch k)' when every group is compared at one epoch, else a note that epochs differ."""
    if EPOCH not in groups:
        return ""
    e = pd.to_numeric(groups[EPOCH], errors="coerce").dropna().unique()
    if len(e) == 1:
        return f" (epoch {e[0]:g})"
    return " (at equal epochs per context)" if len(e) else ""


def gamma_lines(ax, cg: pd.DataFrame, col: str, lo: str, hi: str, baseline_label_suffix=""):
    """One line per variant (and per other prior setting) against gamma; variants without gamma
    as a horizontal line with their CI as a band. Infinite medians and bounds go to the top edge."""
    edge = TopEdge(ax)
    n_flat = 0
    for variant, vg in by_variant(cg):
        color = variant_color(variant)
        vary = other_varying(cg, variant)
        w2 = " (W2 objective)" if is_w2(vg.iloc[0].to_dict()) else ""
        if uses_gamma(variant) and "gamma" in vg and vg["gamma"].notna().any():
            lines = vg.groupby(vary, dropna=False, sort=True) if vary else [((), vg)]
            for j, (_, lg) in enumerate(lines):
                lg = lg.sort_values("gamma")
                y, ylo, yhi = (finite(lg[c]) for c in (col, lo, hi))
                label = group_label(variant, lg.iloc[0].to_dict(), vary) + w2 + equiv_suffix(lg)
                dup = bool(equiv_suffix(lg))
                ax.errorbar(lg["gamma"], y, yerr=errorbars(y, ylo, yhi), marker="o", ms=4, capsize=3,
                            color=color, alpha=1.0 - 0.25 * (j % 3), label=label,
                            mfc="none" if dup else color, ls="--" if dup else "-")
                for r in lg.to_dict("records"):
                    v, h = num(r[col]), num(r[hi])
                    if math.isinf(v):
                        k, n = diverged_count(r)
                        edge.diverged(r["gamma"], k, n, color)
                    elif math.isinf(h):
                        edge.unbounded(r["gamma"], color)
        else:
            for r in vg.sort_values(vary or ["variant"]).to_dict("records"):
                label = (group_label(variant, r, vary) + baseline_label_suffix + w2
                         + equiv_suffix(pd.DataFrame([r])))
                v, vlo, vhi = num(r[col]), num(r[lo]), num(r[hi])
                if math.isfinite(v):
                    ax.axhline(v, color=color, ls="--", label=label)
                    if math.isfinite(vlo) and math.isfinite(vhi):
                        ax.axhspan(vlo, vhi, color=color, alpha=0.12)
                    elif math.isinf(vhi):
                        edge.unbounded(0.98 - 0.04 * n_flat, color, x_in_axes=True)
                        n_flat += 1
                elif math.isinf(v):
                    k, n = diverged_count(r)
                    edge.diverged(0.02 + 0.3 * (n_flat % 3), k, n, color, x_in_axes=True,
                                  label=f"{label}: median ∞", who=f"{r['variant']}: ")
                    n_flat += 1
    ax.set_xlabel("γ (prior decay exponent)")
    return edge
