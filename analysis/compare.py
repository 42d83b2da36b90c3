"""Compare prior variants with the baseline for speed and stability, with paired statistics.

Groups are variant x prior parameters (gamma, min_decay, clip_dim, decay_rate) within a
*context* (dataset, latent_dim, lr, kl_coeff and any other swept setting); seeds are the
replicates. Each group is compared with the baseline's group in the same context.

What is compared (docs/design.md, "Comparing variants fairly"): every KL variant is an exact
reparameterisation of the same beta-VAE, so ``val_loss`` (``metrics.DEFAULT_STUDY_METRIC``) is one
objective for all of them and the default metric. ``powerlaw_wae`` optimises a squared-W2
objective: on a total loss it is never ranked or tested against the KL variants, only placed in
the rate-distortion plane. Rate = KL summed over latent dims (nats per example, ``val_rate``),
distortion = ``val_recon_mu``. Where the study sweeps the baseline's beta (kl_coeff), the
baseline's own frontier is traced and each group's *distortion gap* at equal rate is measured:
per seed, the group's distortion minus the frontier of the same seed interpolated (in log rate)
at the group's rate; a lower distortion bought with a higher rate is a move along the curve,
not a gain.

Equal budgets: under ASHA trials stop at different epochs, so each context is compared at one
epoch, the last every non-diverged trial of the context reached - the ``epoch`` column - never on
"final" values of runs of different lengths: the groups, their tests, the headline's rank and the
answer all read that one epoch (a longer run's later epochs are not used).

Per trial (on the chosen metric, at the comparison epoch, with the pre-training value as epoch 0
when logged):
- ``final``: value at the comparison epoch; ``best``: minimum up to it;
- ``epochs_to_target`` / ``seconds_to_target``: first epoch (and the seconds then: ``train_time_s``,
  from the trial's first training step, where every trial reports it, else Tune's ``time_total_s``,
  which includes a reused worker's warm-up; ``Comparison.clock`` says which) at which the metric
  is <= the target (default: the value 8 in 10 of the baseline's seeds have reached by 3/4 of the
  comparison epoch, ``censored.reach_target``, the rule analysis.tuned uses; a note names it);
  ``inf`` when never reached: censored at the comparison epoch, tested with Gehan's paired test
  (log-rank unpaired) so "slower" can be significant, the speed-up the ratio of Kaplan-Meier
  median epochs with its CI;
- ``auc``: area under the curve from epoch 0 on, divided by (epochs x initial value);
- ``first_epoch_ratio``: value after the first epoch / initial value;
- ``max_increase``: largest relative epoch-to-epoch increase (0 = monotone; ``inf`` if diverged);
- ``rate``, ``distortion``: val_rate and val_recon_mu at the comparison epoch.
A diverged trial's ``final``, ``auc`` and ``max_increase`` are ``inf``. Final quality and divergence
are never folded into one ranking: the final value is compared on the pairs where both runs
finished (``n_both``), divergence by McNemar, and a verdict says both where they disagree.

Statistics: a seed fixes initial weights, data order and noise for every variant, so a group is
compared with the baseline seed by seed - Wilcoxon signed-rank on the paired differences with the
order-statistic CI of the median difference (its exact coverage in ``diff_coverage``), the exact
McNemar test for divergence; resamples are seeded from the data, so ≡ groups get equal CIs; unpaired tests
(Mann-Whitney, Fisher) only where no seeds pair. A study may declare a small family of *primary*
comparisons (study.json's ``study_config.primary``, from the preset): Holm corrects over that
family only, and every other test is *exploratory*, reported with its raw p-value and labelled so
(``holm_family="all"`` or ``"quantity"`` corrects over everything instead); ≡ tests count once. The headline picks
each variant's best group on the same seeds it reports on (said so); with enough seeds,
``split`` chooses on half the seeds and reports on the other half.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import InitVar, dataclass, field
from typing import Optional, Union

import numpy as np
import pandas as pd

from plvae import metrics as M
from plvae.priors import BASELINE, matched_gamma

from analysis import stats
from analysis.columns import (ASHA_STOPPED, AUC, BEST, BETA, COVERAGE, DISTORTION, DISTORTION_GAP, DIVERGED,
                              EPOCH, EPOCHS_TO_TARGET, FINAL, FROM_SURVIVORS, HOLM_FAMILIES, LABELS, N_BOTH,
                              ON_OBJECTIVE, PER_TRIAL, PRIMARY, RATE, RATES, SPEEDUP, SPREAD, TESTED, TOTAL_LOSS,
                              ci, final, high, low, median, n_of, n_used, statistic, std)
from analysis.curves import trial_curve, trial_quantities
from analysis.frontier import distortion_gaps, frontier, frontier_at, frontier_notes
from analysis.groups import equivalences, objective, unkey
from analysis.load import Study
from analysis.pairing import Pairing, build
from analysis.selection import MIN_SPLIT_SEEDS, gamma_zero_check, headline, split, stable_lr_table
from analysis.significance import correct, direction, gap_test, quantity_test
from analysis.tune_files import TIME_TOTAL, TRIAL_ID

# Names callers import from here (tests, benchmarks/evidence_summary.py); each is defined in the
# module named beside it in the imports above.
__all__ = ["AUC", "BEST", "DISTORTION_GAP", "DIVERGED", "EPOCHS_TO_TARGET", "FINAL", "LABELS", "MIN_SPLIT_SEEDS",
           "Comparison", "compare", "data_alpha_gamma", "frontier_at", "stable_lr_table", "trial_curve",
           "trial_quantities"]
DEFAULT_SIGNIFICANCE = 0.05


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
    learning-rate region per group when lr is swept. ``significance``: the level after Holm
    correction (``alpha`` is its deprecated name: alpha is the spectrum's exponent elsewhere).
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
    significance: float = DEFAULT_SIGNIFICANCE
    min_seeds: int = 3
    holm_family: str = "primary"
    notes: list = field(default_factory=list)
    frontier: pd.DataFrame = field(default_factory=pd.DataFrame)
    frontier_keys: list = field(default_factory=list)
    primary: pd.DataFrame = field(default_factory=pd.DataFrame)
    split: pd.DataFrame = field(default_factory=pd.DataFrame)
    data_alpha: float = math.nan
    data_gamma: float = math.nan
    target_how: dict = field(default_factory=dict)   # context -> how its target was set
    clock: str = TIME_TOTAL    # the history column seconds to target were read from
    alpha: InitVar[Optional[float]] = None   # deprecated spelling of `significance`, for one release

    def __post_init__(self, alpha):
        if alpha is not None:
            _warn_alpha("Comparison(alpha=...)")
            self.significance = alpha

    @property
    def n_tests(self) -> int:
        return int(self.tests["p"].notna().sum()) if len(self.tests) else 0

    def significant(self) -> pd.DataFrame:
        """The tests that are significant after Holm correction (in the corrected family)."""
        if not len(self.tests):
            return self.tests
        return self.tests[self.tests["significant"]]


def _alpha_property(self) -> float:
    _warn_alpha("Comparison.alpha")
    return self.significance


def _warn_alpha(where: str) -> None:
    warnings.warn(f"{where} is deprecated (alpha is the spectrum's exponent); use significance",
                  DeprecationWarning, stacklevel=3)


# Reading `alpha` still works for one release (the InitVar above takes it in the constructor).
Comparison.alpha = property(_alpha_property)


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


def compare(study: Study, baseline: str = BASELINE, metric: Optional[str] = None,
            target: Union[None, float, dict] = None, baseline_params: Optional[dict] = None,
            significance: Optional[float] = None, min_seeds: int = 3, holm_family: str = "primary",
            primary: Optional[list] = None, n_resamples: int = stats.N_RESAMPLES, seed: int = 0,
            alpha: Optional[float] = None) -> Comparison:
    """Compare every variant group with the baseline (see the module docstring).

    ``metric``: a history column (default ``metrics.DEFAULT_STUDY_METRIC``, val_loss); ``target``:
    the loss to reach for the speed measures (default: the baseline's median final value per
    context; a number applies everywhere; a dict maps context tuples to numbers);
    ``baseline_params``: e.g. ``{"gamma": 0.0}`` when the baseline variant has several groups per
    context; ``significance``: the level after Holm correction (default 0.05; ``alpha`` is its
    deprecated name); ``primary``: the declared primary comparisons (default: the study's own,
    from study.json); ``holm_family``: "primary" (Holm over the primary family only), "all" or
    "quantity".
    """
    metric = metric or M.DEFAULT_STUDY_METRIC
    significance = _significance(significance, alpha)
    _check(study, metric, baseline, holm_family)
    if primary is None:
        primary = list(((study.meta.get("study_config") or {}).get("primary")) or [])
    notes = []
    s = build(study, metric, baseline, significance, min_seeds, holm_family, n_resamples, seed, notes)
    s.find_baselines(baseline_params)
    s.find_targets(target, notes)
    per_trial = _per_trial_table(s, study)
    frontier_keys = [k for k in s.context_keys if k != BETA]
    front, frontier_trials = frontier(per_trial, baseline, frontier_keys, n_resamples, seed)
    equiv = equivalences(s.group_trials, s.group_keys, s.context_keys)
    groups, tests = _group_rows(s, per_trial, frontier_trials, frontier_keys, equiv)
    data_alpha, data_gamma = data_alpha_gamma(study)
    tests = correct(tests, groups, s.group_keys, s.context_keys, primary, per_trial, data_gamma, holm_family,
                    significance, notes)
    per_trial = per_trial.drop(columns="_g")
    notes += _notes(s, groups, front, equiv) + s.target_notes() + frontier_notes(groups, front, [k for k in s.context_keys if k != BETA],
                                                                         s.min_seeds)
    notes += gamma_zero_check(per_trial, baseline, s.context_keys, s.reps)
    head = headline(groups, s.context_keys, baseline, min_seeds, significance, s.total_loss)
    halves = split(per_trial, s.context_keys, s.variant_keys, baseline, s.reps, s.total_loss, n_resamples, seed)
    if len(head):
        notes.append("the headline picks each variant's best setting on the same seeds it reports, which flatters "
                     "the winner" + ("; `split` chooses the setting on half the seeds and reports it on the other "
                                     "half." if len(halves) else f" (a split needs {MIN_SPLIT_SEEDS} seeds)."))
    stable = stable_lr_table(per_trial, s.context_keys, s.variant_keys) if "lr" in s.context_keys and \
        per_trial["lr"].nunique() > 1 else None
    return Comparison(metric=metric, baseline=baseline, per_trial=per_trial, groups=groups, tests=tests,
                      headline=head, stable_lr=stable, targets=s.targets, target_how=s.target_how,
                      context_keys=s.context_keys,
                      group_keys=s.group_keys, significance=significance, min_seeds=min_seeds,
                      holm_family=holm_family, notes=notes, frontier=front, frontier_keys=frontier_keys,
                      primary=tests[tests["family"] == PRIMARY].reset_index(drop=True), split=halves,
                      data_alpha=data_alpha, data_gamma=data_gamma, clock=s.clock)


def _significance(significance: Optional[float], alpha: Optional[float]) -> float:
    """The significance level; ``alpha=`` is its old name, accepted for one release with a warning."""
    if alpha is None:
        return DEFAULT_SIGNIFICANCE if significance is None else significance
    if significance is not None:
        raise ValueError(f"alpha={alpha!r} is invalid with significance; allowed: significance only")
    _warn_alpha("compare(alpha=...)")
    return alpha


def _check(study: Study, metric: str, baseline: str, holm_family: str) -> None:
    """One-line errors for options that cannot work on this study."""
    if holm_family not in HOLM_FAMILIES:
        raise ValueError(f"holm_family={holm_family!r} is invalid; allowed: {', '.join(HOLM_FAMILIES)}")
    if metric not in study.history.columns:
        known = ", ".join(c for c in study.metrics() if c not in (TIME_TOTAL,))
        raise ValueError(f"metric={metric!r} is not in this study's history; allowed: {known}")
    variants = set(study.trials["variant"])
    if baseline not in variants:
        raise ValueError(f"baseline={baseline!r} has no trials in this study; "
                         f"allowed: {', '.join(sorted(variants))}")


def _per_trial_table(s: Pairing, study: Study) -> pd.DataFrame:
    """One row per usable trial: its quantities at its context's comparison epoch (the last epoch
    every non-diverged trial of the context reached)."""
    rows = []
    ctx_epoch = {}
    for key, g in s.group_trials.items():
        ctx = s.context(key)
        if ctx not in ctx_epoch:
            ctx_epoch[ctx] = s.context_epoch(ctx)
        s.epochs[key] = ctx_epoch[ctx]
        for rec in g.to_dict("records"):
            q = s.at(rec[TRIAL_ID], s.epochs[key], s.targets[ctx])
            rows.append({TRIAL_ID: rec[TRIAL_ID], **{k: rec[k] for k in s.group_keys}, **{k: rec[k] for k in s.reps},
                         "status": rec["status"], EPOCH: s.epochs[key], **q,
                         ASHA_STOPPED: rec["status"] == M.EARLY_STOPPED,
                         TOTAL_LOSS: rec.get(final(M.VAL_LOSS), math.nan), "target": s.targets[ctx], "_g": key})
    return pd.DataFrame(rows)


def _group_rows(s: Pairing, per_trial: pd.DataFrame, frontier_trials: pd.DataFrame, frontier_keys: list,
                equiv: dict) -> tuple[pd.DataFrame, list]:
    """One summary row per group and the tests of each group against its baseline."""
    groups, tests = [], []
    for i, (key, g) in enumerate(per_trial.groupby("_g", sort=True)):
        rec = _estimates(s, i, key, g, equiv)
        bkey = s.base_of.get(s.context(key))
        b = s.frame(bkey, s.epochs[key]) if bkey is not None and bkey != key else None
        rec["small"] = len(g) < s.min_seeds or (b is not None and len(b) < s.min_seeds)
        rec["rel_final"] = rec[N_BOTH] = math.nan
        for q in (*_ci(DISTORTION_GAP), "rel_distortion_gap", *ci(SPEEDUP)):
            rec[q] = math.nan
        rec["n_gap"], rec[FROM_SURVIVORS] = 0, False
        if b is not None:
            tests += _tests_against(s, len(groups), rec, key, g, b, frontier_trials, frontier_keys, i)
        groups.append(rec)
    return pd.DataFrame(groups), tests


def _ci(q: str) -> tuple:
    return q, low(q), high(q)


def _estimates(s: Pairing, i: int, key: tuple, g: pd.DataFrame, equiv: dict) -> dict:
    """A group's estimates with content-seeded bootstrap CIs (so ≡ groups get identical intervals):
    medians, the final value over the seeds that finished (divergence is its own rate), std across
    seeds, Wilson intervals of rates."""
    boot = dict(n_resamples=s.n_resamples)
    variant = g["variant"].iloc[0]
    rec = unkey(s.group_keys, key)
    rec.update({"is_baseline": s.base_of.get(s.context(key)) == key, "n": len(g),
                "target": float(g["target"].iloc[0]), EPOCH: s.epochs[key],
                "objective": objective(variant), "equiv": equiv.get(key, "")})
    for q in PER_TRIAL + (BEST,):
        v = g[q].to_numpy(float)
        e = stats.content_bootstrap_ci(v[np.isfinite(v)] if q == FINAL else v, statistic(q), **boot)
        rec[q], rec[low(q)], rec[high(q)], rec[n_used(q)] = e.value, e.low, e.high, e.n
    for q in (RATE, DISTORTION):
        e = stats.content_bootstrap_ci(g[q][np.isfinite(g[q].astype(float))], median, **boot)
        rec[q], rec[low(q)], rec[high(q)] = e.value, e.low, e.high
    fin = g[FINAL].to_numpy(dtype=float)
    fin = fin[np.isfinite(fin)]
    e = stats.content_bootstrap_ci(fin, std, **boot)
    rec[SPREAD], rec[low(SPREAD)], rec[high(SPREAD)] = e.value, e.low, e.high
    rec["final_mean"] = float(fin.mean()) if len(fin) else math.nan
    rec["cv"] = float(e.value / rec["final_mean"]) if len(fin) > 1 and rec["final_mean"] else math.nan
    rec["reached"] = float(np.isfinite(g[EPOCHS_TO_TARGET]).mean())
    for r in RATES:
        k = int(g[r].sum())
        e = stats.proportion_ci(k, len(g))
        rec[r], rec[low(r)], rec[high(r)], rec[n_of(r)] = e.value, e.low, e.high, k
    rec[TOTAL_LOSS] = float(np.nanmedian(g[TOTAL_LOSS].astype(float))) if g[TOTAL_LOSS].notna().any() else math.nan
    return rec


def _tests_against(s: Pairing, row: int, rec: dict, key: tuple, g: pd.DataFrame, b: pd.DataFrame,
                   frontier_trials: pd.DataFrame, frontier_keys: list, i: int) -> list:
    """A group's distortion gap and its tests against the baseline frame b; rec gets the relative
    change of the final value (the median ratio on the pairs where both finished), the speed-up and
    n_both (in place)."""
    comparable = not (s.total_loss and objective(rec["variant"]) != objective(s.baseline))
    gap = distortion_gaps(g, frontier_trials, frontier_keys, unkey(s.group_keys, key), s.reps)
    if len(gap):
        e = stats.median_ci(gap["gap"])
        rec[DISTORTION_GAP], rec[low(DISTORTION_GAP)], rec[high(DISTORTION_GAP)] = e.value, e.low, e.high
        rec[COVERAGE + "_gap"] = e.coverage
        rec["rel_distortion_gap"] = float(np.median(gap["rel_gap"]))
        rec["n_gap"] = len(gap)
        rec[FROM_SURVIVORS] = bool(gap[FROM_SURVIVORS].any())
    tests = []
    for q in TESTED:
        if q in ON_OBJECTIVE and not comparable:
            continue  # a W2 objective is not a KL one: placed in the rate-distortion plane only
        if q == DISTORTION_GAP:
            if not frontier_trials.empty:
                tests.append(gap_test(row, rec, key, s.group_keys, gap, s.min_seeds))
            continue
        t = quantity_test(row, q, rec, key, s.group_keys, g, b, s.reps, s.min_seeds, s.n_resamples, s.seed + i)
        tests.append(t)
        if q == FINAL:
            rec["direction_final"] = direction(t)
            rec[N_BOTH] = t[N_BOTH]
            rec["rel_final"] = _relative(t, rec[FINAL], b)
        if q == DIVERGED:
            rec["direction_diverged"] = direction(t)
        if q == EPOCHS_TO_TARGET:
            for c in ci(SPEEDUP):
                rec[c] = t.get(c, math.nan)
    return tests


def _relative(t: dict, value: float, b: pd.DataFrame) -> float:
    """The final value relative to the baseline's, minus 1: the median ratio over the pairs where both
    finished, else the ratio of the finished runs' medians."""
    if t.get("paired") and not pd.isna(t.get("ratio", math.nan)):
        return float(t["ratio"]) - 1
    v = b[FINAL].to_numpy(float)
    v = v[np.isfinite(v)]
    bf = float(np.median(v)) if len(v) else math.nan
    return value / bf - 1 if bf and math.isfinite(bf) and math.isfinite(value) else math.nan


def _notes(s: Pairing, groups: pd.DataFrame, front: pd.DataFrame, equiv: dict) -> list:
    """What a reader must know to read the tables: small groups, unequal lengths, other
    objectives, the frontier's interpolation error, groups identical by construction."""
    notes = []
    if len(groups) and (groups["n"] < s.min_seeds).any():
        notes.append(f"{int((groups['n'] < s.min_seeds).sum())} group(s) have fewer than {s.min_seeds} usable "
                     f"trials: flagged 'small' and not tested.")
    if len({c.last for c in s.curves.values() if not math.isfinite(c.diverged_at)}) > 1:
        notes.append("trials ran different numbers of epochs (ASHA): each context is compared at one epoch, the "
                     "last every non-diverged trial of it reached (the `epoch` column); later epochs of longer "
                     "runs are not used, so no rank or sentence sets one epoch's value against another's.")
    if s.total_loss and (groups["objective"] == "w2").any():
        notes.append(f"W2 groups optimise a different objective: not ranked or tested against the KL variants on "
                     f"{s.metric}; see the rate-distortion view (distortion gap at equal rate).")
    if len(front) and front["interpolation_error"].notna().any():
        worst = float(front["interpolation_error"].abs().max())
        notes.append(f"the baseline frontier is interpolated between its β points; leaving out an interior point "
                     f"misses it by up to {100 * worst:.1f}% of its distortion, so distortion gaps of that order are "
                     f"interpolation error, not evidence.")
    if equiv:
        notes.append("groups identical by construction (same prior scales, sampling and divergence) are marked ≡: "
                     + "; ".join(sorted(set(equiv.values()))) + ".")
    return notes
