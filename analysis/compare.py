"""Compare prior variants with the baseline for speed and stability, with paired statistics.

Groups are variant x prior parameters (gamma, min_decay, clip_dim, decay_rate) within a
*context* (dataset, latent_dim, lr, kl_coeff and any other swept setting); seeds are the
replicates. Each group is compared with the baseline's group in the same context.

What is compared (DESIGN.md, "Comparing variants fairly"): every KL variant is an exact
reparameterisation of the same beta-VAE, so ``val_loss`` (``metrics.DEFAULT_STUDY_METRIC``) is one
objective for all of them and the default metric. ``powerlaw_wae`` optimises a squared-W2
objective: on a total loss it is never ranked or tested against the KL variants, only placed in
the rate-distortion plane. Rate = KL summed over latent dims (nats per example, ``val_rate``),
distortion = ``val_recon_mu``. Where the study sweeps the baseline's beta (kl_coeff), the
baseline's own frontier is traced and each group's *distortion gap* at equal rate is measured:
per seed, the group's distortion minus the frontier of the same seed interpolated (in log rate)
at the group's rate; a lower distortion bought with a higher rate is a move along the curve,
not a gain.

Equal budgets: under ASHA trials stop at different epochs, so each group is compared with the
baseline at the last epoch every compared (non-diverged) trial of both reached - the group's
``epoch`` - never on "final" values of runs of different lengths.

Per trial (on the chosen metric, at the comparison epoch, with the pre-training value as epoch 0
when logged):
- ``final``: value at the comparison epoch; ``best``: minimum up to it;
- ``epochs_to_target`` / ``seconds_to_target``: first epoch (and Tune's ``time_total_s`` then)
  at which the metric is <= the target (default: the baseline's median final value in the same
  context, its diverged trials counted as never reaching anything, i.e. +inf); ``inf`` when
  never reached (censored, kept in the rank tests);
- ``auc``: area under the curve from epoch 0 on, divided by (epochs x initial value);
- ``first_epoch_ratio``: value after the first epoch / initial value;
- ``max_increase``: largest relative epoch-to-epoch increase (0 = monotone; ``inf`` if diverged);
- ``rate``, ``distortion``: val_rate and val_recon_mu at the comparison epoch.
A diverged trial's ``final``, ``auc`` and ``max_increase`` are ``inf``: a run that blew up is worse
than any that finished, and leaving it out would let a group look good by losing its bad seeds.

Statistics: a seed fixes initial weights, data order and noise for every variant, so a group is
compared with the baseline seed by seed - Wilcoxon signed-rank on the paired differences with a
bootstrap CI of the median difference, the exact McNemar test for divergence; unpaired tests
(Mann-Whitney, Fisher) only where no seeds pair. A study may declare a small family of *primary*
comparisons (study.json's ``study_config.primary``, from the preset): Holm corrects over that
family only, and every other test is *exploratory*, reported with its raw p-value and labelled so
(``holm_family="all"`` or ``"quantity"`` corrects over everything instead). The headline picks
each variant's best group on the same seeds it reports on (said so); with enough seeds,
``split`` chooses on half the seeds and reports on the other half.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import pandas as pd

from plvae import metrics as M
from plvae.priors import KL, PRIOR_FIELDS, VARIANTS, W2, matched_gamma, prior_scale

from analysis import stats
from analysis.load import (EARLY_STOPPED, ERRORED, ITERATION, RUNNING, TIME_TOTAL,
                           TRIAL_ID, Study, initial)

# Prior parameters, each used only by some variants (plvae.priors.Variant.uses).
VARIANT_PARAMS = PRIOR_FIELDS
REPLICATE_PARAMS = ("seed", "data_seed")
# Fields that do not change what is learned (or are bookkeeping): never split groups.
NON_EXPERIMENTAL = ("data_dir", "num_workers", "accelerator", "extra", "download", "max_epochs")
CONTEXT_FIRST = ("dataset", "latent_dim", "lr", "kl_coeff")
BETA = "kl_coeff"
TOTAL_LOSSES = (M.VAL_LOSS, M.TRAIN_LOSS)

# Per-trial quantities.
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
TOTAL_LOSS = "total_loss"       # final val_loss, shown beside
RATE = "rate"                   # final val_rate: KL summed over latent dims, nats per example
DISTORTION = "distortion"       # final val_recon_mu
DISTORTION_GAP = "distortion_gap"  # distortion minus the baseline frontier's at the same rate
EPOCH = "epoch"                 # the epoch a comparison is made at

SPEED = (EPOCHS_TO_TARGET, SECONDS_TO_TARGET, AUC, FIRST_EPOCH_RATIO)
STABILITY = (DIVERGED, SPREAD, MAX_INCREASE, ASHA_STOPPED)
PER_TRIAL = (FINAL, EPOCHS_TO_TARGET, SECONDS_TO_TARGET, AUC, FIRST_EPOCH_RATIO, MAX_INCREASE)
RATES = (DIVERGED, ASHA_STOPPED)
TESTED = (FINAL, *SPEED, *STABILITY, DISTORTION_GAP)
# Quantities of the metric's own curve: not comparable across objectives (W2 against KL).
ON_OBJECTIVE = (FINAL, *SPEED, SPREAD, MAX_INCREASE)
LABELS = {
    FINAL: "final", BEST: "best", EPOCHS_TO_TARGET: "epochs to target",
    SECONDS_TO_TARGET: "seconds to target", AUC: "normalised AUC",
    FIRST_EPOCH_RATIO: "epoch-1 / initial", MAX_INCREASE: "largest rise",
    SPREAD: "std across seeds", DIVERGED: "divergence rate", ASHA_STOPPED: "ASHA-stopped share",
    TOTAL_LOSS: "total loss", RATE: "rate (nats)", DISTORTION: "distortion (recon_mu)",
    DISTORTION_GAP: "distortion gap at equal rate",
}
# A preset's `primary` entries name these quantities (tune's StudyConfig validates them).
PRIMARY_QUANTITIES = {"final": FINAL, "epochs_to_target": EPOCHS_TO_TARGET, "diverged": DIVERGED,
                      "distortion_gap": DISTORTION_GAP}
PRIMARY, EXPLORATORY = "primary", "exploratory"
HOLM_FAMILIES = ("primary", "all", "quantity")
_median = np.median
_std = functools.partial(np.std, ddof=1)
# Times to target are censored (inf = never) and, at the default target, half the baseline reaches
# it by construction: the lower median keeps a group where half the trials got there finite.
_median_low = functools.partial(np.quantile, q=0.5, method="lower")
STATISTIC = {EPOCHS_TO_TARGET: _median_low, SECONDS_TO_TARGET: _median_low}
MIN_SPLIT_SEEDS = 6


@dataclass
class Comparison:
    """What ``compare`` found. Every table is a plain DataFrame (see the module docstring).

    ``per_trial``: one row per usable trial with its quantities at its group's comparison epoch;
    ``groups``: one row per group with estimates, CIs and p-values (``p_<q>`` raw, ``p_holm_<q>``
    corrected where the test is in the corrected family); ``tests``: the same tests in long form,
    with ``family`` (primary / exploratory), ``paired``, the median paired difference and its CI;
    ``primary``: the declared primary tests; ``headline``: each variant's best group per context;
    ``split``: the best gamma chosen on half the seeds, reported on the other half;
    ``frontier``: the baseline's rate-distortion points over beta; ``stable_lr``: the stable
    learning-rate region per group when lr is swept.
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
    holm_family: str = "primary"
    notes: list = field(default_factory=list)
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)
    frontier_keys: list = field(default_factory=list)
    primary: pd.DataFrame = field(default_factory=pd.DataFrame)
    split: pd.DataFrame = field(default_factory=pd.DataFrame)
    data_alpha: float = math.nan
    data_gamma: float = math.nan

    @property
    def n_tests(self) -> int:
        return int(self.tests["p"].notna().sum()) if len(self.tests) else 0

    def significant(self) -> pd.DataFrame:
        """The tests that are significant after Holm correction (in the corrected family)."""
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
    reached = np.flatnonzero(finite & (y <= target)) if not math.isnan(target) else np.array([], int)
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


@dataclass
class _Trial:
    """One trial's curves (epoch 0 = before training where logged) and when it ended."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    rate: np.ndarray
    distortion: np.ndarray
    last: float            # last epoch reported
    diverged_at: float     # epoch it diverged at (inf: never)
    has_initial: bool

    def at(self, epoch: float, target: float) -> dict:
        """Every per-trial quantity as of `epoch` (the comparison epoch)."""
        keep = self.x <= epoch
        diverged = self.diverged_at <= epoch
        q = trial_quantities(self.x[keep], self.y[keep], self.t[keep], target, diverged, self.has_initial)
        reported = np.flatnonzero(keep & (self.x > 0))
        i = reported[-1] if len(reported) else None
        ok = i is not None and not diverged
        q[RATE] = float(self.rate[i]) if ok else math.nan
        q[DISTORTION] = float(self.distortion[i]) if ok else math.nan
        q[DIVERGED] = bool(diverged)
        return q


def _trial_curves(rec: dict, hist: pd.DataFrame, metric: str) -> _Trial:
    init = rec.get(initial(metric), math.nan)
    init = float(init) if init is not None and not pd.isna(init) else math.nan
    x, y, t = trial_curve(hist, metric, init)
    h = hist.sort_values(ITERATION)

    def col(name):
        v = pd.to_numeric(h[name], errors="coerce").to_numpy(dtype=float) if name in h else np.full(len(h), np.nan)
        return np.r_[np.nan, v] if math.isfinite(init) else v

    last = float(h[ITERATION].max()) if len(h) else 0.0
    d = rec.get("diverged_epoch")
    diverged_at = float(d) if rec.get("diverged") and d is not None and not pd.isna(d) else (
        last if rec.get("diverged") else math.inf)
    return _Trial(x, y, t, col(M.VAL_RATE), col(M.VAL_RECON_MU), last, diverged_at, math.isfinite(init))


# ------------------------------------------------------------------------------ grouping

def _keys(trials: pd.DataFrame, swept: list) -> tuple[list, list]:
    variant_params = [p for p in VARIANT_PARAMS if p in trials.columns]
    context = [c for c in CONTEXT_FIRST if c in trials.columns]
    context += [c for c in swept if c not in context and c != "variant" and c not in VARIANT_PARAMS
                and c not in REPLICATE_PARAMS and c not in NON_EXPERIMENTAL]
    return context, ["variant", *variant_params]


def _key(values) -> tuple:
    """A group key with nan as None: tuples holding nan never compare equal (nan != nan)."""
    return tuple(None if (v is None or (not isinstance(v, str) and pd.isna(v))) else v for v in values)


def _unkey(group_keys: list, key: tuple) -> dict:
    return {k: (math.nan if v is None else v) for k, v in zip(group_keys, key)}


def _masked(trials: pd.DataFrame) -> pd.DataFrame:
    """Prior parameters a variant does not use are set to nan, so (for example) the baseline's
    trials at every gamma form one group, and powerlaw's at every min_decay another."""
    out = trials.copy()
    for p in VARIANT_PARAMS:
        if p not in out.columns:
            continue
        unused = out["variant"].map(lambda v, p=p: v in VARIANTS and not VARIANTS[v].uses(p))
        col = pd.Series(pd.to_numeric(out[p], errors="coerce").astype("Float64")
                        .to_numpy(dtype=float, na_value=np.nan), index=out.index)
        out[p] = col.mask(unused.astype(bool))
    return out


def _same(a, b) -> bool:
    try:
        return bool((a == b) or (pd.isna(a) and pd.isna(b)))
    except (TypeError, ValueError):
        return a is b


def _match(df: pd.DataFrame, keys: list, values) -> pd.DataFrame:
    for k, v in zip(keys, values):
        # a boolean array, never an (empty, object-dtype) Series: pandas would take that for columns
        df = df.loc[np.fromiter((_same(x, v) for x in df[k]), dtype=bool, count=len(df))]
    return df


def _objective(variant: str) -> str:
    v = VARIANTS.get(variant)
    return "w2" if v is not None and v.divergence == W2 else "kl"


def data_alpha_gamma(study: Study) -> tuple[float, float]:
    """The study's measured data alpha and matched gamma (nan when not measured)."""
    alphas = [a for a in study.data_alpha.values() if isinstance(a, (int, float))]
    gamma = math.nan
    if "extra" in study.trials.columns:
        for e in study.trials["extra"].dropna():
            try:
                tags = json.loads(e) if isinstance(e, str) else dict(e)
            except (TypeError, ValueError):
                continue
            if isinstance(tags.get("data_gamma"), (int, float)):
                gamma = float(tags["data_gamma"])
                break
    alpha = float(alphas[0]) if alphas else math.nan
    if math.isnan(gamma) and math.isfinite(alpha):
        gamma = matched_gamma(alpha)
    return alpha, gamma


def compare(study: Study, baseline: str = "vae", metric: Optional[str] = None,
            target: Union[None, float, dict] = None, baseline_params: Optional[dict] = None,
            alpha: float = 0.05, min_seeds: int = 3, holm_family: str = "primary",
            primary: Optional[list] = None, n_resamples: int = stats.N_RESAMPLES, seed: int = 0) -> Comparison:
    """Compare every variant group with the baseline (see the module docstring).

    ``metric``: a history column (default ``metrics.DEFAULT_STUDY_METRIC``, val_loss); ``target``:
    the loss to reach for the speed measures (default: the baseline's median final value per
    context; a number applies everywhere; a dict maps context tuples to numbers);
    ``baseline_params``: e.g. ``{"gamma": 0.0}`` when the baseline variant has several groups per
    context; ``primary``: the declared primary comparisons (default: the study's own, from
    study.json); ``holm_family``: "primary" (Holm over the primary family only), "all" or
    "quantity".
    """
    metric = metric or M.DEFAULT_STUDY_METRIC
    if holm_family not in HOLM_FAMILIES:
        raise ValueError(f"holm_family={holm_family!r} is invalid; allowed: {', '.join(HOLM_FAMILIES)}")
    if metric not in study.history.columns:
        known = ", ".join(c for c in study.metrics() if c not in (TIME_TOTAL,))
        raise ValueError(f"metric={metric!r} is not in this study's history; allowed: {known}")
    trials = study.trials
    if baseline not in set(trials["variant"]):
        raise ValueError(f"baseline={baseline!r} has no trials in this study; "
                         f"allowed: {', '.join(sorted(set(trials['variant'])))}")
    if primary is None:
        primary = list(((study.meta.get("study_config") or {}).get("primary")) or [])
    context_keys, variant_keys = _keys(trials, study.swept)
    group_keys = context_keys + variant_keys
    notes = []
    total_loss = metric in TOTAL_LOSSES
    data_alpha, data_gamma = data_alpha_gamma(study)

    usable = trials[~trials["status"].isin([ERRORED, RUNNING])]
    masked = _masked(usable)
    # One trial per seed per group: the baseline at gamma 0 and gamma 1 is one configuration.
    reps = [c for c in REPLICATE_PARAMS if c in masked.columns]
    dup = masked.duplicated(group_keys + reps, keep="first") if reps else pd.Series(False, index=masked.index)
    if dup.any():
        notes.append(f"{int(dup.sum())} trial(s) repeat a configuration and seed already in their group "
                     f"(e.g. the baseline at several gammas it ignores); the first of each was kept.")
    masked = masked[~dup]
    if masked.empty:
        raise ValueError("no finished trials to compare (all errored or still running)")

    hist_by_trial = {tid: h for tid, h in study.history.groupby(TRIAL_ID, sort=False)}
    empty_hist = study.history.iloc[:0]
    curves = {rec[TRIAL_ID]: _trial_curves(rec, hist_by_trial.get(rec[TRIAL_ID], empty_hist), metric)
              for rec in masked.to_dict("records")}
    masked = masked.assign(_g=[_key(r) for r in zip(*[masked[k] for k in group_keys])])

    def common_epoch(tids) -> float:
        """The last epoch every non-diverged trial of these reached (all diverged: the longest)."""
        lasts = [curves[t].last for t in tids if not math.isfinite(curves[t].diverged_at)]
        return float(min(lasts)) if lasts else float(max((curves[t].last for t in tids), default=0.0))

    # --------------------------------------------------------------- groups and baselines
    group_trials = {key: g for key, g in masked.groupby("_g", sort=True)}
    base_of = {}   # context -> the baseline group's key
    for key, g in group_trials.items():
        if g["variant"].iloc[0] != baseline:
            continue
        rec = _unkey(group_keys, key)
        if baseline_params:
            for k in baseline_params:
                if k not in g.columns:
                    raise ValueError(f"baseline_params key {k!r} is not a trial parameter")
            if not all(_same(rec[k], v) for k, v in baseline_params.items()):
                continue
        ctx = key[:len(context_keys)]
        if ctx in base_of:
            raise ValueError(f"baseline {baseline!r} has several groups in context {dict(zip(context_keys, ctx))}; "
                             f"pass baseline_params (e.g. {{'gamma': 0.0}}) to pick one")
        base_of[ctx] = key

    # --------------------------------------------------------------- targets per context
    targets = {}
    for key, g in group_trials.items():
        ctx = key[:len(context_keys)]
        if ctx in targets:
            continue
        if isinstance(target, dict):
            targets[ctx] = float(target.get(ctx, math.nan))
        elif target is not None:
            targets[ctx] = float(target)
        elif ctx in base_of:
            bt = group_trials[base_of[ctx]][TRIAL_ID]
            e = common_epoch(bt)
            finals = [curves[t].at(e, math.nan)[FINAL] for t in bt]
            # diverged baseline trials never reach anything: +inf in the median, not left out
            med = float(np.median(finals)) if finals else math.nan
            targets[ctx] = med if math.isfinite(med) else math.nan
            if finals and not math.isfinite(med):
                notes.append(f"the baseline diverged in at least half its seeds at {_ctx_text(context_keys, ctx)}: "
                             f"no target for epochs to target there.")
        else:
            targets[ctx] = math.nan

    # --------------------------------------------------------------- per-trial quantities
    epochs, rows, cache = {}, [], {}

    def quantities(tid, epoch, tgt):
        k = (tid, epoch, tgt)
        if k not in cache:
            cache[k] = curves[tid].at(epoch, tgt)
        return cache[k]

    for key, g in group_trials.items():
        ctx = key[:len(context_keys)]
        bkey = base_of.get(ctx)
        tids = list(g[TRIAL_ID]) + (list(group_trials[bkey][TRIAL_ID]) if bkey is not None and bkey != key else [])
        epochs[key] = common_epoch(tids)
        for rec in g.to_dict("records"):
            q = quantities(rec[TRIAL_ID], epochs[key], targets[ctx])
            rows.append({TRIAL_ID: rec[TRIAL_ID], **{k: rec[k] for k in group_keys}, **{k: rec[k] for k in reps},
                         "status": rec["status"], EPOCH: epochs[key], **q,
                         ASHA_STOPPED: rec["status"] == EARLY_STOPPED,
                         TOTAL_LOSS: rec.get(f"final_{M.VAL_LOSS}", math.nan), "target": targets[ctx], "_g": key})
    per_trial = pd.DataFrame(rows)

    def frame(key, epoch):
        """A group's trials as a frame of quantities at `epoch` (the baseline at a pair's epoch)."""
        g = group_trials[key]
        ctx = key[:len(context_keys)]
        out = [{**{k: r[k] for k in reps}, **quantities(r[TRIAL_ID], epoch, targets[ctx]),
                ASHA_STOPPED: r["status"] == EARLY_STOPPED} for r in g.to_dict("records")]
        return pd.DataFrame(out)

    # --------------------------------------------------------------- rate-distortion frontier
    frontier_keys = [k for k in context_keys if k != BETA]
    frontier, frontier_trials = _frontier(per_trial, baseline, frontier_keys, n_resamples, seed)

    # --------------------------------------------------------------- group summaries and tests
    groups, tests = [], []
    equiv = _equivalences(group_trials, group_keys, context_keys)
    for i, (key, g) in enumerate(per_trial.groupby("_g", sort=True)):
        ctx = key[:len(context_keys)]
        bkey = base_of.get(ctx)
        is_base = bkey == key
        variant = g["variant"].iloc[0]
        rec = _unkey(group_keys, key)
        rec.update({"is_baseline": is_base, "n": len(g), "target": float(g["target"].iloc[0]), EPOCH: epochs[key],
                    "objective": _objective(variant), "equiv": equiv.get(key, "")})
        for q in PER_TRIAL + (BEST,):
            e = stats.bootstrap_ci(g[q], STATISTIC.get(q, _median), n_resamples=n_resamples, seed=seed + i)
            rec[q], rec[f"{q}_low"], rec[f"{q}_high"], rec[f"{q}_n"] = e.value, e.low, e.high, e.n
        for q in (RATE, DISTORTION):
            e = stats.bootstrap_ci(g[q][np.isfinite(g[q].astype(float))], _median, n_resamples=n_resamples,
                                   seed=seed + i)
            rec[q], rec[f"{q}_low"], rec[f"{q}_high"] = e.value, e.low, e.high
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
        rec["n_diverged"] = rec[f"n_{DIVERGED}"]
        rec[TOTAL_LOSS] = float(np.nanmedian(g[TOTAL_LOSS].astype(float))) if g[TOTAL_LOSS].notna().any() else math.nan
        b = frame(bkey, epochs[key]) if bkey is not None and not is_base else None
        rec["small"] = len(g) < min_seeds or (b is not None and len(b) < min_seeds)
        rec["rel_final"] = math.nan
        for q in (DISTORTION_GAP, f"{DISTORTION_GAP}_low", f"{DISTORTION_GAP}_high", "rel_distortion_gap"):
            rec[q] = math.nan
        rec["n_gap"] = 0
        if b is not None:
            bf = float(np.median(b[FINAL])) if len(b) else math.nan
            comparable = not (total_loss and _objective(variant) != _objective(baseline))
            if comparable:
                rec["rel_final"] = rec[FINAL] / bf - 1 if bf and math.isfinite(bf) and math.isfinite(rec[FINAL]) \
                    else math.nan
            gap = _gap(g, frontier_trials, frontier_keys, _unkey(group_keys, key), reps)
            if len(gap):
                e = stats.bootstrap_ci(gap["gap"], _median, n_resamples=n_resamples, seed=seed + i)
                rec[DISTORTION_GAP], rec[f"{DISTORTION_GAP}_low"], rec[f"{DISTORTION_GAP}_high"] = e.value, e.low, e.high
                rec["rel_distortion_gap"] = float(np.median(gap["rel_gap"]))
                rec["n_gap"] = len(gap)
            for q in TESTED:
                if q in ON_OBJECTIVE and not comparable:
                    continue  # a W2 objective is not a KL one: placed in the rate-distortion plane only
                if q == DISTORTION_GAP:
                    if not frontier_trials.empty:
                        tests.append(_gap_test(len(groups), rec, key, group_keys, gap, min_seeds, n_resamples, seed + i))
                    continue
                tests.append(_test(len(groups), q, rec, key, group_keys, g, b, reps, min_seeds, n_resamples, seed + i))
                if q == FINAL:
                    rec["direction_final"] = _direction(tests[-1])
        groups.append(rec)

    groups = pd.DataFrame(groups)
    test_cols = ["_group", *group_keys, "quantity", "test", "paired", "statistic", "p", "n", "n_baseline",
                 "n_pairs", "estimate", "baseline_estimate", "diff", "diff_low", "diff_high", "note"]
    tests = pd.DataFrame(tests, columns=test_cols)
    tests["family"] = EXPLORATORY
    primary_rows = _mark_primary(tests, primary, per_trial, data_gamma, notes)
    tests.loc[primary_rows, "family"] = PRIMARY
    tests["p_holm"] = np.nan
    if len(tests):
        if holm_family == "primary":
            if primary_rows:
                tests.loc[primary_rows, "p_holm"] = stats.holm(tests.loc[primary_rows, "p"].to_numpy())
        elif holm_family == "all":
            tests["p_holm"] = stats.holm(tests["p"].to_numpy())
        else:
            for q, idx in tests.groupby("quantity").groups.items():
                tests.loc[idx, "p_holm"] = stats.holm(tests.loc[idx, "p"].to_numpy())
    tests["significant"] = tests["p_holm"] < alpha
    tests["direction"] = [_direction(r) for r in tests.to_dict("records")]
    for q in TESTED:
        groups[f"p_{q}"] = np.nan
        groups[f"p_holm_{q}"] = np.nan
    for r in tests.to_dict("records"):
        groups.loc[r["_group"], f"p_{r['quantity']}"] = r["p"]
        groups.loc[r["_group"], f"p_holm_{r['quantity']}"] = r["p_holm"]
    tests = tests.drop(columns="_group")
    per_trial = per_trial.drop(columns="_g")

    if len(groups) and (groups["n"] < min_seeds).any():
        notes.append(f"{int((groups['n'] < min_seeds).sum())} group(s) have fewer than {min_seeds} usable "
                     f"trials: flagged 'small' and not tested.")
    if len({c.last for c in curves.values() if not math.isfinite(c.diverged_at)}) > 1:
        notes.append("trials ran different numbers of epochs (ASHA): each group is compared with the baseline at "
                     "the last epoch every compared trial of both reached (the `epoch` column).")
    if total_loss and (groups["objective"] == "w2").any():
        notes.append(f"W2 groups optimise a different objective: not ranked or tested against the KL variants on "
                     f"{metric}; see the rate-distortion view (distortion gap at equal rate).")
    if len(frontier) and frontier["interpolation_error"].notna().any():
        worst = float(frontier["interpolation_error"].abs().max())
        notes.append(f"the baseline frontier is interpolated between its β points; leaving out an interior point "
                     f"misses it by up to {100 * worst:.1f}% of its distortion, so distortion gaps of that order are "
                     f"interpolation error, not evidence.")
    if equiv:
        notes.append("groups identical by construction (same prior scales, sampling and divergence) are marked ≡: "
                     + "; ".join(sorted(set(equiv.values()))) + ".")
    notes += _gamma_zero_check(per_trial, baseline, context_keys, reps)
    headline = _headline(groups, context_keys, baseline, min_seeds, alpha, total_loss)
    split = _split(per_trial, context_keys, variant_keys, baseline, reps, total_loss, n_resamples, seed)
    if len(headline):
        notes.append("the headline picks each variant's best setting on the same seeds it reports, which flatters "
                     "the winner" + ("; `split` chooses the setting on half the seeds and reports it on the other "
                                     "half." if len(split) else f" (a split needs {MIN_SPLIT_SEEDS} seeds)."))
    stable = stable_lr_table(per_trial, context_keys, variant_keys) if "lr" in context_keys and \
        per_trial["lr"].nunique() > 1 else None
    return Comparison(metric=metric, baseline=baseline, per_trial=per_trial, groups=groups, tests=tests,
                      headline=headline, stable_lr=stable, targets=targets, context_keys=context_keys,
                      group_keys=group_keys, alpha=alpha, min_seeds=min_seeds, holm_family=holm_family,
                      notes=notes, frontier=frontier, frontier_keys=frontier_keys,
                      primary=tests[tests["family"] == PRIMARY].reset_index(drop=True), split=split,
                      data_alpha=data_alpha, data_gamma=data_gamma)


def _ctx_text(keys: list, ctx) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(keys, ctx)) or "the study"


# ------------------------------------------------------------------------------ tests

def _test(i: int, q: str, rec: dict, key, group_keys, g: pd.DataFrame, b: pd.DataFrame, reps: list,
          min_seeds: int, n_resamples: int, seed: int) -> dict:
    """One test of quantity q, group g against baseline b: paired by seed where seeds pair."""
    row = {"_group": i, **_unkey(group_keys, key), "quantity": q, "n": len(g), "n_baseline": len(b),
           "estimate": rec.get(q, math.nan), "baseline_estimate": _group_estimate(q, b), "note": "",
           "paired": False, "n_pairs": 0, "diff": math.nan, "diff_low": math.nan, "diff_high": math.nan}
    pairs = g.merge(b, on=reps, suffixes=("", "_b")) if reps else pd.DataFrame()
    row["n_pairs"] = len(pairs)
    if q == SPREAD:  # a group statistic: no pairing possible
        x, y = g[FINAL].to_numpy(float), b[FINAL].to_numpy(float)
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        if len(x) < min_seeds or len(y) < min_seeds:
            return {**row, "test": "brown-forsythe", "statistic": math.nan, "p": math.nan,
                    "note": f"not tested: n < {min_seeds}"}
        res = stats.spread_test(x, y)
        return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue}
    if len(pairs) >= min_seeds:
        row["paired"] = True
        if q in RATES:
            res = stats.mcnemar_exact(pairs[q].astype(bool), pairs[f"{q}_b"].astype(bool))
            row["diff"] = float(pairs[q].astype(float).mean() - pairs[f"{q}_b"].astype(float).mean())
        else:
            d = stats.paired_differences(pairs[q], pairs[f"{q}_b"])
            res = stats.wilcoxon_paired(pairs[q], pairs[f"{q}_b"])
            e = stats.bootstrap_ci(d, stats.median_inf, n_resamples=n_resamples, seed=seed)
            row["diff"], row["diff_low"], row["diff_high"] = e.value, e.low, e.high
        return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue}
    # unpaired only where pairing is impossible (no shared seeds)
    if len(g) < min_seeds or len(b) < min_seeds:
        return {**row, "test": "fisher" if q in RATES else "mann-whitney", "statistic": math.nan, "p": math.nan,
                "note": f"not tested: n < {min_seeds}"}
    if q in RATES:
        res = stats.fisher(int(g[q].sum()), len(g), int(b[q].sum()), len(b))
    else:
        res = stats.mann_whitney(g[q].to_numpy(float), b[q].to_numpy(float))
    return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue,
            "note": "unpaired: no seeds shared with the baseline"}


def _gap_test(i: int, rec: dict, key, group_keys, gap: pd.DataFrame, min_seeds: int, n_resamples: int,
              seed: int) -> dict:
    row = {"_group": i, **_unkey(group_keys, key), "quantity": DISTORTION_GAP, "test": "wilcoxon",
           "paired": True, "n": rec["n"], "n_baseline": len(gap), "n_pairs": len(gap),
           "estimate": rec[DISTORTION_GAP], "baseline_estimate": 0.0, "diff": rec[DISTORTION_GAP],
           "diff_low": rec[f"{DISTORTION_GAP}_low"], "diff_high": rec[f"{DISTORTION_GAP}_high"], "note": ""}
    if len(gap) < min_seeds:
        return {**row, "statistic": math.nan, "p": math.nan,
                "note": f"not tested: {len(gap)} seed(s) inside the baseline frontier's rate range (< {min_seeds})"}
    res = stats.wilcoxon_paired(gap["gap"], None)
    return {**row, "statistic": res.statistic, "p": res.pvalue, "note": "per-seed frontier, interpolated in log rate"}


def _group_estimate(q: str, g: pd.DataFrame) -> float:
    if q in RATES:
        return float(g[q].astype(float).mean()) if len(g) else math.nan
    if q == SPREAD:
        v = g[FINAL].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    v = g[q].to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(STATISTIC.get(q, _median)(v)) if len(v) else math.nan


def _direction(r: dict) -> str:
    """'better' / 'worse' than the baseline (every quantity here is lower-is-better), '' if equal.
    Paired tests go by the median paired difference, others by the two groups' estimates."""
    d = r.get("diff")
    if r.get("paired") and d is not None and not pd.isna(d):
        return "" if d == 0 else ("better" if d < 0 else "worse")
    a, b = r["estimate"], r["baseline_estimate"]
    if a is None or b is None or pd.isna(a) or pd.isna(b) or a == b or \
            (math.isfinite(a) and math.isfinite(b) and np.isclose(a, b, rtol=1e-9, atol=0)):
        return ""
    return "better" if a < b else "worse"


def _mark_primary(tests: pd.DataFrame, primary: list, per_trial: pd.DataFrame, data_gamma: float,
                  notes: list) -> list:
    """Row labels of the tests that a declared primary entry names. An entry's `where` fixes trial
    fields (gamma: "data" is the data-matched gamma; "max" / "min" the largest / smallest value in
    the study); every test that matches it is in the family (one per value of its `per` fields)."""
    rows = []
    for entry in primary:
        q = PRIMARY_QUANTITIES.get(entry.get("quantity"))
        sel = tests[(tests["variant"] == entry.get("variant")) & (tests["quantity"] == q)] if q else tests.iloc[:0]
        for field_, want in (entry.get("where") or {}).items():
            if field_ not in sel.columns:
                sel = sel.iloc[:0] if not _fixed_matches(per_trial, field_, want) else sel
                continue
            if want == "data":
                want = data_gamma
            elif want in ("max", "min"):
                col = pd.to_numeric(per_trial[field_], errors="coerce")
                want = col.max() if want == "max" else col.min()
            sel = sel[sel[field_].map(lambda x, w=want: _same(x, w) or (
                isinstance(x, (int, float)) and isinstance(w, (int, float)) and np.isclose(x, w)))]
        if sel.empty:
            notes.append(f"primary comparison {entry} matched no test (no such trials?)")
        rows += [r for r in sel.index if r not in rows]
    return rows


def _fixed_matches(per_trial: pd.DataFrame, field_: str, want) -> bool:
    """A `where` field that is not swept matches when the study's one value is it (or unknown)."""
    return field_ not in per_trial.columns or per_trial[field_].map(lambda x: _same(x, want)).all()


# ------------------------------------------------------------------------------ rate-distortion

def _frontier(per_trial: pd.DataFrame, baseline: str, frontier_keys: list, n_resamples: int, seed: int
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline's rate-distortion points over beta, per frontier context (contexts without
    kl_coeff) where beta takes two or more values: (median points with CIs, the per-trial points).

    ``interpolation_error``: each interior point predicted from its two neighbours, relative to
    its distortion. A convex frontier lies below its chords, so a point exactly on the curve
    shows a small negative gap; gaps of this size are interpolation error, not evidence."""
    if BETA not in per_trial.columns or per_trial.empty:
        return pd.DataFrame(), pd.DataFrame()
    base = per_trial[per_trial["variant"] == baseline]
    rows, keep = [], []
    groups = base.groupby(frontier_keys, dropna=False, sort=True) if frontier_keys else [((), base)]
    for ctx, fb in groups:
        ctx = ctx if isinstance(ctx, tuple) else (ctx,)
        if fb[BETA].nunique() < 2:
            continue
        keep.append(fb)
        points = []
        for i, (beta, bg) in enumerate(fb.groupby(BETA, sort=True)):
            rec = {**dict(zip(frontier_keys, ctx)), BETA: float(beta), "n": len(bg),
                   "n_diverged": int(bg[DIVERGED].sum()), "interpolation_error": math.nan}
            for q in (RATE, DISTORTION):
                v = bg[q][np.isfinite(bg[q].astype(float))]
                e = stats.bootstrap_ci(v, _median, n_resamples=n_resamples, seed=seed + i)
                rec[q], rec[f"{q}_low"], rec[f"{q}_high"] = e.value, e.low, e.high
            points.append(rec)
        by_rate = sorted((p for p in points if math.isfinite(p[RATE]) and math.isfinite(p[DISTORTION])),
                         key=lambda p: p[RATE])
        for a, p, b in zip(by_rate, by_rate[1:], by_rate[2:]):
            pred = frontier_at(np.array([a[RATE], b[RATE]]), np.array([a[DISTORTION], b[DISTORTION]]), p[RATE])
            if math.isfinite(pred) and p[DISTORTION]:
                p["interpolation_error"] = (p[DISTORTION] - pred) / p[DISTORTION]
        rows += points
    return pd.DataFrame(rows), (pd.concat(keep) if keep else pd.DataFrame())


def frontier_at(rates: np.ndarray, distortions: np.ndarray, rate: float) -> float:
    """The frontier's distortion at `rate`, interpolated linearly in log rate between the points
    (monotone in rate after sorting); nan outside the points' rate range (no extrapolation)."""
    ok = np.isfinite(rates) & np.isfinite(distortions) & (rates > 0)
    r, d = rates[ok], distortions[ok]
    if len(r) < 2 or not (math.isfinite(rate) and rate > 0) or rate < r.min() or rate > r.max():
        return math.nan
    order = np.argsort(r)
    return float(np.interp(math.log(rate), np.log(r[order]), d[order]))


def _gap(g: pd.DataFrame, frontier_trials: pd.DataFrame, frontier_keys: list, rec: dict, reps: list) -> pd.DataFrame:
    """Per seed: the group's distortion minus the same seed's baseline frontier at the group's rate."""
    if frontier_trials.empty:
        return pd.DataFrame(columns=["gap", "rel_gap"])
    fb = _match(frontier_trials, frontier_keys, [rec[k] for k in frontier_keys])
    out = []
    for r in g.to_dict("records"):
        same_seed = _match(fb, reps, [r[k] for k in reps]) if reps else fb
        f = frontier_at(same_seed[RATE].to_numpy(float), same_seed[DISTORTION].to_numpy(float), r[RATE])
        if math.isfinite(f) and math.isfinite(r[DISTORTION]):
            out.append({"gap": r[DISTORTION] - f, "rel_gap": (r[DISTORTION] - f) / f if f else math.nan})
    return pd.DataFrame(out, columns=["gap", "rel_gap"])


# ------------------------------------------------------------------------------ equivalence

def _equivalences(group_trials: dict, group_keys: list, context_keys: list) -> dict:
    """{group key: "a ≡ b"} for groups of one context whose configurations are identical by
    construction: the same prior scales s, sampling and divergence (e.g. powerlaw_clamp whose
    floor min_decay is never reached within latent_dim equals powerlaw)."""
    sig = {}
    for key, g in group_trials.items():
        r = g.iloc[0].to_dict()
        v = VARIANTS.get(r["variant"])
        if v is None:
            continue
        try:
            s = prior_scale(r["variant"], int(r.get("latent_dim", 16)), float(_num(r.get("gamma"), 0.0)),
                            _opt(r.get("min_decay")), _opt(r.get("clip_dim"), int), _opt(r.get("decay_rate")))
        except (ValueError, TypeError):
            continue
        sampled = v.decayed_sampling and not bool(np.allclose(s.numpy(), 1.0))
        sig[key] = (key[:len(context_keys)], tuple(np.round(s.double().numpy(), 12)), sampled, v.divergence)
    by_sig = {}
    for key, sg in sig.items():
        by_sig.setdefault(sg, []).append(key)
    out = {}
    for keys in by_sig.values():
        if len(keys) < 2:
            continue
        label = " ≡ ".join(_group_label(dict(zip(group_keys, k))) for k in sorted(keys, key=str))
        for k in keys:
            out[k] = label
    return out


def _num(x, default=math.nan) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(x) else x


def _opt(x, kind=float):
    v = _num(x)
    return None if math.isnan(v) else kind(v)


def _group_label(rec: dict) -> str:
    params = [f"{'γ' if p == 'gamma' else p}={rec[p]:g}" for p in VARIANT_PARAMS
              if p in rec and isinstance(rec[p], (int, float)) and not pd.isna(rec[p])]
    return rec["variant"] + (f" ({', '.join(params)})" if params else "")


# ------------------------------------------------------------------------------ checks and summaries

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
        if v is None or not v.uses("gamma") or v.divergence != KL or variant == "vae":
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


def _headline(groups: pd.DataFrame, context_keys: list, baseline: str, min_seeds: int,
              alpha: float, total_loss: bool) -> pd.DataFrame:
    """Each variant's best group per context (lowest median final value among groups with enough
    seeds, divergence rate breaking ties), ranked within the context. Contexts holding only the
    baseline (a beta sweep's other betas) are left out; on a total loss W2 groups are listed after
    the ranking, unranked (another objective)."""
    if groups.empty:
        return groups
    rows = []
    ctx_iter = groups.groupby(context_keys, dropna=False, sort=True) if context_keys else [((), groups)]
    for _, cg in ctx_iter:
        if (cg["variant"] == baseline).all():
            continue
        best_rows = []
        for variant, vg in cg.groupby("variant", sort=True):
            pool = vg[vg["n"] >= min_seeds] if (vg["n"] >= min_seeds).any() else vg
            pool = pool.assign(_f=pool[FINAL].fillna(np.inf)).sort_values(["_f", DIVERGED], kind="stable")
            best_rows.append(pool.iloc[0].drop(labels="_f"))
        ranked = pd.DataFrame(best_rows)
        other = (ranked["objective"] != _objective(baseline)) if total_loss else pd.Series(False, index=ranked.index)
        ranked_kl = ranked[~other]
        # ties go to the baseline: a variant ranks above it only by being better
        ranked_kl = ranked_kl.assign(_f=ranked_kl[FINAL].fillna(np.inf), _b=~ranked_kl["is_baseline"].astype(bool))
        ranked_kl = ranked_kl.sort_values(["_f", DIVERGED, "_b"], kind="stable").drop(columns=["_f", "_b"])
        ranked_kl.insert(0, "rank", list(range(1, len(ranked_kl) + 1)))
        rest = ranked[other].copy()
        rest.insert(0, "rank", [np.nan] * len(rest))
        out = pd.concat([ranked_kl, rest])
        flags = [False] * len(ranked_kl) + [True] * len(rest)
        out["verdict"] = [_verdict(r, baseline, alpha, o) for r, o in zip(out.to_dict("records"), flags)]
        rows.append(out)
    return pd.concat(rows, ignore_index=True) if rows else groups.iloc[:0].assign(rank=[], verdict=[])


def _verdict(r: dict, baseline: str, alpha: float, other_objective: bool = False) -> str:
    if r["variant"] == baseline:
        return "baseline"
    if other_objective:
        return "other objective (W2): see the rate-distortion view"
    if r.get("small"):
        return "not tested (few seeds)"
    p_holm, p = r.get(f"p_holm_{FINAL}"), r.get(f"p_{FINAL}")
    # the sign of the test's own effect (the median paired difference): the ratio of medians is
    # undefined when the baseline's median is infinite (at least half its seeds diverged)
    lower = r.get("direction_final") == "better"
    if p_holm is not None and not pd.isna(p_holm):   # in the corrected family
        if p_holm < alpha:
            return "better" if lower else "worse"
        return "no significant difference"
    if p is None or pd.isna(p):
        return "not tested"
    if p < alpha:
        return ("lower" if lower else "higher") + " (exploratory, uncorrected)"
    return "no difference (exploratory)"


def _split(per_trial: pd.DataFrame, context_keys: list, variant_keys: list, baseline: str,
           reps: list, total_loss: bool, n_resamples: int, seed: int) -> pd.DataFrame:
    """Selection without double dipping: per context and variant with several settings, the
    setting with the lowest median final value on the first half of the seeds, reported on the
    second half against the baseline's same seeds (paired). Needs MIN_SPLIT_SEEDS shared seeds."""
    if "seed" not in per_trial.columns or per_trial.empty:
        return pd.DataFrame()
    rows = []
    params = [k for k in variant_keys if k != "variant"]
    ctx_iter = per_trial.groupby(context_keys, dropna=False, sort=True) if context_keys else [((), per_trial)]
    for ctx, cp in ctx_iter:
        ctx = ctx if isinstance(ctx, tuple) else (ctx,)
        base = cp[cp["variant"] == baseline]
        seeds = sorted(set(base["seed"]))
        if len(seeds) < MIN_SPLIT_SEEDS:
            continue
        choose, report = set(seeds[:len(seeds) // 2]), set(seeds[len(seeds) // 2:])
        for variant, vp in cp[cp["variant"] != baseline].groupby("variant", sort=True):
            if total_loss and _objective(variant) != _objective(baseline):
                continue
            settings = list(vp.groupby(params, dropna=False, sort=True)) if params else [((), vp)]
            if len(settings) < 2:
                continue
            scored = [(float(np.median(s[s["seed"].isin(choose)][FINAL])) if s["seed"].isin(choose).any()
                       else math.inf, k, s) for k, s in settings]
            score, key, chosen = min(scored, key=lambda z: z[0])
            key = key if isinstance(key, tuple) else (key,)
            rep = chosen[chosen["seed"].isin(report)].merge(base[base["seed"].isin(report)], on=reps, suffixes=("", "_b"))
            if len(rep) < 3:
                continue
            d = stats.paired_differences(rep[FINAL], rep[f"{FINAL}_b"])
            e = stats.bootstrap_ci(d, stats.median_inf, n_resamples=n_resamples, seed=seed)
            res = stats.wilcoxon_paired(rep[FINAL], rep[f"{FINAL}_b"])
            rows.append({**dict(zip(context_keys, ctx)), "variant": variant, **dict(zip(params, key)),
                         "n_choose": len(choose), "n_report": len(rep), "chosen_on": float(score),
                         FINAL: float(np.median(rep[FINAL])), "baseline_final": float(np.median(rep[f"{FINAL}_b"])),
                         "diff": e.value, "diff_low": e.low, "diff_high": e.high, "p": res.pvalue,
                         "family": EXPLORATORY})
    return pd.DataFrame(rows)


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
