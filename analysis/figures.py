"""Figures of a study (matplotlib, PNG), and the one registry of the report's figures.

Each ``plot_*`` returns a ``matplotlib.figure.Figure`` (a notebook shows it; ``fig.savefig``
writes it), or None when the study holds nothing to plot; the drawing kit (``analysis.plotting``)
says what every figure guarantees. ``FIGURE_SPECS`` lists every figure once (name, caption, how to
draw it, why it may not apply); ``save_figures`` writes every figure that applies and says why the
others were skipped. Learning-curve medians count diverged seeds as ∞ from the epoch they diverged
and say how many; the γ figures mark the data-matched prior γ = α/2 (``plvae.priors.matched_gamma``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from plvae import metrics as M
from plvae.priors import PRIOR_FIELDS, matched_gamma

from analysis.columns import DIVERGED, FINAL, STUDY, final, high, initial, low, num
from analysis.compare import Comparison
from analysis.curves import trial_curve
from analysis.figure_rd import RD_TITLE, plot_rate_distortion
from analysis.figure_tuned import plot_lr_sensitivity
from analysis.groups import context_text, contexts, group_label, matching
from analysis.load import Study
from analysis.plotting import (DATA_GAMMA_COLOR, DPI, MAX_PANELS, VARIANT_COLORS, TopEdge, by_variant,
                               cap, diverged_count, epoch_note, equiv_suffix, figure_legend, gamma_lines, is_w2,
                               log_if_wide, panel_titles, panels, plain_log_ticks, suptitle, variant_color,
                               variant_contexts, variant_order)
from analysis.trial_fields import trial_config
from analysis.tuned import tuned_of
from analysis.tune_files import TRIAL_ID

# Names callers import from here (tests, benchmarks/evidence_summary.py).
__all__ = ["DPI", "FIGURES", "FIGURE_SPECS", "FigureSpec", "RD_TITLE", "VARIANT_COLORS", "plot_data_spectrum",
           "plot_divergence", "plot_gamma_min_decay", "plot_gamma_vs_final", "plot_latent_spectrum",
           "plot_learning_curves", "plot_rate_distortion", "save_figures", "variant_color"]


def _data_gamma_line(ax, comparison: Comparison) -> None:
    """A dotted vertical line at the data-matched γ = α/2 (rounded as tested), when the study measured α."""
    g, a = num(comparison.data_gamma), num(comparison.data_alpha)
    if not math.isfinite(g):
        return
    ax.axvline(g, color=DATA_GAMMA_COLOR, ls=":", lw=1.4,
               label=f"γ = α/2 (α = {a:.2f})" if math.isfinite(a) else "γ = α/2 (data-matched)")


EDGE_NOTE = "▲ on the top edge: median ∞ (≥ half the seeds diverged); △: CI upper bound ∞"


def plot_gamma_vs_final(comparison: Comparison) -> Optional[Figure]:
    """γ against the final value of the compared metric: median across seeds with its bootstrap
    95% CI, one line per variant; the baseline as a dashed line with its CI band. A ▲ on the top
    edge with "k/n diverged" marks an infinite median (diverged seeds count as ∞), a △ an
    infinite upper bound; a dotted line marks the data-matched γ = α/2."""
    groups = comparison.groups
    if groups.empty or "gamma" not in groups or FINAL not in groups or not groups[FINAL].notna().any():
        return None
    ctxs, note = cap(variant_contexts(groups, comparison))
    fig, axes = panels(len(ctxs), height=5.2)
    epoch = epoch_note(groups)
    for ax, title, (ctx, cg) in zip(axes, panel_titles(comparison.context_keys, ctxs), ctxs):
        gamma_lines(ax, cg, FINAL, low(FINAL), high(FINAL), " (no γ)")
        _data_gamma_line(ax, comparison)
        log_if_wide(ax, pd.to_numeric(cg[FINAL], errors="coerce"))
        ax.set_ylabel(f"final {comparison.metric} (median, 95% CI)")
        ax.set_title(title, fontsize=9, pad=14)
        ax.grid(alpha=0.3, which="both")
    figure_legend(fig, axes)
    suptitle(fig, f"Final {comparison.metric}{epoch} against γ{note}\n{EDGE_NOTE}")
    return fig


def plot_divergence(comparison: Comparison) -> Optional[Figure]:
    """Share of trials that diverged against γ, per variant, with Wilson 95% intervals."""
    groups = comparison.groups
    if groups.empty or "gamma" not in groups or DIVERGED not in groups:
        return None
    ctxs, note = cap(variant_contexts(groups, comparison))
    fig, axes = panels(len(ctxs))
    for ax, title, (ctx, cg) in zip(axes, panel_titles(comparison.context_keys, ctxs), ctxs):
        gamma_lines(ax, cg, DIVERGED, low(DIVERGED), high(DIVERGED), " (no γ)")
        _data_gamma_line(ax, comparison)
        ax.set_ylabel("divergence rate (95% Wilson CI)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    figure_legend(fig, axes)
    suptitle(fig, f"Divergence rate against γ{note}", fontsize=11)
    return fig


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
    ctxs, note = cap(variant_contexts(head, comparison))
    fig, axes = panels(len(ctxs), height=5.2)
    drawn = False
    for ax, title, (ctx, ch) in zip(axes, panel_titles(comparison.context_keys, ctxs), ctxs):
        edge = TopEdge(ax)
        for r in sorted(ch.to_dict("records"), key=lambda r: variant_order(r["variant"])):
            mask = matching(pt, comparison.group_keys, [r.get(k) for k in comparison.group_keys])
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
            vary = [p for p in PRIOR_FIELDS if p in r and not pd.isna(r[p])]
            w2 = " (W2 objective)" if is_w2(r) else ""
            label = (f"{group_label(r['variant'], r, vary)}{w2}{equiv_suffix(pd.DataFrame([r]))}, "
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
        plain_log_ticks(ax.yaxis)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_ylabel(metric)
        ax.set_title(title, fontsize=9, pad=14)
        ax.grid(alpha=0.3, which="both")
        # below the panel: the curves fill its corners and its top edge carries the ∞ markers
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    if not drawn:
        return None
    suptitle(fig, f"Learning curves at each variant's best setting ({metric}; median across seeds, "
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
        return [v for v, vg in by_variant(g) if vg["gamma"].nunique() > 1 and vg["min_decay"].nunique() > 1]

    ctxs = contexts(g0, comparison.context_keys)
    found = next(((c, g) for c, g in ctxs if grid_variants(g)), None)
    if found is None:
        return None
    ctx, g = found
    variants = grid_variants(g)
    fig, axes = panels(len(variants[:MAX_PANELS]), width=4.8)
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
                k, n = diverged_count(cell.iloc[0].to_dict()) if len(cell) else (0, 0)
                ax.text(xi, yi, f"∞\n{k}/{n} diverged", ha="center", va="center", fontsize=6)
            elif np.isfinite(v):
                ax.text(xi, yi, f"{v:.3g}", ha="center", va="center", fontsize=6, color="k" if v > mid else "w")
        ax.set_xlabel("γ")
        ax.set_ylabel("min_decay")
        ax.set_title(variant, fontsize=9, color=variant_color(variant))
        fig.colorbar(im, ax=ax, label=f"final {comparison.metric} (median)")
    where = context_text(comparison.context_keys, ctx) if comparison.context_keys else ""
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
    groups = contexts(ok, [STUDY]) if per_study else [((), ok)]
    fig, axes = panels(len(groups), width=6.0, height=4.2)
    gs = np.linspace(float(t["gamma"].min()), max(float(t["gamma"].max()), 1e-9), 50)
    for ax, (ctx, g) in zip(axes, groups):
        for variant, vg in by_variant(g):
            color = variant_color(variant)
            ax.scatter(vg["gamma"], vg[col], s=12, color=color, alpha=0.5)
            med = vg.groupby("gamma")[col].median()
            ax.plot(med.index, med.to_numpy(), marker="o", color=color, label=variant)
        ax.plot(gs, 2 * gs, "k--", lw=1, label="prior: 2γ")
        for name, alpha in sorted(study.data_alpha.items()):
            if isinstance(alpha, (int, float)) and math.isfinite(alpha):
                ax.axhline(alpha, color="0.4", ls=":", lw=1, label=f"data α ({name}) = {alpha:.2f}")
                ax.axvline(matched_gamma(alpha), color=DATA_GAMMA_COLOR, ls=":", lw=1.4,
                           label=f"γ = α/2 (α = {alpha:.2f})")
        if per_study:
            ax.set_title(context_text([STUDY], ctx), fontsize=9)
        ax.set_xlabel("γ")
        ax.set_ylabel("latent spectrum exponent α (final epoch)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Latent spectrum against the prior's")
    return fig


def plot_data_spectrum(study: Study) -> tuple[Optional[Figure], str]:
    """The dataset's covariance spectrum with its fitted power law, from the data of the study's
    first trial, measured exactly as the study measured its alpha (plvae.spectrum, the whole
    training split), so the figure's alpha and study.json's agree. Optional: needs plvae.data to
    load the data cheaply (a generated dataset, or files already on disk); (None, reason) otherwise."""
    try:
        from plvae.spectrum import spectrum_of_dataset
    except Exception as e:  # the data or spectrum module missing or broken: a figure less, no failure
        return None, f"plvae.data / plvae.spectrum unavailable ({type(e).__name__}: {e})"
    t = study.trials
    if t.empty:
        return None, "no trials"
    try:
        cfg = trial_config(study, t[TRIAL_ID].iloc[0]).replace(download=False)
        eigs, fit = spectrum_of_dataset(cfg)
    except Exception as e:
        return None, f"dataset spectrum not computed ({type(e).__name__}: {e})"
    fig, axes = panels(1, width=6.0, height=4.2)
    ax = axes[0]
    k = np.arange(1, len(eigs) + 1)
    pos = eigs > 1e-10 * eigs.max()  # numerical zeros (rank deficiency) would squash the axis
    ax.loglog(k[pos], eigs[pos], ".", ms=3, color="0.3", label="eigenvalues")
    kk = np.arange(fit.kmin, fit.kmax + 1)
    ax.loglog(kk, fit.predict(kk), "-", color="C3", lw=2,
              label=f"fit: α = {fit.alpha:.3f}, R² = {fit.r2:.3f} (k = {fit.kmin}..{fit.kmax})")
    if fit.alpha > 0:
        ax.text(0.02, 0.04, f"a matched prior has γ = α/2 = {matched_gamma(fit.alpha):.2f}", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue λ_k")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    measured = study.data_alpha.get(cfg.dataset)
    note = f"; study.json: α = {measured:.3f}" if isinstance(measured, (int, float)) else ""
    fig.suptitle(f"Spectrum of {cfg.dataset} (training split, {len(eigs)} eigenvalues{note})")
    return fig, ""


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: its file name, its caption, how to draw it from (study,
    comparison) - a Figure, None when nothing applies (then ``why_not`` says why), or (figure or
    None, reason) - and the ``save_figures`` option that must ask for it (``needs``)."""

    name: str
    title: str
    make: Callable
    why_not: str = ""
    needs: Optional[str] = None      # "data_spectrum" / "reconstructions": drawn only when asked for
    dpi: int = DPI
    tight: bool = False              # bbox_inches="tight"


def _reconstructions(study: Study, comparison: Comparison):
    from analysis.reconstructions import plot_reconstructions   # loads torch: only when asked for

    return plot_reconstructions(study, comparison)


FIGURE_SPECS = (
    FigureSpec("gamma_vs_final", "γ against the final value of the compared metric (median, 95% CI)",
               lambda s, c: plot_gamma_vs_final(c), "no finite final values or no γ column"),
    FigureSpec("learning_curves", "learning curves of each variant at its best setting",
               plot_learning_curves, "no curves"),
    FigureSpec("divergence_vs_gamma", "divergence rate against γ", lambda s, c: plot_divergence(c), "no γ column"),
    FigureSpec("rate_distortion", "rate–distortion: each group against the baseline's frontier over β",
               lambda s, c: plot_rate_distortion(c),
               "no rate and distortion per group (val_rate / val_recon_mu not logged)"),
    FigureSpec("gamma_min_decay_heatmap", "γ × min_decay heatmap of the final value",
               lambda s, c: plot_gamma_min_decay(c), "γ and min_decay do not both vary for any variant"),
    FigureSpec("latent_spectrum", "latent spectrum exponent against the prior's 2γ",
               lambda s, c: plot_latent_spectrum(s), f"{M.LATENT_ALPHA} not logged (or not finite)"),
    FigureSpec("data_spectrum", "the dataset's spectrum with its fitted power law",
               lambda s, c: plot_data_spectrum(s), needs="data_spectrum"),
    FigureSpec("lr_sensitivity", "learning-rate sensitivity: final value per arm over the grid, every seed (tuned "
               "against tuned)", lambda s, c: plot_lr_sensitivity(tuned_of(s, full=False)),
               "no tuning protocol in study.json (a preset's tuning: section)"),
    FigureSpec("reconstructions", "Reconstructions of each variant's best trial (last checkpoint)",
               _reconstructions, needs="reconstructions", dpi=120, tight=True),
)
# The registry by name: "name" in FIGURES, FIGURES[name].title.
FIGURES = {spec.name: spec for spec in FIGURE_SPECS}


def save_figures(study: Study, comparison: Comparison, out_dir, data_spectrum: bool = True,
                 reconstructions: bool = False) -> tuple[dict, dict]:
    """Write every applicable figure of the registry as ``<out_dir>/<name>.png`` (the data
    spectrum and the reconstructions only when asked for: they load data or checkpoints).

    Returns ({name: path} written, {name: reason} skipped)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    asked = {"data_spectrum": data_spectrum, "reconstructions": reconstructions}
    written, skipped = {}, {}
    for spec in FIGURE_SPECS:
        if spec.needs is not None and not asked[spec.needs]:
            if spec.needs == "data_spectrum":
                skipped[spec.name] = "not requested"
            continue
        got = spec.make(study, comparison)
        fig, why = got if isinstance(got, tuple) else (got, spec.why_not)
        if fig is None:
            skipped[spec.name] = why
            continue
        path = out / f"{spec.name}.png"
        fig.savefig(path, format="png", dpi=spec.dpi, **({"bbox_inches": "tight"} if spec.tight else {}))
        written[spec.name] = path
    return written, skipped
