"""analysis.figures: figures a reader can trust (issue 9).

Every test builds its comparison by hand (a SimpleNamespace with ``Comparison``'s attributes),
so the figures are checked against known groups, not against whatever ``compare`` computes, and
inspects the matplotlib Figure it gets back: texts, markers, colours and legend labels.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex
from matplotlib.container import ErrorbarContainer
from matplotlib.lines import Line2D

from analysis.figures import (FIGURES, RD_TITLE, VARIANT_COLORS, plot_divergence, plot_gamma_vs_final,
                              plot_learning_curves, plot_rate_distortion, save_figures, variant_color)
from analysis.load import Study
from plvae import metrics as M
from plvae.priors import VARIANT_NAMES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONTEXT = ["dataset", "latent_dim", "lr", "kl_coeff"]
PARAMS = ["gamma", "min_decay", "clip_dim", "decay_rate"]
GROUP_KEYS = CONTEXT + ["variant"] + PARAMS
INF = math.inf


def group(variant, gamma=math.nan, lr=1e-3, kl_coeff=0.1, final=0.5, n=5, n_diverged=0, equiv="",
          objective="kl", rate=10.0, distortion=0.02, min_decay=math.nan, **extra) -> dict:
    """One row of Comparison.groups, CIs ±10% unless given."""
    r = {"dataset": "digits", "latent_dim": 8, "lr": lr, "kl_coeff": kl_coeff, "variant": variant,
         "gamma": gamma, "min_decay": min_decay, "clip_dim": math.nan, "decay_rate": math.nan, "epoch": 5,
         "final": final, "final_low": final * 0.9, "final_high": final * 1.1, "n": n,
         "n_diverged": n_diverged, "diverged": n_diverged / n, "diverged_low": 0.0,
         "diverged_high": min(1.0, n_diverged / n + 0.3), "is_baseline": variant == "vae",
         "rate": rate, "rate_low": rate * 0.9, "rate_high": rate * 1.1, "distortion": distortion,
         "distortion_low": distortion * 0.95, "distortion_high": distortion * 1.05,
         "equiv": equiv, "objective": objective}
    r.update(extra)
    return r


def comparison(rows, frontier=None, data_gamma=math.nan, data_alpha=math.nan, headline=None,
               per_trial=None, metric=M.VAL_LOSS):
    groups = pd.DataFrame(rows)
    return SimpleNamespace(
        metric=metric, baseline="vae", groups=groups, per_trial=per_trial if per_trial is not None else pd.DataFrame(),
        tests=pd.DataFrame(), headline=headline if headline is not None else groups, stable_lr=None, targets={},
        context_keys=list(CONTEXT), group_keys=list(GROUP_KEYS), significance=0.05, min_seeds=3, notes=[],
        frontier=frontier if frontier is not None else pd.DataFrame(), frontier_keys=["dataset", "latent_dim", "lr"],
        data_gamma=data_gamma, data_alpha=data_alpha)


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def legend_entries(ax) -> dict:
    """{legend label: colour of its line}."""
    out = {}
    for h, label in zip(*ax.get_legend_handles_labels()):
        line = h.lines[0] if isinstance(h, ErrorbarContainer) else h
        out[label] = to_hex(line.get_color())
    return out


def top_edge_markers(ax) -> list[Line2D]:
    """▲ markers drawn on the panel's top edge (y = 1 in axes units, unclipped)."""
    return [ln for ln in ax.lines if ln.get_marker() == "^" and not ln.get_clip_on()
            and len(ln.get_ydata()) == 1 and ln.get_ydata()[0] == 1.0]


def assert_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > min_bytes, path


# ------------------------------------------------------------------------------ palette

def test_palette_has_one_distinct_colour_per_registered_variant():
    assert list(VARIANT_COLORS) == list(VARIANT_NAMES)
    assert len(set(VARIANT_COLORS.values())) == len(VARIANT_NAMES)
    assert variant_color("no_such_variant") not in VARIANT_COLORS.values()


def test_same_variant_same_colour_in_every_panel_and_figure():
    # panel lr=1e-3 holds powerlaw and powerlaw_clamp, panel lr=1e-2 only powerlaw_clamp: colours
    # by enumeration order would give powerlaw_clamp a different colour in each
    rows = [group("vae", lr=1e-3), group("vae", lr=1e-2)]
    for g in (0.5, 1.0):
        rows.append(group("powerlaw", gamma=g, lr=1e-3, rate=12.0))
        rows.append(group("powerlaw_clamp", gamma=g, lr=1e-3, final=0.4, rate=11.0, min_decay=1e-3))
        rows.append(group("powerlaw_clamp", gamma=g, lr=1e-2, final=0.45, rate=11.0, min_decay=1e-3))
    c = comparison(rows)
    seen = {}
    for fig in (plot_gamma_vs_final(c), plot_divergence(c), plot_rate_distortion(c)):
        assert fig is not None
        for ax in fig.axes:
            for label, color in legend_entries(ax).items():
                for variant in ("vae", "powerlaw_clamp", "powerlaw"):
                    if label.split(" ")[0] == variant:
                        seen.setdefault(variant, set()).add(color)
    assert seen["powerlaw_clamp"] == {VARIANT_COLORS["powerlaw_clamp"]}
    assert seen["powerlaw"] == {VARIANT_COLORS["powerlaw"]}
    assert seen["vae"] == {VARIANT_COLORS["vae"]}


# ------------------------------------------------------------------ divergence stays visible

def test_diverged_baseline_is_marked_on_the_top_edge():
    rows = [group("vae", lr=1e-3), group("vae", lr=0.03, final=INF, n=5, n_diverged=3),
            group("powerlaw_clamp", gamma=0.5, lr=1e-3, min_decay=1e-3),
            group("powerlaw_clamp", gamma=1.0, lr=1e-3, min_decay=1e-3),
            group("powerlaw_clamp", gamma=0.5, lr=0.03, final=0.6, min_decay=1e-3),
            group("powerlaw_clamp", gamma=1.0, lr=0.03, final=INF, n=5, n_diverged=4, min_decay=1e-3)]
    fig = plot_gamma_vs_final(comparison(rows))
    by_lr = {ax.get_title(): ax for ax in fig.axes}
    hot = next(ax for t, ax in by_lr.items() if "lr=0.03" in t)
    calm = next(ax for t, ax in by_lr.items() if "lr=0.001" in t)
    assert any("3/5 diverged" in t for t in texts(hot)), texts(hot)    # the baseline
    assert any("4/5 diverged" in t for t in texts(hot)), texts(hot)    # the variant at γ = 1
    markers = top_edge_markers(hot)
    assert len(markers) == 2
    assert {to_hex(m.get_color()) for m in markers} == {VARIANT_COLORS["vae"], VARIANT_COLORS["powerlaw_clamp"]}
    # the baseline is still in the legend, saying its median left the plot
    assert any(lab.startswith("vae") and "∞" in lab for lab in legend_entries(hot))
    assert not any("diverged" in t for t in texts(calm)) and not top_edge_markers(calm)


def test_infinite_upper_bound_is_an_open_marker_without_diverged_text():
    rows = [group("vae", final_high=INF, n_diverged=2), group("powerlaw", gamma=0.5, final_high=INF, n_diverged=2)]
    ax = plot_gamma_vs_final(comparison(rows)).axes[0]
    m = top_edge_markers(ax)
    assert len(m) == 2 and all(x.get_markerfacecolor() == "none" for x in m)
    assert {to_hex(x.get_color()) for x in m} == {VARIANT_COLORS["vae"], VARIANT_COLORS["powerlaw"]}
    assert not any("diverged" in t for t in texts(ax))


# ------------------------------------------------------------------------ ≡ groups

def test_identical_by_construction_groups_are_labelled_in_the_legend():
    eq = "powerlaw_clamp ≡ powerlaw"
    rows = [group("vae")]
    for g in (0.5, 1.0):
        rows.append(group("powerlaw", gamma=g, equiv=eq))
        rows.append(group("powerlaw_clamp", gamma=g, min_decay=1e-3, equiv=eq))
    for fig in (plot_gamma_vs_final(comparison(rows)), plot_rate_distortion(comparison(rows))):
        labels = list(legend_entries(fig.axes[0]))
        assert "powerlaw ≡ powerlaw_clamp" in labels, labels
        assert "powerlaw_clamp ≡ powerlaw" in labels, labels
        assert not any(lab.startswith("vae") and "≡" in lab for lab in labels)


def test_equiv_labels_with_settings_stay_one_short_legend_entry_per_line():
    # compare writes each group's settings into the label: a line's points differ in γ alone
    rows = [group("vae")]
    for g in (0.5, 1.0, 1.5):
        eq = f"powerlaw (γ={g:g}) ≡ powerlaw_clamp (γ={g:g}, min_decay=0.001)"
        rows.append(group("powerlaw", gamma=g, equiv=eq))
        rows.append(group("powerlaw_clamp", gamma=g, min_decay=1e-3, equiv=eq))
    for fig in (plot_gamma_vs_final(comparison(rows)), plot_rate_distortion(comparison(rows))):
        labels = list(legend_entries(fig.axes[0]))
        assert "powerlaw ≡ powerlaw_clamp (min_decay=0.001)" in labels, labels
        assert "powerlaw_clamp ≡ powerlaw" in labels, labels
        assert len(labels) <= 4 and max(map(len, labels)) < 60, labels


def test_partly_identical_line_says_where():
    rows = [group("vae"), group("powerlaw", gamma=0.5, equiv="powerlaw_clamp ≡ powerlaw"),
            group("powerlaw", gamma=1.0)]
    labels = list(legend_entries(plot_gamma_vs_final(comparison(rows)).axes[0]))
    assert "powerlaw (≡ powerlaw_clamp at γ = 0.5)" in labels, labels


# ------------------------------------------------------------------------ γ = α/2

def test_data_gamma_line_is_drawn_and_labelled_with_alpha():
    rows = [group("vae"), group("powerlaw", gamma=0.5), group("powerlaw", gamma=1.0)]
    for plot in (plot_gamma_vs_final, plot_divergence):
        ax = plot(comparison(rows, data_gamma=0.85, data_alpha=1.7)).axes[0]
        lines = [ln for ln in ax.lines if ln.get_label() == "γ = α/2 (α = 1.70)"]
        assert len(lines) == 1 and np.allclose(lines[0].get_xdata(), 0.85) and lines[0].get_linestyle() == ":"
        ax = plot(comparison(rows)).axes[0]  # not measured: no line
        assert not any(str(ln.get_label()).startswith("γ = α/2") for ln in ax.lines)


# -------------------------------------------------------------------- β-only contexts

def test_contexts_holding_only_the_baseline_get_no_gamma_panel():
    rows = [group("vae", kl_coeff=b) for b in (0.01, 0.1, 1.0)]
    rows += [group("powerlaw", gamma=g, kl_coeff=0.1) for g in (0.5, 1.0)]
    fig = plot_gamma_vs_final(comparison(rows))
    assert len(fig.axes) == 1 and "kl_coeff=0.1" in fig.axes[0].get_title()


# ------------------------------------------------------------------------ rate–distortion

def frontier(betas, rates, dists, lr=1e-3, n_diverged=None):
    return pd.DataFrame([{"dataset": "digits", "latent_dim": 8, "lr": lr, "kl_coeff": b, "rate": r,
                          "rate_low": r * 0.9, "rate_high": r * 1.1, "distortion": d, "distortion_low": d * 0.95,
                          "distortion_high": d * 1.05, "n": 5, "n_diverged": (n_diverged or {}).get(b, 0)}
                         for b, r, d in zip(betas, rates, dists)])


def test_rate_distortion_frontier_variants_and_w2():
    betas, rates, dists = (0.01, 0.1, 1.0, 3.0), (60.0, 25.0, 6.0, 2.0), (0.005, 0.01, 0.03, 0.06)
    rows = [group("vae", kl_coeff=b, rate=r, distortion=d) for b, r, d in zip(betas, rates, dists)]
    rows += [group("powerlaw_clamp", gamma=g, min_decay=1e-3, rate=20.0 + g, distortion=0.011) for g in (0.5, 1.0)]
    rows += [group("powerlaw_wae", gamma=1.0, min_decay=1e-3, rate=40.0, distortion=0.008, objective="w2")]
    fig = plot_rate_distortion(comparison(rows, frontier=frontier(betas, rates, dists)))
    assert len(fig.axes) == 1  # one frontier context, whatever the number of β values
    ax = fig.axes[0]
    assert RD_TITLE in " ".join(fig.get_suptitle().split())  # wrapped to the figure's width
    entries = legend_entries(ax)
    front = [h for h, lab in zip(*ax.get_legend_handles_labels()) if "frontier" in lab]
    assert len(front) == 1 and len(front[0].lines[0].get_xdata()) == len(betas)
    assert to_hex(front[0].lines[0].get_color()) == VARIANT_COLORS["vae"]
    assert all(f"β={b:g}" in texts(ax) for b in betas)
    # one point per variant group, in the variant's colour; W2 with its own marker and label
    points = [c for c in ax.containers if isinstance(c, ErrorbarContainer) and len(c.lines[0].get_xdata()) == 1]
    colors = sorted(to_hex(c.lines[0].get_color()) for c in points)
    assert colors == sorted([VARIANT_COLORS["powerlaw_clamp"]] * 2 + [VARIANT_COLORS["powerlaw_wae"]])
    w2 = [lab for lab in entries if "(W2 objective)" in lab]
    assert w2 == ["powerlaw_wae (W2 objective)"]
    w2_point = next(c for c in points if to_hex(c.lines[0].get_color()) == VARIANT_COLORS["powerlaw_wae"])
    assert w2_point.lines[0].get_marker() == "D"
    assert all(c.has_xerr and c.has_yerr for c in points)
    assert ax.get_xscale() == "log"  # rates 2 .. 60 span more than a decade


def test_rate_distortion_without_frontier_draws_the_baseline_point():
    rows = [group("vae", rate=10.0), group("powerlaw", gamma=0.5, rate=12.0),
            group("powerlaw", gamma=1.0, rate=float("inf"), distortion=INF, n_diverged=3, final=INF)]
    ax = plot_rate_distortion(comparison(rows)).axes[0]
    labels = list(legend_entries(ax))
    assert any(lab.startswith("vae") and "no β sweep" in lab for lab in labels), labels
    assert ax.get_xscale() == "linear"
    assert any("3/5 diverged" in t for t in texts(ax)), texts(ax)  # the diverged group stays visible


def test_rate_distortion_skipped_without_rate_columns():
    rows = [{k: v for k, v in group("vae").items() if not k.startswith(("rate", "distortion"))}]
    assert plot_rate_distortion(comparison(rows)) is None


# ------------------------------------------------------------------------ learning curves

def tiny_study(diverge: dict, n: int = 5, epochs: int = 4) -> Study:
    rows, params = [], []
    for variant, gamma in (("vae", 0.0), ("powerlaw", 1.0)):
        for s in range(n):
            tid = f"{variant}_{s}"
            params.append({"trial_id": tid, "variant": variant, "gamma": gamma, "latent_dim": 8, "lr": 1e-3,
                           "seed": s, "dataset": "digits", "kl_coeff": 0.1, "max_epochs": epochs})
            for e in range(1, epochs + 1):
                div = s in diverge.get(variant, ()) and e >= 2
                v = math.nan if div else 0.2 + 0.8 * 0.5 ** e
                rows.append({"trial_id": tid, "training_iteration": e, M.VAL_LOSS: v, M.TRAIN_LOSS: v,
                             M.DIVERGED: float(div), M.INITIAL_VAL_LOSS: 1.0, "time_total_s": 2.0 * e})
                if div:
                    break
    return Study.from_history(pd.DataFrame(rows), pd.DataFrame(params), meta={"status": "finished"})


def curves_comparison(study: Study):
    t = study.trials
    pt = t[["trial_id", "variant", "gamma", "lr", "latent_dim", "dataset", "kl_coeff", "seed", "diverged"]].copy()
    for p in ("min_decay", "clip_dim", "decay_rate"):
        pt[p] = math.nan
    pt["final"] = np.where(pt["diverged"], INF, 0.25)
    head = [group("vae", gamma=math.nan), group("powerlaw", gamma=1.0, final=INF, n_diverged=3)]
    for r in head:
        r["epoch"] = 4
    c = comparison(head, per_trial=pt, headline=pd.DataFrame(head))
    c.group_keys = [k for k in GROUP_KEYS if k != "gamma"] + ["gamma"]
    pt.loc[pt.variant == "vae", "gamma"] = math.nan
    return c


def test_learning_curves_state_diverged_seeds_and_mark_an_infinite_median(tmp_path):
    study = tiny_study({"powerlaw": {0, 2, 4}})
    assert int(study.trials["diverged"].sum()) == 3
    fig = plot_learning_curves(study, curves_comparison(study))
    ax = fig.axes[0]
    labels = list(legend_entries(ax))
    assert any(lab.startswith("powerlaw") and lab.endswith("n=5, 3 diverged") for lab in labels), labels
    assert any(lab.startswith("vae") and "n=5, 0 diverged" in lab for lab in labels), labels
    # 3 of 5 seeds are ∞ from epoch 2: the median is ∞ there, marked on the top edge
    med = next(ln for ln in ax.lines if str(ln.get_label()).startswith("powerlaw"))
    y = np.asarray(med.get_ydata(), float)
    assert np.isfinite(y[:2]).all() and np.isnan(y[2:]).all()   # epochs 0, 1 finite; 2.. off the plot
    assert any("3/5 diverged" in t for t in texts(ax)) and top_edge_markers(ax)
    assert any(ln.get_label() == "compared at epoch 4" for ln in ax.lines)
    fig.savefig(tmp_path / "curves.png")
    assert_png(tmp_path / "curves.png")


def test_learning_curve_median_counts_a_minority_of_diverged_seeds():
    study = tiny_study({"powerlaw": {0}})
    c = curves_comparison(study)
    ax = plot_learning_curves(study, c).axes[0]
    med = next(ln for ln in ax.lines if str(ln.get_label()).startswith("powerlaw"))
    y = np.asarray(med.get_ydata(), float)
    assert np.isfinite(y).all() and len(y) == 5   # 1/5 diverged: the median stays finite
    assert any(str(ln.get_label()).endswith("n=5, 1 diverged") for ln in ax.lines)


# ------------------------------------------------------------------------ save_figures

def test_save_figures_writes_rate_distortion(tmp_path):
    study = tiny_study({"powerlaw": {0}})
    c = curves_comparison(study)
    betas = (0.01, 0.1, 1.0)
    rows = [group("vae", kl_coeff=b, rate=r, distortion=d, n_diverged=3 if b == 1.0 else 0,
                  final=INF if b == 1.0 else 0.3)
            for b, r, d in zip(betas, (50.0, 20.0, 3.0), (0.005, 0.01, 0.04))]
    rows[1]["final"] = INF  # the baseline at the variants' β diverged
    rows[1]["n_diverged"] = 3
    rows += [group("powerlaw", gamma=g, rate=18.0 + g, distortion=0.012, equiv="powerlaw (γ=0.5) ≡ powerlaw_clamp "
                   "(γ=0.5, min_decay=0.001)" if g == 0.5 else "") for g in (0.5, 1.0, 1.5)]
    rows += [group("powerlaw_clamp", gamma=0.5, min_decay=1e-3, rate=18.5, distortion=0.012,
                   equiv="powerlaw (γ=0.5) ≡ powerlaw_clamp (γ=0.5, min_decay=0.001)")]
    rows += [group("powerlaw_wae", gamma=1.0, min_decay=1e-3, rate=30.0, distortion=0.009, objective="w2")]
    c.groups = pd.DataFrame(rows)
    c.frontier = frontier(betas, (50.0, 20.0, 3.0), (0.005, 0.01, 0.04), n_diverged={1.0: 3})
    c.data_gamma, c.data_alpha = 0.85, 1.7
    written, skipped = save_figures(study, c, tmp_path, data_spectrum=False)
    assert {"rate_distortion", "gamma_vs_final", "divergence_vs_gamma", "learning_curves"} <= set(written), skipped
    assert "rate_distortion" in FIGURES
    for p in written.values():
        assert_png(p)


def test_panel_titles_of_two_studies_do_not_print_over_each_other(tmp_path):
    """Two studies loaded together: the study is a context key; keys equal in every panel are left
    out of the titles and what remains fits its panel (issue 22: the titles overlapped)."""
    names = ("quick_20261203-101500", "quick_20261203-113000")
    rows = [dict(group(v, gamma=g, final=f), study=s) for s in names
            for v, g, f in (("vae", math.nan, 0.5), ("powerlaw", 0.5, 0.45), ("powerlaw", 1.0, 0.47))]
    c = comparison(rows)
    c.context_keys, c.group_keys = ["study", *CONTEXT], ["study", *GROUP_KEYS]
    fig = plot_gamma_vs_final(c)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"study={n}" for n in names]        # dataset, latent_dim, lr, β: the same in both
    fig.savefig(tmp_path / "two.png")
    fig.canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in fig.axes if ax.get_title()]
    assert not boxes[0].overlaps(boxes[1])
    for ax, box in zip([a for a in fig.axes if a.get_title()], boxes):   # each title within its panel
        panel = ax.get_window_extent()
        assert panel.x0 - 1 <= box.x0 and box.x1 <= panel.x1 + 1
