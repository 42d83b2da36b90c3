"""Figures of a study (matplotlib, PNG).

Each ``plot_*`` returns a ``matplotlib.figure.Figure`` (a notebook shows it; ``fig.savefig``
writes it), or None when the study holds nothing to plot. Figures are built on
``matplotlib.figure.Figure`` directly, not pyplot: no global state, no GUI backend (the Agg
canvas renders PNGs), so a notebook's backend is never switched. ``save_figures`` writes every
figure that applies and says why the others were skipped.

Figures a reader can trust:
- one colour per variant in every panel of every figure (``VARIANT_COLORS``, registry order);
- nothing leaves a panel silently: a group whose median is infinite (at least half its seeds
  diverged) is a ▲ on the panel's top edge with "k/n diverged" beside it; a △ marks a CI whose
  upper bound is infinite;
- groups identical by construction (the comparison's ``equiv`` column) are labelled ≡, so two
  coincident lines do not read as independent evidence;
- learning-curve medians count diverged seeds as ∞ from the epoch they diverged and say how many;
- the γ figures mark the data-matched prior γ = α/2.
"""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from plvae import metrics as M
from plvae.priors import PRIOR_FIELDS as VARIANT_PARAMS, VARIANT_NAMES, VARIANTS, W2

from analysis.compare import Comparison
from analysis.columns import DIVERGED, FINAL
from analysis.curves import trial_curve
from analysis.load import STUDY, TRIAL_ID, Study, final, initial

MAX_PANELS = 6
DPI = 110

# One colour per variant, in registry order, for every figure: the same variant never changes
# colour between panels or figures.
VARIANT_COLORS = {name: to_hex(colormaps["tab10"](i % 10)) for i, name in enumerate(VARIANT_NAMES)}
OTHER_COLOR = to_hex(colormaps["tab10"](9))   # a variant the registry does not know (an old study)
DATA_GAMMA_COLOR = "0.25"
W2_MARKER = "D"
RD_TITLE = ("Rate–distortion: distortion = val_recon_mu, "
            "rate = KL summed over latent dims (nats/example)")


def variant_color(variant: str) -> str:
    """The variant's colour in every figure."""
    return VARIANT_COLORS.get(variant, OTHER_COLOR)


def _variant_order(variant: str) -> tuple:
    return (VARIANT_NAMES.index(variant), "") if variant in VARIANT_NAMES else (len(VARIANT_NAMES), str(variant))


def _by_variant(df: pd.DataFrame):
    """(variant, rows) in registry order: legends list variants in one order everywhere."""
    if df.empty or "variant" not in df:
        return []
    return sorted(df.groupby("variant", sort=False), key=lambda kv: _variant_order(kv[0]))


def _variant_label(variant: str, row: dict, vary: list) -> str:
    extra = [f"{'γ' if p == 'gamma' else p}={row[p]:g}" for p in vary if p in row and not pd.isna(row[p])]
    return variant + (f" ({', '.join(extra)})" if extra else "")


def _ctx_title(keys: list, ctx) -> str:
    ctx = ctx if isinstance(ctx, tuple) else (ctx,)
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in zip(keys, ctx))


def _all_contexts(df: pd.DataFrame, keys: list) -> list:
    keys = [k for k in keys if k in df]
    if not keys:
        return [((), df)]
    return list(df.groupby(keys, dropna=False, sort=True))


def _is_baseline(df: pd.DataFrame, baseline: str) -> pd.Series:
    if "is_baseline" in df:
        return df["is_baseline"].fillna(False).astype(bool)
    return df["variant"] == baseline


def _variant_contexts(df: pd.DataFrame, comparison) -> list:
    """Contexts holding at least one variant besides the baseline (the other β values of a β sweep
    hold the baseline alone: they belong to the rate–distortion figure, not to a panel here); all
    contexts when none does."""
    ctxs = _all_contexts(df, comparison.context_keys)
    with_variants = [(c, g) for c, g in ctxs if (~_is_baseline(g, comparison.baseline)).any()]
    return with_variants or ctxs


def _cap(ctxs: list) -> tuple[list, str]:
    """At most MAX_PANELS panels, and a title note saying so when there were more."""
    if len(ctxs) <= MAX_PANELS:
        return ctxs, ""
    return ctxs[:MAX_PANELS], f" (first {MAX_PANELS} of {len(ctxs)} contexts)"


MIN_WIDTH = 7.0  # inches: room for a two-line title above a single panel


def _panels(n: int, width: float = 5.0, height: float = 3.8):
    fig = Figure(figsize=(max(width * n, MIN_WIDTH), height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, axes


def _suptitle(fig, text: str, fontsize: float = 10) -> None:
    """The figure's title, each line wrapped to the figure's width (a one-panel figure would clip it)."""
    chars = max(40, int(fig.get_figwidth() * 130 / fontsize))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in text.split("\n")), fontsize=fontsize)


def _figure_legend(fig, axes, ncol: int = 3) -> None:
    """One legend for the figure, below the panels (inside a panel it covers the points that
    matter); each label once, though several panels draw it."""
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=ncol, fontsize=7,
                   frameon=False)


def _log_if_wide(ax, values) -> None:
    """A log y-axis when the finite positive values span more than two decades (a collapsed
    prior's loss 10^5 times the others would flatten every other line)."""
    v = np.asarray([x for x in values if isinstance(x, (int, float)) and math.isfinite(x) and x > 0])
    if len(v) >= 2 and v.max() / v.min() > 100:
        ax.set_yscale("log")


def _plain_log_ticks(axis, decades: float = 2.0) -> None:
    """Log-scale ticks written as plain numbers (no overprinted 4x10^0): at 1, 2, 3, 5 x 10^k over
    a narrow range, at 10^k only over more than two decades (else the labels overprint)."""
    subs = (1.0, 2.0, 3.0, 5.0) if decades <= 2 else (1.0,)
    axis.set_major_locator(LogLocator(subs=subs, numticks=12 if decades <= 2 else 5))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _uses_gamma(variant: str) -> bool:
    v = VARIANTS.get(variant)
    return bool(v and v.uses("gamma"))


def _is_w2(row: dict) -> bool:
    obj = row.get("objective")
    if isinstance(obj, str) and obj:
        return obj.lower() == "w2"
    v = VARIANTS.get(row.get("variant"))
    return bool(v and v.divergence == W2)


def _other_varying(groups: pd.DataFrame, variant: str) -> list:
    """Prior parameters besides gamma that take several values for this variant."""
    g = groups[groups["variant"] == variant]
    return [p for p in VARIANT_PARAMS if p != "gamma" and p in g and g[p].nunique(dropna=True) > 1]


def _finite(s: pd.Series) -> pd.Series:
    s = s.astype(float)
    return s.where(np.isfinite(s))


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _diverged_count(row: dict) -> tuple[int, int]:
    """(seeds diverged, seeds) of a group row; from the divergence rate when n_diverged is absent."""
    n = _num(row.get("n"))
    n = int(n) if math.isfinite(n) else 0
    k = _num(row.get("n_diverged"))
    if not math.isfinite(k):
        k = _num(row.get(DIVERGED)) * n
    return (int(round(k)) if math.isfinite(k) else 0), n


def _equiv(row: dict) -> str:
    e = row.get("equiv")
    return e.strip() if isinstance(e, str) else ""


def _equiv_partner(equiv: str, variant: str) -> str:
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


def _equiv_suffix(rows: pd.DataFrame, x: str = "gamma") -> str:
    """' ≡ B' when the rows (one line, or one point) are identical by construction to group(s) B;
    ' (≡ B at γ = 0.5, 1)' when only some of a line's points are."""
    if "equiv" not in rows or rows.empty:
        return ""
    recs = rows.to_dict("records")
    at: dict = {}
    for r in recs:
        e = _equiv(r)
        if e:
            at.setdefault(_equiv_partner(e, str(r.get("variant", ""))), []).append(r.get(x))
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


class _TopEdge:
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


def _errorbars(y, ylo, yhi):
    return np.vstack([(y - ylo).clip(lower=0).fillna(0).to_numpy(float),
                      (yhi - y).clip(lower=0).fillna(0).to_numpy(float)])


def _data_gamma_line(ax, comparison) -> None:
    """A dotted vertical line at the data-matched γ = α/2, when the study measured α."""
    g = _num(getattr(comparison, "data_gamma", math.nan))
    a = _num(getattr(comparison, "data_alpha", math.nan))
    if not math.isfinite(g):
        return
    if not math.isfinite(a):
        a = 2 * g
    ax.axvline(g, color=DATA_GAMMA_COLOR, ls=":", lw=1.4, label=f"γ = α/2 (α = {a:.2f})")


def _gamma_lines(ax, cg: pd.DataFrame, col: str, lo: str, hi: str, baseline_label_suffix=""):
    """One line per variant (and per other prior setting) against gamma; variants without gamma
    as a horizontal line with their CI as a band. Infinite medians and bounds go to the top edge."""
    edge = _TopEdge(ax)
    n_flat = 0
    for variant, vg in _by_variant(cg):
        color = variant_color(variant)
        vary = _other_varying(cg, variant)
        w2 = " (W2 objective)" if _is_w2(vg.iloc[0].to_dict()) else ""
        if _uses_gamma(variant) and "gamma" in vg and vg["gamma"].notna().any():
            lines = vg.groupby(vary, dropna=False, sort=True) if vary else [((), vg)]
            for j, (_, lg) in enumerate(lines):
                lg = lg.sort_values("gamma")
                y, ylo, yhi = (_finite(lg[c]) for c in (col, lo, hi))
                label = _variant_label(variant, lg.iloc[0].to_dict(), vary) + w2 + _equiv_suffix(lg)
                dup = bool(_equiv_suffix(lg))
                ax.errorbar(lg["gamma"], y, yerr=_errorbars(y, ylo, yhi), marker="o", ms=4, capsize=3,
                            color=color, alpha=1.0 - 0.25 * (j % 3), label=label,
                            mfc="none" if dup else color, ls="--" if dup else "-")
                for r in lg.to_dict("records"):
                    v, h = _num(r[col]), _num(r[hi])
                    if math.isinf(v):
                        k, n = _diverged_count(r)
                        edge.diverged(r["gamma"], k, n, color)
                    elif math.isinf(h):
                        edge.unbounded(r["gamma"], color)
        else:
            for r in vg.sort_values(vary or ["variant"]).to_dict("records"):
                label = (_variant_label(variant, r, vary) + baseline_label_suffix + w2
                         + _equiv_suffix(pd.DataFrame([r])))
                v, vlo, vhi = _num(r[col]), _num(r[lo]), _num(r[hi])
                if math.isfinite(v):
                    ax.axhline(v, color=color, ls="--", label=label)
                    if math.isfinite(vlo) and math.isfinite(vhi):
                        ax.axhspan(vlo, vhi, color=color, alpha=0.12)
                    elif math.isinf(vhi):
                        edge.unbounded(0.98 - 0.04 * n_flat, color, x_in_axes=True)
                        n_flat += 1
                elif math.isinf(v):
                    k, n = _diverged_count(r)
                    edge.diverged(0.02 + 0.3 * (n_flat % 3), k, n, color, x_in_axes=True,
                                  label=f"{label}: median ∞", who=f"{r['variant']}: ")
                    n_flat += 1
    ax.set_xlabel("γ (prior decay exponent)")
    return edge


_EDGE_NOTE = "▲ on the top edge: median ∞ (≥ half the seeds diverged); △: CI upper bound ∞"


def plot_gamma_vs_final(comparison: Comparison) -> Optional[Figure]:
    """γ against the final value of the compared metric: median across seeds with its bootstrap
    95% CI, one line per variant; the baseline as a dashed line with its CI band. A ▲ on the top
    edge with "k/n diverged" marks an infinite median (diverged seeds count as ∞), a △ an
    infinite upper bound; a dotted line marks the data-matched γ = α/2."""
    groups = comparison.groups
    if groups.empty or "gamma" not in groups or FINAL not in groups or not groups[FINAL].notna().any():
        return None
    ctxs, note = _cap(_variant_contexts(groups, comparison))
    fig, axes = _panels(len(ctxs), height=5.2)
    epoch = _epoch_note(groups)
    for ax, (ctx, cg) in zip(axes, ctxs):
        _gamma_lines(ax, cg, FINAL, f"{FINAL}_low", f"{FINAL}_high", " (no γ)")
        _data_gamma_line(ax, comparison)
        _log_if_wide(ax, pd.to_numeric(cg[FINAL], errors="coerce"))
        ax.set_ylabel(f"final {comparison.metric} (median, 95% CI)")
        ax.set_title(_ctx_title(comparison.context_keys, ctx), fontsize=9, pad=14)
        ax.grid(alpha=0.3, which="both")
    _figure_legend(fig, axes)
    _suptitle(fig, f"Final {comparison.metric}{epoch} against γ{note}\n{_EDGE_NOTE}")
    return fig


def _epoch_note(groups: pd.DataFrame) -> str:
    if "epoch" not in groups:
        return ""
    e = pd.to_numeric(groups["epoch"], errors="coerce").dropna().unique()
    if len(e) == 1:
        return f" (epoch {e[0]:g})"
    return " (at equal epochs per context)" if len(e) else ""


def plot_divergence(comparison: Comparison) -> Optional[Figure]:
    """Share of trials that diverged against γ, per variant, with Wilson 95% intervals."""
    groups = comparison.groups
    if groups.empty or "gamma" not in groups or DIVERGED not in groups:
        return None
    ctxs, note = _cap(_variant_contexts(groups, comparison))
    fig, axes = _panels(len(ctxs))
    for ax, (ctx, cg) in zip(axes, ctxs):
        _gamma_lines(ax, cg, DIVERGED, f"{DIVERGED}_low", f"{DIVERGED}_high", " (no γ)")
        _data_gamma_line(ax, comparison)
        ax.set_ylabel("divergence rate (95% Wilson CI)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(_ctx_title(comparison.context_keys, ctx), fontsize=9)
        ax.grid(alpha=0.3)
    _figure_legend(fig, axes)
    _suptitle(fig, f"Divergence rate against γ{note}", fontsize=11)
    return fig


def _group_mask(pt: pd.DataFrame, row: dict, keys: list) -> np.ndarray:
    mask = np.ones(len(pt), bool)
    for k in keys:
        if k not in pt:
            continue
        v = row.get(k)
        mask &= (pt[k].isna()).to_numpy() if v is None or pd.isna(v) else (pt[k] == v).to_numpy()
    return mask


def plot_learning_curves(study: Study, comparison: Comparison) -> Optional[Figure]:
    """Validation curves of each variant at its best setting (the headline's group): every seed
    thin, the median across seeds thick; epoch 0 is the pre-training value when logged. A seed
    that diverged counts as ∞ in the median from the epoch it diverged on (leaving it out would
    let the median look good by losing its bad seeds), and the legend says how many did; a ▲ on
    the top edge marks where the median becomes ∞."""
    head = comparison.headline
    if head.empty:
        return None
    metric = comparison.metric
    pt = comparison.per_trial
    hist = {tid: h for tid, h in study.history.groupby(TRIAL_ID, sort=False)}
    init = study.trials.set_index(TRIAL_ID)[initial(metric)] if initial(metric) in study.trials else None
    ctxs, note = _cap(_variant_contexts(head, comparison))
    fig, axes = _panels(len(ctxs), height=5.2)
    drawn = False
    for ax, (ctx, ch) in zip(axes, ctxs):
        edge = _TopEdge(ax)
        for r in sorted(ch.to_dict("records"), key=lambda r: _variant_order(r["variant"])):
            mask = _group_mask(pt, r, comparison.group_keys)
            color = variant_color(r["variant"])
            curves, n_div = [], 0
            for rec in pt.loc[mask].to_dict("records"):
                tid = rec[TRIAL_ID]
                if tid not in hist:
                    continue
                i0 = float(init[tid]) if init is not None and pd.notna(init.get(tid)) else math.nan
                x, y, _ = trial_curve(hist[tid], metric, i0)
                ax.plot(x, y, color=color, lw=0.8, alpha=0.35)
                s = pd.Series(y, index=x)
                if bool(rec.get(DIVERGED, False)):
                    n_div += 1
                    s = s.where(np.isfinite(s), np.inf)  # the epoch it diverged on, and after
                    s.attrs["diverged"] = True
                curves.append(s)
            if not curves:
                continue
            table = pd.concat(curves, axis=1).sort_index()
            for j, s in enumerate(curves):  # a diverged seed stays ∞ to the last epoch shown
                if s.attrs.get("diverged"):
                    last = s.index.max()
                    table.loc[table.index > last, j] = np.inf
            med = table.median(axis=1, skipna=True)
            vary = [p for p in VARIANT_PARAMS if p in r and not pd.isna(r[p])]
            w2 = " (W2 objective)" if _is_w2(r) else ""
            label = (f"{_variant_label(r['variant'], r, vary)}{w2}{_equiv_suffix(pd.DataFrame([r]))}, "
                     f"n={len(curves)}, {n_div} diverged")
            fin = med.where(np.isfinite(med))
            ax.plot(fin.index, fin.to_numpy(), color=color, lw=2.2, marker="o", ms=3, label=label)
            if np.isinf(med).any():
                edge.diverged(float(med.index[np.isinf(med.to_numpy())][0]), n_div, len(curves), color,
                              who="median ∞: ")
            drawn = True
        if "epoch" in ch:
            e = pd.to_numeric(ch["epoch"], errors="coerce").dropna().unique()
            if len(e) == 1:
                ax.axvline(e[0], color="0.5", lw=1, ls="-.", label=f"compared at epoch {e[0]:g}")
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_ylabel(metric)
        ax.set_title(_ctx_title(comparison.context_keys, ctx), fontsize=9, pad=14)
        ax.grid(alpha=0.3, which="both")
        # below the panel: the curves fill its corners and its top edge carries the ∞ markers
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    if not drawn:
        return None
    _suptitle(fig, f"Learning curves at each variant's best setting ({metric}; median across seeds, "
                   f"diverged seeds as ∞){note}")
    return fig


def plot_gamma_min_decay(comparison: Comparison) -> Optional[Figure]:
    """Heatmap of the median final value over γ × min_decay, one panel per variant that uses
    both (first context where one does, when there are several); None unless both vary. A cell
    whose median is infinite says how many of its seeds diverged."""
    g0 = comparison.groups
    if g0.empty or "gamma" not in g0 or "min_decay" not in g0:
        return None

    def grid_variants(g):
        return [v for v, vg in _by_variant(g) if vg["gamma"].nunique() > 1 and vg["min_decay"].nunique() > 1]

    ctxs = _all_contexts(g0, comparison.context_keys)
    found = next(((c, g) for c, g in ctxs if grid_variants(g)), None)
    if found is None:
        return None
    ctx, g = found
    variants = grid_variants(g)
    fig, axes = _panels(len(variants[:MAX_PANELS]), width=4.8)
    for ax, variant in zip(axes, variants):
        vg = g[g["variant"] == variant]
        table = vg.pivot_table(index="min_decay", columns="gamma", values=FINAL, aggfunc="median")
        values = table.to_numpy(float)
        shown = np.where(np.isfinite(values), values, np.nan)  # an infinite median (diverged) stays blank
        im = ax.imshow(shown, aspect="auto", origin="lower", cmap="viridis")
        ax.set_xticks(range(table.shape[1]), [f"{c:g}" for c in table.columns], fontsize=7)
        ax.set_yticks(range(table.shape[0]), [f"{c:g}" for c in table.index], fontsize=7)
        mid = np.nanmean(shown) if np.isfinite(shown).any() else 0.0
        for (yi, xi), v in np.ndenumerate(values):
            if np.isinf(v):
                cell = vg[(vg["min_decay"] == table.index[yi]) & (vg["gamma"] == table.columns[xi])]
                k, n = _diverged_count(cell.iloc[0].to_dict()) if len(cell) else (0, 0)
                ax.text(xi, yi, f"∞\n{k}/{n} diverged", ha="center", va="center", fontsize=6)
            elif np.isfinite(v):
                ax.text(xi, yi, f"{v:.3g}", ha="center", va="center", fontsize=6, color="k" if v > mid else "w")
        ax.set_xlabel("γ")
        ax.set_ylabel("min_decay")
        ax.set_title(variant, fontsize=9, color=variant_color(variant))
        fig.colorbar(im, ax=ax, label=f"final {comparison.metric} (median)")
    where = _ctx_title(comparison.context_keys, ctx) if comparison.context_keys else ""
    fig.suptitle("γ × min_decay" + (f" ({where})" if where else ""))
    return fig


def plot_latent_spectrum(study: Study) -> Optional[Figure]:
    """Measured power-law exponent of the latent code's spectrum (``latent_alpha``, last epoch)
    against γ, per variant, with the prior's variance exponent 2γ (s_k = k^-γ scales standard
    deviations) and the data's exponent when study.json records it (the matched prior then sits
    at γ = α/2, dotted)."""
    col = final(M.LATENT_ALPHA)
    t = study.trials
    if col not in t or "gamma" not in t or not np.isfinite(t[col].astype(float)).any():
        return None
    ok = t[np.isfinite(t[col].astype(float))]
    # Several studies loaded together (load_studies): one panel each, never pooled.
    per_study = STUDY in ok and ok[STUDY].nunique() > 1
    groups = _all_contexts(ok, [STUDY]) if per_study else [((), ok)]
    fig, axes = _panels(len(groups), width=6.0, height=4.2)
    gs = np.linspace(float(t["gamma"].min()), max(float(t["gamma"].max()), 1e-9), 50)
    for ax, (ctx, g) in zip(axes, groups):
        for variant, vg in _by_variant(g):
            color = variant_color(variant)
            ax.scatter(vg["gamma"], vg[col], s=12, color=color, alpha=0.5)
            med = vg.groupby("gamma")[col].median()
            ax.plot(med.index, med.to_numpy(), marker="o", color=color, label=variant)
        ax.plot(gs, 2 * gs, "k--", lw=1, label="prior: 2γ")
        for name, alpha in sorted(study.data_alpha.items()):
            if isinstance(alpha, (int, float)) and math.isfinite(alpha):
                ax.axhline(alpha, color="0.4", ls=":", lw=1, label=f"data α ({name}) = {alpha:.2f}")
                ax.axvline(alpha / 2, color=DATA_GAMMA_COLOR, ls=":", lw=1.4, label=f"γ = α/2 (α = {alpha:.2f})")
        if per_study:
            ax.set_title(_ctx_title([STUDY], ctx), fontsize=9)
        ax.set_xlabel("γ")
        ax.set_ylabel("latent spectrum exponent α (final epoch)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Latent spectrum against the prior's")
    return fig


# ------------------------------------------------------------------------ rate–distortion

def _matches(df: pd.DataFrame, keys: list, ctx: tuple) -> pd.Series:
    """Rows of df in context ctx over keys (NaN equals NaN; floats compared with a tolerance)."""
    m = pd.Series(True, index=df.index)
    for k, v in zip(keys, ctx):
        if k not in df:
            continue
        col = df[k]
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            m &= col.isna()
        elif isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
            num = pd.to_numeric(col, errors="coerce").astype(float)
            m &= pd.Series(np.isclose(num, float(v), rtol=1e-9, atol=0.0), index=df.index)
        else:
            m &= col == v
    return m


def _rd_cols(df: pd.DataFrame):
    return [df[c].astype(float) if c in df else pd.Series(np.nan, index=df.index)
            for c in ("rate", "rate_low", "rate_high", "distortion", "distortion_low", "distortion_high")]


def _rd_point(ax, r: dict, color: str, marker: str, label: Optional[str], hollow: bool = False):
    x, xlo, xhi, y, ylo, yhi = (_num(r.get(c)) for c in
                                ("rate", "rate_low", "rate_high", "distortion", "distortion_low", "distortion_high"))

    def err(v, lo, hi):
        return [[max(v - lo, 0.0) if math.isfinite(lo) else 0.0], [max(hi - v, 0.0) if math.isfinite(hi) else 0.0]]

    ax.errorbar([x], [y], xerr=err(x, xlo, xhi), yerr=err(y, ylo, yhi), marker=marker, ms=6, capsize=2.5,
                color=color, mfc="none" if hollow else color, ls="none", label=label, zorder=4)


def _point_note(r: dict, keys: list) -> str:
    parts = [f"{'γ' if p == 'gamma' else ('β' if p == 'kl_coeff' else p)}={r[p]:g}"
             for p in keys if p in r and not pd.isna(r[p])]
    return ", ".join(parts)


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
    if groups.empty or "rate" not in groups or "distortion" not in groups:
        return None
    rate, _, _, dist, _, _ = _rd_cols(groups)
    if not (rate.notna() & dist.notna()).any():
        return None
    frontier = getattr(comparison, "frontier", None)
    frontier = frontier if isinstance(frontier, pd.DataFrame) else pd.DataFrame()
    fkeys = list(getattr(comparison, "frontier_keys", None)
                 or [k for k in comparison.context_keys if k != "kl_coeff"])
    fkeys = [k for k in fkeys if k in groups]
    has_frontier = not frontier.empty and "rate" in frontier and "distortion" in frontier
    ctxs, note = _cap(_all_contexts(groups, fkeys))
    fig, axes = _panels(len(ctxs), width=5.4, height=5.6)
    base_color = variant_color(comparison.baseline)
    for ax, (ctx, cg) in zip(axes, ctxs):
        ctx = ctx if isinstance(ctx, tuple) else (ctx,)
        edge = _TopEdge(ax)
        rates = []
        is_base = _is_baseline(cg, comparison.baseline)
        fr = frontier[_matches(frontier, fkeys, ctx)] if has_frontier else pd.DataFrame()
        if not fr.empty:
            fr = fr.sort_values("kl_coeff") if "kl_coeff" in fr else fr
            x, xlo, xhi, y, ylo, yhi = _rd_cols(fr)
            ok = np.isfinite(x) & np.isfinite(y)
            n_seeds = pd.to_numeric(fr["n"], errors="coerce") if "n" in fr else pd.Series(dtype=float)
            n_txt = f", n={int(n_seeds.min())}" if n_seeds.notna().any() and n_seeds.nunique() == 1 else ""
            ax.errorbar(x[ok], y[ok], xerr=_errorbars(x[ok], _finite(xlo[ok]), _finite(xhi[ok])),
                        yerr=_errorbars(y[ok], _finite(ylo[ok]), _finite(yhi[ok])), color=base_color,
                        marker="s", ms=5, capsize=2.5, lw=1.6,
                        label=f"{comparison.baseline} frontier over β{n_txt}")
            rates += list(x[ok])
            for r in fr.to_dict("records"):
                b = _num(r.get("kl_coeff"))
                k, n = _diverged_count(r)
                txt = (f"β={b:g}" if math.isfinite(b) else "β=?") + (f" ({k}/{n} div.)" if k else "")
                if math.isfinite(_num(r.get("rate"))) and math.isfinite(_num(r.get("distortion"))):
                    ax.annotate(txt, (r["rate"], r["distortion"]), xytext=(4, 4), textcoords="offset points",
                                fontsize=6, color=base_color)
                else:
                    edge.diverged(0.02, k, n, base_color, x_in_axes=True, who=f"{comparison.baseline} {txt}: ")
        shown = cg if fr.empty else cg[~is_base]  # the frontier holds the baseline's groups
        labelled = set()
        for variant, vg in _by_variant(shown):
            color = variant_color(variant)
            vary = [p for p in (*VARIANT_PARAMS, "kl_coeff") if p in vg and vg[p].nunique(dropna=True) > 1]
            others = [p for p in vary if p != "gamma"]
            # one path per setting besides γ, through its points in γ order; γ written at its two
            # ends only (labels on every point overprint where points cluster)
            for _, lg in (vg.groupby(others, dropna=False, sort=True) if others else [((), vg)]):
                recs = (lg.sort_values("gamma") if "gamma" in vary else lg).to_dict("records")
                path = [(_num(r.get("rate")), _num(r.get("distortion"))) for r in recs]
                path = [(x, y) for x, y in path if math.isfinite(x) and math.isfinite(y)]
                if "gamma" in vary and len(path) >= 2:
                    ax.plot(*zip(*path), color=color, lw=0.8, alpha=0.45, zorder=3)
                for i, r in enumerate(recs):
                    w2 = _is_w2(r)
                    base_row = bool(r.get("is_baseline", variant == comparison.baseline))
                    label = variant + (" (W2 objective)" if w2 else "") + _equiv_suffix(pd.DataFrame([r]))
                    if base_row and fr.empty:
                        label += " (baseline; no β sweep)"
                    k, n = _diverged_count(r)
                    x, y = _num(r.get("rate")), _num(r.get("distortion"))
                    if math.isfinite(x) and math.isfinite(y):
                        _rd_point(ax, r, color, W2_MARKER if w2 else ("s" if base_row else "o"),
                                  None if label in labelled else label, hollow=bool(_equiv(r)))
                        labelled.add(label)
                        rates.append(x)
                        ends = i in (0, len(recs) - 1)
                        txt = ", ".join(t for t in (_point_note(r, vary) if ends else "",
                                                    f"{k}/{n} div." if k else "") if t)
                        if txt:
                            ax.annotate(txt, (x, y), xytext=(4, -8), textcoords="offset points", fontsize=6,
                                        color=color)
                    else:
                        pn = _point_note(r, vary)
                        edge.diverged(0.02, k, n, color, x_in_axes=True,
                                      label=None if label in labelled else label + ": median ∞",
                                      who=f"{variant}{' ' + pn if pn else ''}: ")
                        labelled.add(label)
        pos = [v for v in rates if math.isfinite(v) and v > 0]
        if len(pos) >= 2 and max(pos) / min(pos) > 10:
            ax.set_xscale("log")
            _plain_log_ticks(ax.xaxis, math.log10(max(pos) / min(pos)))
        ax.set_xlabel("rate: KL summed over latent dims (nats/example)")
        ax.set_ylabel("distortion: val_recon_mu")
        if fkeys:
            ax.set_title(_ctx_title(fkeys, ctx), fontsize=9, pad=14)
        ax.grid(alpha=0.3, which="both")
    _figure_legend(fig, axes)
    epoch = _epoch_note(groups)
    sub = ("baseline frontier traced over β (kl_coeff); points: median across seeds, 95% CIs both ways"
           if has_frontier else "no β sweep: the baseline is a single point, not a frontier")
    _suptitle(fig, f"{RD_TITLE}{epoch}{note}\n{sub}")
    return fig


def plot_data_spectrum(study: Study, max_samples: int = 4096) -> tuple[Optional[Figure], str]:
    """The dataset's covariance spectrum with its fitted power law (plvae.spectrum), from the
    data of the study's first trial. Optional: needs plvae.data to load the data cheaply (a
    generated dataset, or files already on disk); returns (None, reason) otherwise."""
    try:
        from plvae.data import load_data
        from plvae.spectrum import eigenspectrum, fit_power_law
        from analysis.load import trial_config
    except Exception as e:  # the data or spectrum module missing or broken: a figure less, no failure
        return None, f"plvae.data / plvae.spectrum unavailable ({type(e).__name__}: {e})"
    t = study.trials
    if t.empty:
        return None, "no trials"
    try:
        cfg = trial_config(study, t[TRIAL_ID].iloc[0]).replace(download=False)
        data = load_data(cfg).train
        x = np.asarray(data).reshape(len(data), -1)[:max_samples].astype(np.float64)
        if data.dtype == np.uint8:
            x = x / 255.0
        eigs = eigenspectrum(x)
        fit = fit_power_law(eigs)
    except Exception as e:
        return None, f"dataset spectrum not computed ({type(e).__name__}: {e})"
    fig, axes = _panels(1, width=6.0, height=4.2)
    ax = axes[0]
    k = np.arange(1, len(eigs) + 1)
    pos = eigs > 1e-10 * eigs.max()  # numerical zeros (rank deficiency) would squash the axis
    ax.loglog(k[pos], eigs[pos], ".", ms=3, color="0.3", label="eigenvalues")
    kk = np.arange(fit.kmin, fit.kmax + 1)
    ax.loglog(kk, fit.predict(kk), "-", color="C3", lw=2,
              label=f"fit: α = {fit.alpha:.3f}, R² = {fit.r2:.3f} (k = {fit.kmin}..{fit.kmax})")
    if fit.alpha > 0:
        ax.text(0.02, 0.04, f"a matched prior has γ = α/2 = {fit.alpha / 2:.2f}", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue λ_k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    measured = study.data_alpha.get(cfg.dataset)
    note = f"; study.json: α = {measured:.3f}" if isinstance(measured, (int, float)) else ""
    fig.suptitle(f"Spectrum of {cfg.dataset} ({len(x)} training images, {x.shape[1]} pixels{note})")
    return fig, ""


FIGURES = {
    "gamma_vs_final": "γ against the final value of the compared metric (median, 95% CI)",
    "learning_curves": "learning curves of each variant at its best setting",
    "divergence_vs_gamma": "divergence rate against γ",
    "rate_distortion": "rate–distortion: each group against the baseline's frontier over β",
    "gamma_min_decay_heatmap": "γ × min_decay heatmap of the final value",
    "latent_spectrum": "latent spectrum exponent against the prior's 2γ",
    "data_spectrum": "the dataset's spectrum with its fitted power law",
}


def save_figures(study: Study, comparison: Comparison, out_dir, data_spectrum: bool = True
                 ) -> tuple[dict, dict]:
    """Write every applicable figure as ``<out_dir>/<name>.png``.

    Returns ({name: path} written, {name: reason} skipped)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = {}, {}
    makers = {
        "gamma_vs_final": lambda: plot_gamma_vs_final(comparison),
        "learning_curves": lambda: plot_learning_curves(study, comparison),
        "divergence_vs_gamma": lambda: plot_divergence(comparison),
        "rate_distortion": lambda: plot_rate_distortion(comparison),
        "gamma_min_decay_heatmap": lambda: plot_gamma_min_decay(comparison),
        "latent_spectrum": lambda: plot_latent_spectrum(study),
    }
    reasons = {
        "gamma_vs_final": "no finite final values or no γ column",
        "learning_curves": "no curves",
        "divergence_vs_gamma": "no γ column",
        "rate_distortion": "no rate and distortion per group (val_rate / val_recon_mu not logged)",
        "gamma_min_decay_heatmap": "γ and min_decay do not both vary for any variant",
        "latent_spectrum": f"{M.LATENT_ALPHA} not logged (or not finite)",
    }
    for name, make in makers.items():
        fig = make()
        if fig is None:
            skipped[name] = reasons[name]
            continue
        path = out / f"{name}.png"
        fig.savefig(path, format="png", dpi=DPI)
        written[name] = path
    if data_spectrum:
        fig, why = plot_data_spectrum(study)
        if fig is None:
            skipped["data_spectrum"] = why
        else:
            path = out / "data_spectrum.png"
            fig.savefig(path, format="png", dpi=DPI)
            written["data_spectrum"] = path
    else:
        skipped["data_spectrum"] = "not requested"
    return written, skipped
