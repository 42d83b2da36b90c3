"""What ``compare`` compares with what: the usable trials and their curves, each context's baseline
group and target, and each context's comparison epoch (equal budgets: the last epoch every
non-diverged trial of the context reached, so that every value of one context - the groups, the
tests, the headline's ranking and the answer - comes from one epoch)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Union

import pandas as pd

from plvae import metrics as M

from analysis.censored import TARGET_FRACTION, TARGET_REACH, reach_target, target_epoch
from analysis.columns import ASHA_STOPPED, BEST, REPLICATE_PARAMS, TOTAL_LOSSES
from analysis.curves import study_clock, trial_curves
from analysis.groups import context_text, group_key, keys, masked, same, unkey
from analysis.load import Study
from analysis.tune_files import TRIAL_ID


@dataclass
class Pairing:
    """What every step of ``compare`` shares: the options, the keys, each trial's curves, the
    groups and their baselines, targets and comparison epochs (``build``, then
    ``find_baselines`` and ``find_targets``; the epochs as the per-trial table is made)."""

    metric: str
    baseline: str
    significance: float
    min_seeds: int
    holm_family: str
    n_resamples: int
    seed: int
    context_keys: list
    variant_keys: list
    reps: list
    curves: dict                 # trial id -> TrialCurves
    group_trials: dict           # group key -> its trials (rows of the masked trials table)
    base_of: dict = field(default_factory=dict)    # context -> the baseline group's key
    targets: dict = field(default_factory=dict)    # context -> target value
    target_how: dict = field(default_factory=dict)  # context -> how its target was set
    epochs: dict = field(default_factory=dict)     # group key -> comparison epoch (its context's)
    cache: dict = field(default_factory=dict)
    clock: str = ""              # the history column seconds to target are read from (study_clock)

    @property
    def group_keys(self) -> list:
        return self.context_keys + self.variant_keys

    @property
    def total_loss(self) -> bool:
        return self.metric in TOTAL_LOSSES

    def context(self, key: tuple) -> tuple:
        return key[:len(self.context_keys)]

    def common_epoch(self, tids) -> float:
        """The last epoch every non-diverged trial of these reached (all diverged: the longest)."""
        lasts = [self.curves[t].last for t in tids if not math.isfinite(self.curves[t].diverged_at)]
        return float(min(lasts)) if lasts else float(max((self.curves[t].last for t in tids), default=0.0))

    def context_epoch(self, ctx: tuple) -> float:
        """A context's comparison epoch: the last epoch every non-diverged trial of it reached.
        One per context, so no ranking or sentence ever sets one epoch's value against another's."""
        return self.common_epoch([t for key, g in self.group_trials.items() if self.context(key) == ctx
                                  for t in g[TRIAL_ID]])

    def at(self, tid, epoch: float, target: float) -> dict:
        """A trial's quantities as of `epoch` (cached: the baseline's are asked for once per pair)."""
        k = (tid, epoch, target)
        if k not in self.cache:
            self.cache[k] = self.curves[tid].at(epoch, target)
        return self.cache[k]

    def frame(self, key: tuple, epoch: float) -> pd.DataFrame:
        """A group's trials as a frame of quantities at `epoch` (the baseline at a pair's epoch)."""
        target = self.targets[self.context(key)]
        return pd.DataFrame([{**{k: r[k] for k in self.reps}, **self.at(r[TRIAL_ID], epoch, target),
                              ASHA_STOPPED: r["status"] == M.EARLY_STOPPED}
                             for r in self.group_trials[key].to_dict("records")])

    def find_baselines(self, baseline_params: Optional[dict]) -> None:
        """Each context's baseline group (the one baseline_params picks, when given)."""
        for key, g in self.group_trials.items():
            if g["variant"].iloc[0] != self.baseline:
                continue
            rec = unkey(self.group_keys, key)
            if baseline_params:
                for k in baseline_params:
                    if k not in g.columns:
                        raise ValueError(f"baseline_params key {k!r} is not a trial parameter")
                if not all(same(rec[k], v) for k, v in baseline_params.items()):
                    continue
            ctx = self.context(key)
            if ctx in self.base_of:
                raise ValueError(f"baseline {self.baseline!r} has several groups in context "
                                 f"{dict(zip(self.context_keys, ctx))}; pass baseline_params (e.g. {{'gamma': 0.0}}) "
                                 f"to pick one")
            self.base_of[ctx] = key

    def find_targets(self, target: Union[None, float, dict], notes: list) -> None:
        """The target per context: as given, else the value TARGET_REACH (8 in 10) of the baseline's
        seeds have reached by TARGET_FRACTION (3/4) of its comparison epoch (``reach_target``, the
        rule analysis.tuned uses; a diverged seed has reached nothing). ``target_how`` says how."""
        for key in self.group_trials:
            ctx = self.context(key)
            if ctx in self.targets:
                continue
            if isinstance(target, dict) or target is not None:
                self.targets[ctx] = float(target.get(ctx, math.nan)) if isinstance(target, dict) else float(target)
                self.target_how[ctx] = "given (--target)"
            elif ctx in self.base_of:
                self.targets[ctx], self.target_how[ctx] = self._baseline_target(self.base_of[ctx], ctx)
                if not math.isfinite(self.targets[ctx]):
                    self.targets[ctx] = math.nan
                    notes.append(f"fewer than {TARGET_REACH:.0%} of the baseline's seeds finished at "
                                 f"{context_text(self.context_keys, ctx, empty='the study')}: "
                                 f"no target for epochs to target there.")
            else:
                self.targets[ctx], self.target_how[ctx] = math.nan, "no baseline"

    def _baseline_target(self, bkey: tuple, ctx: tuple) -> tuple[float, str]:
        """The default target of one context and how it was set, at the context's comparison epoch."""
        bt = list(self.group_trials[bkey][TRIAL_ID])
        e = self.context_epoch(ctx)
        at = target_epoch(e)
        bests = [math.inf if self.curves[t].diverged_at <= e else self.curves[t].at(at, math.nan)[BEST] for t in bt]
        value = reach_target(bests)
        return value, (f"reached by {TARGET_REACH:.0%} of the baseline's {len(bt)} seeds by epoch {at} "
                       f"({TARGET_FRACTION:g} of the comparison epoch {e:g})")

    def target_notes(self) -> list:
        """Each context's target for epochs to target, named with how it was set."""
        out = []
        for ctx, value in self.targets.items():
            how = self.target_how.get(ctx, "")
            if math.isfinite(value) and how != "no baseline":
                where = context_text(self.context_keys, ctx, empty="the study")
                out.append(f"target {self.metric} = {value:.5g} at {where}: {how}.")
        return out


def _usable(trials: pd.DataFrame, group_keys: list, notes: list) -> pd.DataFrame:
    """Finished trials, prior parameters a variant ignores masked, one trial per seed per group:
    the baseline at gamma 0 and gamma 1 is one configuration."""
    usable = masked(trials[~trials["status"].isin([M.ERRORED, M.RUNNING])])
    reps = [c for c in REPLICATE_PARAMS if c in usable.columns]
    dup = usable.duplicated(group_keys + reps, keep="first") if reps else pd.Series(False, index=usable.index)
    if dup.any():
        notes.append(f"{int(dup.sum())} trial(s) repeat a configuration and seed already in their group "
                     f"(e.g. the baseline at several gammas it ignores); the first of each was kept.")
    usable = usable[~dup]
    if usable.empty:
        raise ValueError("no finished trials to compare (all errored or still running)")
    return usable


def build(study: Study, metric: str, baseline: str, significance: float, min_seeds: int, holm_family: str,
           n_resamples: int, seed: int, notes: list) -> Pairing:
    """The keys, the usable trials' curves and their groups."""
    context_keys, variant_keys = keys(study.trials, study.swept)
    group_keys = context_keys + variant_keys
    trials = _usable(study.trials, group_keys, notes)
    hist_by_trial = {tid: h for tid, h in study.history.groupby(TRIAL_ID, sort=False)}
    empty_hist = study.history.iloc[:0]
    clock = study_clock(study.history[study.history[TRIAL_ID].isin(trials[TRIAL_ID])])
    curves = {rec[TRIAL_ID]: trial_curves(rec, hist_by_trial.get(rec[TRIAL_ID], empty_hist), metric, clock)
              for rec in trials.to_dict("records")}
    trials = trials.assign(_g=[group_key(r) for r in zip(*[trials[k] for k in group_keys])])
    return Pairing(metric=metric, baseline=baseline, significance=significance, min_seeds=min_seeds,
                  holm_family=holm_family, n_resamples=n_resamples, seed=seed, context_keys=context_keys,
                  variant_keys=variant_keys, reps=[c for c in REPLICATE_PARAMS if c in trials.columns],
                  curves=curves, clock=clock, group_trials={key: g for key, g in trials.groupby("_g", sort=True)})


