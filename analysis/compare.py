"""Compare prior variants with the baseline for speed and stability, with statistics.

Groups are variant x prior parameters (gamma, min_decay, clip_dim, decay_rate) within a
*context* (dataset, latent_dim, lr and any other swept setting); seeds are the replicates.
Each group is compared with the baseline's group in the same context.

Compared on ``metrics.DEFAULT_STUDY_METRIC`` (``val_recon_mu``) by default: each variant's
total loss is measured against its own prior, and decayed sampling shrinks the noise the decoder
sees, so total losses are not comparable across variants; the reconstruction at z = mu is.
The total loss is shown beside it, not tested.

Per trial (on the chosen metric, with the pre-training value as epoch 0 when logged):
- ``final``: last value; ``best``: minimum over epochs;
- ``epochs_to_target`` / ``seconds_to_target``: first epoch (and Tune's ``time_total_s`` then)
  at which the metric is <= the target (default: the baseline's median final value in the same
  context); ``inf`` when never reached (censored, kept in the rank tests);
- ``auc``: area under the curve from epoch 0 to the last epoch, divided by (epochs x initial
  value): the mean loss over the run as a share of the initial loss (1 = no progress; lower =
  faster). Without an initial value, epoch 1 is the reference;
- ``first_epoch_ratio``: value after the first epoch / initial value;
- ``max_increase``: largest relative epoch-to-epoch increase (0 = monotone; ``inf`` if diverged).
A diverged trial's ``final``, ``auc`` and ``max_increase`` are ``inf``: a run that blew up is
worse than any that finished, and leaving it out would let a group look good by losing its bad
seeds (survivor bias); the rank tests handle ``inf`` and the divergence rate counts it too. The
spread across seeds (std, CV) uses the finite final values only. Errored and unfinished trials
are left out.

Per group: median (the lower median for the censored times to target) with a bootstrap 95% CI; divergence and ASHA-stopped rates with Wilson CIs;
std and CV of the final value across seeds. Tests against the baseline: Mann-Whitney U for the
per-trial quantities, Fisher's exact test for the rates, Brown-Forsythe for the spread; Holm
correction over every test made (``holm_family="all"``) or within each quantity
(``"quantity"``). Groups with fewer than ``min_seeds`` usable trials are flagged, not tested.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import pandas as pd

from plvae import metrics as M
from plvae.priors import KL, VARIANTS

from analysis import stats
from analysis.load import (EARLY_STOPPED, ERRORED, ITERATION, RUNNING, TIME_TOTAL,
                           TRIAL_ID, Study, initial)

# Prior parameters, each used only by some variants (priors.Variant.uses_*).
VARIANT_PARAMS = ("gamma", "min_decay", "clip_dim", "decay_rate")
_USES = {"gamma": "uses_gamma", "min_decay": "uses_min_decay", "clip_dim": "uses_clip_dim",
         "decay_rate": "uses_decay_rate"}
REPLICATE_PARAMS = ("seed", "data_seed")
# Fields that do not change what is learned (or are bookkeeping): never split groups.
NON_EXPERIMENTAL = ("data_dir", "num_workers", "accelerator", "extra", "download", "max_epochs")
CONTEXT_FIRST = ("dataset", "latent_dim", "lr")

# Per-trial quantities: (column, label, lower is better).
FINAL = "final"
BEST = "best"
EPOCHS_TO_TARGET = "epochs_to_target"
SECONDS_TO_TARGET = "seconds_to_target"
AUC = "auc"
FIRST_EPOCH_RATIO = "first_epoch_ratio"
MAX_INCREASE = "max_increase"
SPREAD = "spread"               # std of the final value across seeds (a group statistic)
DIVERGED = "diverged"
ASHA_STOPPED = "early_stopped"
TOTAL_LOSS = "total_loss"       # final val_loss, shown beside, not tested

SPEED = (EPOCHS_TO_TARGET, SECONDS_TO_TARGET, AUC, FIRST_EPOCH_RATIO)
STABILITY = (DIVERGED, SPREAD, MAX_INCREASE, ASHA_STOPPED)
PER_TRIAL = (FINAL, EPOCHS_TO_TARGET, SECONDS_TO_TARGET, AUC, FIRST_EPOCH_RATIO, MAX_INCREASE)
RATES = (DIVERGED, ASHA_STOPPED)
TESTED = (FINAL, *SPEED, *STABILITY)
LABELS = {
    FINAL: "final", BEST: "best", EPOCHS_TO_TARGET: "epochs to target",
    SECONDS_TO_TARGET: "seconds to target", AUC: "normalised AUC",
    FIRST_EPOCH_RATIO: "epoch-1 / initial", MAX_INCREASE: "largest rise",
    SPREAD: "std across seeds", DIVERGED: "divergence rate", ASHA_STOPPED: "ASHA-stopped share",
    TOTAL_LOSS: "total loss (not comparable)",
}
_median = np.median
_std = functools.partial(np.std, ddof=1)
# Times to target are censored (inf = never) and, at the default target, half the baseline reaches
# it by construction: the lower median keeps a group where half the trials got there finite.
_median_low = functools.partial(np.quantile, q=0.5, method="lower")
STATISTIC = {EPOCHS_TO_TARGET: _median_low, SECONDS_TO_TARGET: _median_low}


@dataclass
class Comparison:
    """What ``compare`` found. Every table is a plain DataFrame (see the module docstring).

    ``per_trial``: one row per usable trial with its quantities; ``groups``: one row per group
    with estimates, CIs and p-values (``p_<q>`` raw, ``p_holm_<q>`` corrected, ``sig_<q>``);
    ``tests``: the same tests in long form; ``headline``: each variant's best group per context,
    ranked; ``stable_lr``: the stable learning-rate region per group when lr is swept.
    """

    metric: str
    baseline: str
    per_trial: pd.DataFrame
    groups: pd.DataFrame
    tests: pd.DataFrame
    headline: pd.DataFrame
    stable_lr: Optional[pd.DataFrame]
    targets: dict
    context_keys: list
    group_keys: list
    alpha: float = 0.05
    min_seeds: int = 3
    holm_family: str = "all"
    notes: list = field(default_factory=list)

    @property
    def n_tests(self) -> int:
        return int(self.tests["p"].notna().sum()) if len(self.tests) else 0

    def significant(self) -> pd.DataFrame:
        """The tests that are significant after Holm correction."""
        if not len(self.tests):
            return self.tests
        return self.tests[self.tests["significant"]]


# ------------------------------------------------------------------------------ per trial

def trial_curve(hist: pd.DataFrame, metric: str, init: float):
    """Epochs, values and times of one trial, with the pre-training value as epoch 0."""
    h = hist.sort_values(ITERATION)
    x = h[ITERATION].to_numpy(dtype=float)
    y = pd.to_numeric(h[metric], errors="coerce").to_numpy(dtype=float) if metric in h else np.full(len(h), np.nan)
    t = pd.to_numeric(h[TIME_TOTAL], errors="coerce").to_numpy(dtype=float) if TIME_TOTAL in h else np.full(len(h), np.nan)
    if math.isfinite(init):
        x, y, t = np.r_[0.0, x], np.r_[init, y], np.r_[0.0, t]
    return x, y, t


def trial_quantities(x, y, t, target: float, diverged: bool, has_initial: bool) -> dict:
    """The per-trial speed and stability quantities of one curve (see the module docstring)."""
    out = dict.fromkeys(PER_TRIAL + (BEST,), math.nan)
    if len(y) == 0:
        return out
    finite = np.isfinite(y)
    reached = np.flatnonzero(finite & (y <= target)) if math.isfinite(target) else np.array([], int)
    out[EPOCHS_TO_TARGET] = float(x[reached[0]]) if len(reached) else math.inf
    out[SECONDS_TO_TARGET] = float(t[reached[0]]) if len(reached) else math.inf
    failed = diverged or not finite.all()
    if finite.any():
        out[BEST] = float(y[finite].min())
    if has_initial and len(y) > 1 and y[0] != 0:
        out[FIRST_EPOCH_RATIO] = float(y[1] / y[0]) if np.isfinite(y[1]) else math.inf
    if failed:  # a diverged run is worse than any finished one: +inf, so no group sheds its bad seeds
        out[FINAL] = out[AUC] = math.inf
    else:
        out[FINAL] = float(y[-1])
        if len(y) > 1 and y[0] != 0 and x[-1] > x[0]:
            out[AUC] = float(np.trapezoid(y, x) / ((x[-1] - x[0]) * y[0]))
    if failed:
        out[MAX_INCREASE] = math.inf
    elif len(y) > 1:
        prev = np.abs(y[:-1])
        rel = np.where(prev > 0, np.diff(y) / np.where(prev > 0, prev, 1.0), 0.0)
        out[MAX_INCREASE] = float(max(0.0, rel.max()))
    return out


# ------------------------------------------------------------------------------ grouping

def _keys(trials: pd.DataFrame, swept: list) -> tuple[list, list]:
    variant_params = [p for p in VARIANT_PARAMS if p in trials.columns]
    context = [c for c in CONTEXT_FIRST if c in trials.columns]
    context += [c for c in swept if c not in context and c != "variant" and c not in VARIANT_PARAMS
                and c not in REPLICATE_PARAMS and c not in NON_EXPERIMENTAL]
    return context, ["variant", *variant_params]


def _masked(trials: pd.DataFrame) -> pd.DataFrame:
    """Prior parameters a variant does not use are set to nan, so (for example) the baseline's
    trials at every gamma form one group, and powerlaw's at every min_decay another."""
    out = trials.copy()
    for p in VARIANT_PARAMS:
        if p not in out.columns:
            continue
        unused = out["variant"].map(lambda v: not getattr(VARIANTS.get(v), _USES[p], True))
        col = pd.Series(pd.to_numeric(out[p], errors="coerce").astype("Float64")
                        .to_numpy(dtype=float, na_value=np.nan), index=out.index)
        out[p] = col.mask(unused.astype(bool))
    return out


def _same(a, b) -> bool:
    try:
        return (a == b) or (pd.isna(a) and pd.isna(b))
    except (TypeError, ValueError):
        return a is b


def compare(study: Study, baseline: str = "vae", metric: Optional[str] = None,
            target: Union[None, float, dict] = None, baseline_params: Optional[dict] = None,
            alpha: float = 0.05, min_seeds: int = 3, holm_family: str = "all",
            n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> Comparison:
    """Compare every variant group with the baseline (see the module docstring).

    ``metric``: a history column (default ``metrics.DEFAULT_STUDY_METRIC``); ``target``: the loss
    to reach for the speed measures (default: the baseline's median final value per context; a
    number applies everywhere; a dict maps context tuples to numbers); ``baseline_params``:
    e.g. ``{"gamma": 0.0}`` when the baseline variant has several groups per context.
    """
    metric = metric or M.DEFAULT_STUDY_METRIC
    if holm_family not in ("all", "quantity"):
        raise ValueError(f"holm_family={holm_family!r} is invalid; allowed: all, quantity")
    if metric not in study.history.columns:
        known = ", ".join(c for c in study.metrics() if c not in (TIME_TOTAL,))
        raise ValueError(f"metric={metric!r} is not in this study's history; allowed: {known}")
    trials = study.trials
    if baseline not in set(trials["variant"]):
        raise ValueError(f"baseline={baseline!r} has no trials in this study; "
                         f"allowed: {', '.join(sorted(set(trials['variant'])))}")
    context_keys, variant_keys = _keys(trials, study.swept)
    group_keys = context_keys + variant_keys
    notes = []

    usable = trials[~trials["status"].isin([ERRORED, RUNNING])]
    masked = _masked(usable)
    # One trial per seed per group: the baseline at gamma 0 and gamma 1 is one configuration.
    reps = [c for c in REPLICATE_PARAMS if c in masked.columns]
    dup = masked.duplicated(group_keys + reps, keep="first") if reps else pd.Series(False, index=masked.index)
    if dup.any():
        notes.append(f"{int(dup.sum())} trial(s) repeat a configuration and seed already in their group "
                     f"(e.g. the baseline at several gammas it ignores); the first of each was kept.")
    masked = masked[~dup]

    # --------------------------------------------------------------- targets per context
    hist = study.history
    hist_by_trial = {tid: h for tid, h in hist.groupby(TRIAL_ID, sort=False)}
    finals = {}
    for tid in masked[TRIAL_ID]:
        h = hist_by_trial.get(tid)
        v = pd.to_numeric(h.sort_values(ITERATION)[metric], errors="coerce") if h is not None else pd.Series([], dtype=float)
        finals[tid] = float(v.iloc[-1]) if len(v) else math.nan
    masked = masked.assign(_final=masked[TRIAL_ID].map(finals))

    base = masked[masked["variant"] == baseline]
    if baseline_params:
        for k, v in baseline_params.items():
            if k not in base.columns:
                raise ValueError(f"baseline_params key {k!r} is not a trial parameter")
            base = base[base[k].map(lambda x: _same(x, v))]
    targets = {}
    for ctx, df in masked.groupby(context_keys, dropna=False, sort=True) if context_keys else [((), masked)]:
        ctx = ctx if isinstance(ctx, tuple) else (ctx,)
        if isinstance(target, dict):
            targets[ctx] = float(target.get(ctx, math.nan))
        elif target is not None:
            targets[ctx] = float(target)
        else:
            b = base
            for k, v in zip(context_keys, ctx):
                b = b[b[k].map(lambda x: _same(x, v))]
            vals = b["_final"][np.isfinite(b["_final"]) & ~b["diverged"].astype(bool)]
            targets[ctx] = float(np.median(vals)) if len(vals) else math.nan

    # --------------------------------------------------------------- per-trial quantities
    rows = []
    for rec in masked.to_dict("records"):
        ctx = tuple(rec[k] for k in context_keys)
        tgt = next((v for k, v in targets.items() if all(_same(a, b) for a, b in zip(k, ctx))), math.nan)
        init = rec.get(initial(metric), math.nan)
        init = float(init) if init is not None and not pd.isna(init) else math.nan
        h = hist_by_trial.get(rec[TRIAL_ID], hist.iloc[:0])
        x, y, t = trial_curve(h, metric, init)
        q = trial_quantities(x, y, t, tgt, bool(rec["diverged"]), math.isfinite(init))
        rows.append({TRIAL_ID: rec[TRIAL_ID], **{k: rec[k] for k in group_keys},
                     **{k: rec[k] for k in reps}, "status": rec["status"], **q,
                     DIVERGED: bool(rec["diverged"]), ASHA_STOPPED: rec["status"] == EARLY_STOPPED,
                     TOTAL_LOSS: rec.get(f"final_{M.VAL_LOSS}", math.nan), "target": tgt})
    per_trial = pd.DataFrame(rows)
    if per_trial.empty:
        raise ValueError("no finished trials to compare (all errored or still running)")

    # --------------------------------------------------------------- group summaries
    groups, tests = [], []
    gb = per_trial.groupby(group_keys, dropna=False, sort=True)
    base_groups = {}
    for key, g in gb:
        if g["variant"].iloc[0] != baseline:
            continue
        if baseline_params and not all(_same(g[k].iloc[0], v) for k, v in baseline_params.items()):
            continue
        ctx = key[:len(context_keys)]
        if ctx in base_groups:
            raise ValueError(f"baseline {baseline!r} has several groups in context {dict(zip(context_keys, ctx))}; "
                             f"pass baseline_params (e.g. {{'gamma': 0.0}}) to pick one")
        base_groups[ctx] = g

    for i, (key, g) in enumerate(gb):
        key = key if isinstance(key, tuple) else (key,)
        ctx = key[:len(context_keys)]
        b = next((bg for k, bg in base_groups.items() if all(_same(x, y) for x, y in zip(k, ctx))), None)
        is_base = b is not None and g.index.equals(b.index)
        rec = dict(zip(group_keys, key))
        rec["is_baseline"] = is_base
        rec["n"] = len(g)
        rec["target"] = float(g["target"].iloc[0])
        for q in PER_TRIAL + (BEST,):
            e = stats.bootstrap_ci(g[q], STATISTIC.get(q, _median), n_resamples=n_resamples, seed=seed + i)
            rec[q], rec[f"{q}_low"], rec[f"{q}_high"], rec[f"{q}_n"] = e.value, e.low, e.high, e.n
        fin = g[FINAL].to_numpy(dtype=float)
        fin = fin[np.isfinite(fin)]
        e = stats.bootstrap_ci(fin, _std, n_resamples=n_resamples, seed=seed + i)
        rec[SPREAD], rec[f"{SPREAD}_low"], rec[f"{SPREAD}_high"] = e.value, e.low, e.high
        rec["final_mean"] = float(fin.mean()) if len(fin) else math.nan
        rec["cv"] = float(e.value / rec["final_mean"]) if len(fin) > 1 and rec["final_mean"] else math.nan
        rec["reached"] = float(np.isfinite(g[EPOCHS_TO_TARGET]).mean())
        for r in RATES:
            k = int(g[r].sum())
            e = stats.proportion_ci(k, len(g))
            rec[r], rec[f"{r}_low"], rec[f"{r}_high"], rec[f"n_{r}"] = e.value, e.low, e.high, k
        rec[TOTAL_LOSS] = float(np.nanmedian(g[TOTAL_LOSS].astype(float))) if g[TOTAL_LOSS].notna().any() else math.nan
        rec["small"] = len(g) < min_seeds or (b is not None and len(b) < min_seeds)
        rec["rel_final"] = math.nan
        if b is not None and not is_base:
            bf = float(np.nanmedian(b[FINAL])) if b[FINAL].notna().any() else math.nan
            rec["rel_final"] = rec[FINAL] / bf - 1 if bf and math.isfinite(bf) else math.nan
            for q in TESTED:
                res, note = _test(q, g, b, min_seeds)
                tests.append({"_group": len(groups), **dict(zip(group_keys, key)), "quantity": q, "test": res.test,
                              "statistic": res.statistic, "p": res.pvalue, "n": len(g), "n_baseline": len(b),
                              "estimate": rec.get(q, math.nan),
                              "baseline_estimate": _group_estimate(q, b), "note": note})
        groups.append(rec)

    groups = pd.DataFrame(groups)
    tests = pd.DataFrame(tests, columns=["_group", *group_keys, "quantity", "test", "statistic", "p", "n", "n_baseline",
                                         "estimate", "baseline_estimate", "note"])
    tests["p_holm"] = np.nan
    if len(tests):
        if holm_family == "all":
            tests["p_holm"] = stats.holm(tests["p"].to_numpy())
        else:
            for q, idx in tests.groupby("quantity").groups.items():
                tests.loc[idx, "p_holm"] = stats.holm(tests.loc[idx, "p"].to_numpy())
    tests["significant"] = tests["p_holm"] < alpha
    tests["direction"] = [_direction(r) for r in tests.to_dict("records")]
    # p-values back onto the group rows
    for q in TESTED:
        groups[f"p_{q}"] = np.nan
        groups[f"p_holm_{q}"] = np.nan
    for r in tests.to_dict("records"):
        groups.loc[r["_group"], f"p_{r['quantity']}"] = r["p"]
        groups.loc[r["_group"], f"p_holm_{r['quantity']}"] = r["p_holm"]
    tests = tests.drop(columns="_group")

    if len(groups) and "n" in groups and (groups["n"] < min_seeds).any():
        notes.append(f"{int((groups['n'] < min_seeds).sum())} group(s) have fewer than {min_seeds} usable "
                     f"trials: flagged 'small' and not tested.")
    notes += _gamma_zero_check(per_trial, baseline, context_keys, reps)
    headline = _headline(groups, context_keys, baseline, min_seeds, alpha)
    stable = stable_lr_table(per_trial, context_keys, variant_keys) if "lr" in context_keys and \
        per_trial["lr"].nunique() > 1 else None
    return Comparison(metric=metric, baseline=baseline, per_trial=per_trial, groups=groups, tests=tests,
                      headline=headline, stable_lr=stable, targets=targets, context_keys=context_keys,
                      group_keys=group_keys, alpha=alpha, min_seeds=min_seeds, holm_family=holm_family,
                      notes=notes)


def _gamma_zero_check(per_trial: pd.DataFrame, baseline: str, context_keys: list, reps: list) -> list:
    """gamma = 0 must give exactly the baseline (DESIGN.md) for the KL variants with s_k = k^-gamma:
    compare their final values seed by seed with the standard VAE's - a free check of the whole
    pipeline whenever a study includes gamma = 0."""
    if baseline != "vae" or "gamma" not in per_trial or not reps:
        return []
    keys = context_keys + reps
    base = per_trial[per_trial["variant"] == "vae"].set_index(keys)[FINAL]
    out = []
    for variant, g in per_trial[(per_trial["gamma"] == 0)].groupby("variant", sort=True):
        v = VARIANTS.get(variant)
        if v is None or not v.uses_gamma or v.divergence != KL or variant == "vae":
            continue
        joined = g.set_index(keys)[FINAL].to_frame("v").join(base.rename("b"), how="inner").dropna()
        if joined.empty:
            continue
        diff = float((joined["v"] - joined["b"]).abs().max())
        scale = float(joined["b"].abs().max()) or 1.0
        verdict = "reproduces the baseline" if diff <= 1e-6 * scale else "does NOT reproduce the baseline"
        out.append(f"check: {variant} at γ = 0 {verdict} (largest |Δ final| = {diff:.3g} over "
                   f"{len(joined)} matched seed(s)); DESIGN.md requires γ = 0 to equal the baseline.")
    return out


def _group_estimate(q: str, g: pd.DataFrame) -> float:
    if q in RATES:
        return float(g[q].mean()) if len(g) else math.nan
    if q == SPREAD:
        v = g[FINAL].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    v = g[q].to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(STATISTIC.get(q, _median)(v)) if len(v) else math.nan


def _test(q: str, g: pd.DataFrame, b: pd.DataFrame, min_seeds: int):
    """One test of quantity q, group g against baseline b; small groups are not tested."""
    if q in RATES:
        n, nb = len(g), len(b)
        if n < min_seeds or nb < min_seeds:
            return stats.TestResult("fisher", math.nan, math.nan), f"not tested: n < {min_seeds}"
        return stats.fisher(int(g[q].sum()), n, int(b[q].sum()), nb), ""
    if q == SPREAD:
        x, y = g[FINAL].to_numpy(float), b[FINAL].to_numpy(float)
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        if len(x) < min_seeds or len(y) < min_seeds:
            return stats.TestResult("brown-forsythe", math.nan, math.nan), f"not tested: n < {min_seeds}"
        return stats.spread_test(x, y), ""
    x, y = g[q].to_numpy(float), b[q].to_numpy(float)
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    if len(x) < min_seeds or len(y) < min_seeds:
        return stats.TestResult("mann-whitney", math.nan, math.nan), f"not tested: n < {min_seeds}"
    return stats.mann_whitney(x, y), ""


def _direction(r: dict) -> str:
    """'better' / 'worse' than the baseline (every quantity here is lower-is-better), '' if equal."""
    a, b = r["estimate"], r["baseline_estimate"]
    if a is None or b is None or pd.isna(a) or pd.isna(b) or a == b or \
            (math.isfinite(a) and math.isfinite(b) and np.isclose(a, b, rtol=1e-9, atol=0)):
        return ""
    return "better" if a < b else "worse"


def _headline(groups: pd.DataFrame, context_keys: list, baseline: str, min_seeds: int,
              alpha: float) -> pd.DataFrame:
    """Each variant's best group per context (lowest median final value among groups with enough
    seeds, divergence rate breaking ties), ranked within the context."""
    if groups.empty:
        return groups
    rows = []
    ctx_iter = groups.groupby(context_keys, dropna=False, sort=True) if context_keys else [((), groups)]
    for _, cg in ctx_iter:
        best_rows = []
        for variant, vg in cg.groupby("variant", sort=True):
            pool = vg[vg["n"] >= min_seeds] if (vg["n"] >= min_seeds).any() else vg
            pool = pool.assign(_f=pool[FINAL].fillna(np.inf)).sort_values(["_f", DIVERGED], kind="stable")
            best_rows.append(pool.iloc[0].drop(labels="_f"))
        ranked = pd.DataFrame(best_rows)
        # ties go to the baseline: a variant ranks above it only by being better
        ranked = ranked.assign(_f=ranked[FINAL].fillna(np.inf), _b=~ranked["is_baseline"].astype(bool))
        ranked = ranked.sort_values(["_f", DIVERGED, "_b"], kind="stable").drop(columns=["_f", "_b"])
        ranked.insert(0, "rank", range(1, len(ranked) + 1))
        ranked["verdict"] = [_verdict(r, baseline, alpha) for r in ranked.to_dict("records")]
        rows.append(ranked)
    return pd.concat(rows, ignore_index=True)


def _verdict(r: dict, baseline: str, alpha: float) -> str:
    if r["variant"] == baseline:
        return "baseline"
    if r.get("small"):
        return "not tested (few seeds)"
    p = r.get(f"p_holm_{FINAL}")
    if p is None or pd.isna(p):
        return "not tested"
    if p < alpha:
        return "better" if r.get("rel_final", 0) < 0 else "worse"
    return "no significant difference"


def stable_lr_table(per_trial: pd.DataFrame, context_keys: list, variant_keys: list) -> pd.DataFrame:
    """Per group (all keys but lr): the largest lr up to which no trial diverged (every lr at or
    below it trained without divergence), and the smallest lr at which some trial diverged."""
    keys = [k for k in context_keys if k != "lr"] + variant_keys
    rows = []
    for key, g in per_trial.groupby(keys, dropna=False, sort=True):
        rates = g.groupby("lr")[DIVERGED].agg(["mean", "size"]).sort_index()
        stable, first_bad = math.nan, math.nan
        for lr, r in rates.iterrows():
            if r["mean"] > 0:
                first_bad = float(lr)
                break
            stable = float(lr)
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                     "lrs": ", ".join(f"{lr:g}" for lr in rates.index),
                     "max_stable_lr": stable, "first_diverging_lr": first_bad,
                     "n": int(rates["size"].sum())})
    return pd.DataFrame(rows)
