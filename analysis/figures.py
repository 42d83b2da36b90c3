"""Figures of a study (matplotlib, PNG).

Each ``plot_*`` returns a ``matplotlib.figure.Figure`` (a notebook shows it; ``fig.savefig``
writes it), or None when the study holds nothing to plot. Figures are built on
``matplotlib.figure.Figure`` directly, not pyplot: no global state, no GUI backend (the Agg
canvas renders PNGs), so a notebook's backend is never switched. ``save_figures`` writes every
figure that applies and says why the others were skipped.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from plvae import metrics as M
from plvae.priors import VARIANTS

from analysis.compare import DIVERGED, FINAL, Comparison, VARIANT_PARAMS, trial_curve
from analysis.load import TRIAL_ID, Study, final, initial

MAX_PANELS = 6
DPI = 110


def _variant_label(variant: str, row: dict, vary: list) -> str:
    extra = [f"{'γ' if p == 'gamma' else p}={row[p]:g}" for p in vary if p in row and not pd.isna(row[p])]
    return variant + (f" ({', '.join(extra)})" if extra else "")


def _ctx_title(keys: list, ctx) -> str:
    ctx = ctx if isinstance(ctx, tuple) else (ctx,)
    return ", ".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in zip(keys, ctx))


def _contexts(df: pd.DataFrame, keys: list):
    if not keys:
        return [((), df)]
    return list(df.groupby(keys, dropna=False, sort=True))[:MAX_PANELS]


def _panels(n: int, width: float = 5.0, height: float = 3.8):
    fig = Figure(figsize=(width * n, height), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    return fig, axes


def _uses_gamma(variant: str) -> bool:
    v = VARIANTS.get(variant)
    return bool(v and v.uses_gamma)


def _other_varying(groups: pd.DataFrame, variant: str) -> list:
    """Prior parameters besides gamma that take several values for this variant."""
    g = groups[groups["variant"] == variant]
    return [p for p in VARIANT_PARAMS if p != "gamma" and p in g and g[p].nunique(dropna=True) > 1]


def _finite(s: pd.Series) -> pd.Series:
    s = s.astype(float)
    return s.where(np.isfinite(s))


def _gamma_lines(ax, cg: pd.DataFrame, col: str, lo: str, hi: str, baseline_label_suffix=""):
    """One line per variant (and per other prior setting) against gamma; variants without gamma
    as a horizontal line with their CI as a band."""
    xs = cg["gamma"].dropna()
    x_range = (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0)
    if x_range[0] == x_range[1]:
        x_range = (x_range[0] - 0.5, x_range[1] + 0.5)
    for i, (variant, vg) in enumerate(cg.groupby("variant", sort=True)):
        color = f"C{i % 10}"
        if _uses_gamma(variant) and vg["gamma"].notna().any():
            vary = _other_varying(cg, variant)
            for j, (key, lg) in enumerate(vg.groupby(vary, dropna=False, sort=True) if vary else [((), vg)]):
                lg = lg.sort_values("gamma")
                y, ylo, yhi = (_finite(lg[c]) for c in (col, lo, hi))
                label = _variant_label(variant, lg.iloc[0].to_dict(), vary)
                ax.errorbar(lg["gamma"], y, yerr=np.vstack([(y - ylo).clip(lower=0).fillna(0),
                                                            (yhi - y).clip(lower=0).fillna(0)]),
                            marker="o", ms=4, capsize=3, color=color, alpha=1.0 - 0.25 * (j % 3), label=label)
                unbounded = np.isinf(lg[hi].astype(float)) | np.isinf(lg[col].astype(float))
                if unbounded.any():  # diverged seeds: an infinite median or upper bound, marked at the top
                    ax.plot(lg["gamma"][unbounded], np.full(int(unbounded.sum()), 1.0), "^", color=color,
                            transform=ax.get_xaxis_transform(), clip_on=False, ms=6)
        else:
            for _, r in vg.iterrows():
                if np.isfinite(r[col]):
                    ax.axhline(r[col], color=color, ls="--", label=f"{variant}{baseline_label_suffix}")
                if np.isfinite(r[lo]) and np.isfinite(r[hi]):
                    ax.axhspan(r[lo], r[hi], color=color, alpha=0.12)
    ax.set_xlabel("γ (prior decay exponent)")


def plot_gamma_vs_final(comparison: Comparison) -> Optional[Figure]:
    """γ against the final value of the compared metric: median across seeds with its bootstrap
    95% CI, one line per variant; the baseline as a dashed line with its CI band. A ▲ at the top
    marks an infinite median or upper bound (diverged seeds count as ∞)."""
    groups = comparison.groups
    if groups.empty or "gamma" not in groups or not groups[FINAL].notna().any():
        return None
    ctxs = _contexts(groups, comparison.context_keys)
    fig, axes = _panels(len(ctxs))
    for ax, (ctx, cg) in zip(axes, ctxs):
        _gamma_lines(ax, cg, FINAL, f"{FINAL}_low", f"{FINAL}_high", " (no γ)")
        ax.set_ylabel(f"final {comparison.metric} (median, 95% CI)")
        ax.set_title(_ctx_title(comparison.context_keys, ctx), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Final {comparison.metric} against γ")
    return fig


def plot_divergence(comparison: Comparison) -> Optional[Figure]:
    """Share of trials that diverged against γ, per variant, with Wilson 95% intervals."""
    groups = comparison.groups
    if groups.empty or "gamma" not in groups:
        return None
    ctxs = _contexts(groups, comparison.context_keys)
    fig, axes = _panels(len(ctxs))
    for ax, (ctx, cg) in zip(axes, ctxs):
        _gamma_lines(ax, cg, DIVERGED, f"{DIVERGED}_low", f"{DIVERGED}_high", " (no γ)")
        ax.set_ylabel("divergence rate (95% Wilson CI)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(_ctx_title(comparison.context_keys, ctx), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Divergence rate against γ")
    return fig


def plot_learning_curves(study: Study, comparison: Comparison) -> Optional[Figure]:
    """Validation curves of each variant at its best setting (the headline's group): every seed
    thin, the median across seeds thick; epoch 0 is the pre-training value when logged."""
    head = comparison.headline
    if head.empty:
        return None
    metric = comparison.metric
    pt = comparison.per_trial
    hist = {tid: h for tid, h in study.history.groupby(TRIAL_ID, sort=False)}
    init = study.trials.set_index(TRIAL_ID)[initial(metric)] if initial(metric) in study.trials else None
    ctxs = _contexts(head, comparison.context_keys)
    fig, axes = _panels(len(ctxs))
    drawn = False
    for ax, (ctx, ch) in zip(axes, ctxs):
        for i, r in enumerate(ch.to_dict("records")):
            mask = np.ones(len(pt), bool)
            for k in comparison.group_keys:
                v = r[k]
                mask &= (pt[k].isna() & pd.isna(v)).to_numpy() if pd.isna(v) else (pt[k] == v).to_numpy()
            color = f"C{i % 10}"
            curves = []
            for tid in pt.loc[mask, TRIAL_ID]:
                if tid not in hist:
                    continue
                i0 = float(init[tid]) if init is not None and pd.notna(init.get(tid)) else math.nan
                x, y, _ = trial_curve(hist[tid], metric, i0)
                ax.plot(x, y, color=color, lw=0.8, alpha=0.35)
                curves.append(pd.Series(y, index=x))
            if not curves:
                continue
            med = pd.concat(curves, axis=1).median(axis=1, skipna=True).sort_index()
            vary = [p for p in VARIANT_PARAMS if p in r and not pd.isna(r[p])]
            ax.plot(med.index, med.to_numpy(), color=color, lw=2.2, marker="o", ms=3,
                    label=f"{_variant_label(r['variant'], r, vary)}, n={len(curves)}")
            drawn = True
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch (0 = before training)")
        ax.set_ylabel(metric)
        ax.set_title(_ctx_title(comparison.context_keys, ctx), fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if not drawn:
        return None
    fig.suptitle(f"Learning curves at each variant's best setting ({metric})")
    return fig


def plot_gamma_min_decay(comparison: Comparison) -> Optional[Figure]:
    """Heatmap of the median final value over γ × min_decay, one panel per variant that uses
    both (first context only when there are several); None unless both vary."""
    g = comparison.groups
    if g.empty or "gamma" not in g or "min_decay" not in g:
        return None
    if comparison.context_keys:
        first = next(iter(g.groupby(comparison.context_keys, dropna=False, sort=True)))[1]
        g = first
    variants = [v for v, vg in g.groupby("variant", sort=True)
                if vg["gamma"].nunique() > 1 and vg["min_decay"].nunique() > 1]
    if not variants:
        return None
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
                ax.text(xi, yi, "∞ (diverged)", ha="center", va="center", fontsize=6)
            elif np.isfinite(v):
                ax.text(xi, yi, f"{v:.3g}", ha="center", va="center", fontsize=6, color="k" if v > mid else "w")
        ax.set_xlabel("γ")
        ax.set_ylabel("min_decay")
        ax.set_title(variant, fontsize=9)
        fig.colorbar(im, ax=ax, label=f"final {comparison.metric} (median)")
    fig.suptitle("γ × min_decay")
    return fig


def plot_latent_spectrum(study: Study) -> Optional[Figure]:
    """Measured power-law exponent of the latent code's spectrum (``latent_alpha``, last epoch)
    against γ, per variant, with the prior's variance exponent 2γ (s_k = k^-γ scales standard
    deviations) and the data's exponent when study.json records it."""
    col = final(M.LATENT_ALPHA)
    t = study.trials
    if col not in t or "gamma" not in t or not np.isfinite(t[col].astype(float)).any():
        return None
    fig, axes = _panels(1, width=6.0, height=4.2)
    ax = axes[0]
    ok = t[np.isfinite(t[col].astype(float))]
    for i, (variant, vg) in enumerate(ok.groupby("variant", sort=True)):
        color = f"C{i % 10}"
        ax.scatter(vg["gamma"], vg[col], s=12, color=color, alpha=0.5)
        med = vg.groupby("gamma")[col].median()
        ax.plot(med.index, med.to_numpy(), marker="o", color=color, label=variant)
    gs = np.linspace(float(t["gamma"].min()), max(float(t["gamma"].max()), 1e-9), 50)
    ax.plot(gs, 2 * gs, "k--", lw=1, label="prior: 2γ")
    for j, (name, alpha) in enumerate(sorted(study.data_alpha.items())):
        if isinstance(alpha, (int, float)) and math.isfinite(alpha):
            ax.axhline(alpha, color="0.4", ls=":", lw=1, label=f"data α ({name}) = {alpha:.2f}")
    ax.set_xlabel("γ")
    ax.set_ylabel("latent spectrum exponent α (final epoch)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("Latent spectrum against the prior's")
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
        "gamma_min_decay_heatmap": lambda: plot_gamma_min_decay(comparison),
        "latent_spectrum": lambda: plot_latent_spectrum(study),
    }
    reasons = {
        "gamma_vs_final": "no finite final values or no γ column",
        "learning_curves": "no curves",
        "divergence_vs_gamma": "no γ column",
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
