"""Time to target under a tuning protocol (analysis.tuned): the target the tuned baseline sets, when
each run first reaches it (in epochs and in seconds from its first training step), the optimiser
steps per epoch, and how flat the tuned baseline is at the end of its budget."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import numpy as np
import pandas as pd

from plvae import metrics as M

from analysis.censored import reach_target, target_epoch
from analysis.load import ITERATION, TIME_TOTAL, TRIAL_ID, Study

if TYPE_CHECKING:
    from analysis.tuned import Protocol


def first_reach(study: Study, runs: pd.DataFrame, target: float, metric: str):
    """(epoch, seconds) at which each run first has metric <= target; inf where it never does."""
    h = study.history[study.history[TRIAL_ID].isin(runs[TRIAL_ID])]
    epochs, seconds = {}, {}
    clock = clock_column(h, M.TRAIN_TIME_S, TIME_TOTAL)
    for tid, g in h.groupby(TRIAL_ID):
        g = g.sort_values(ITERATION)
        hit = g[g[metric].astype(float) <= target]
        epochs[tid] = float(hit[ITERATION].iloc[0]) if len(hit) else math.inf
        seconds[tid] = float(hit[clock].iloc[0]) if len(hit) and clock in hit.columns else math.inf
    return runs[TRIAL_ID].map(epochs).astype(float), runs[TRIAL_ID].map(seconds).astype(float)


def clock_column(df: pd.DataFrame, train_clock: str, tune_clock: str) -> str:
    """Seconds from the first training step (a reused worker's warm-up left out) where every run
    has them, else Tune's time since the trial started (studies from before train_time_s)."""
    ok = train_clock in df.columns and np.isfinite(df[train_clock].astype(float)).all()
    return train_clock if ok else tune_clock


def steps_per_epoch(runs: pd.DataFrame) -> float:
    """Optimiser steps per epoch of generated datasets (n_train / batch_size, the last batch kept);
    nan where the training set's size is not a trial field (file datasets): times stay in epochs."""
    if not {"n_train", "batch_size", "dataset"} <= set(runs.columns) or runs.empty:
        return math.nan
    if runs["dataset"].iloc[0] not in ("natural_patches", "powerlaw_gaussian"):
        return math.nan
    return float(math.ceil(runs["n_train"].iloc[0] / runs["batch_size"].iloc[0]))


def target_of(study: Study, base_runs: pd.DataFrame, protocol: Protocol) -> tuple[float, int, int, str]:
    """The target: the smallest value that ``target_reach`` (8 in 10) of the tuned baseline's
    evaluation seeds have reached by ``target_fraction`` (3/4) of the budget - the ``target_reach``
    quantile of each seed's best value up to that epoch (a diverged seed counts +inf). A plain median
    at 3/4 of the budget is reached by about half the seeds once the curve has flattened and seed
    noise dominates. Returns the target, how many baseline seeds ever reach it, of how many, a note."""
    budget = int(base_runs["max_epochs"].max())
    at = target_epoch(budget, protocol.target_fraction)
    h = study.history[study.history[TRIAL_ID].isin(base_runs[TRIAL_ID]) & (study.history[ITERATION] <= at)]
    best = h.groupby(TRIAL_ID)[protocol.metric].min().reindex(base_runs[TRIAL_ID]).astype(float)
    best = best.where(np.isfinite(best.to_numpy()), np.inf).fillna(np.inf)
    if base_runs["diverged"].astype(bool).any():   # a diverged seed has reached nothing
        best[base_runs.loc[base_runs["diverged"].astype(bool), TRIAL_ID].to_numpy()] = np.inf
    target = reach_target(best.to_numpy(), protocol.target_reach)   # the rule analysis.compare uses too
    reached = int(np.isfinite(first_reach(study, base_runs, target, protocol.metric)[0]).sum())
    note = (f"target {protocol.metric} = {target:.5g}: reached by {protocol.target_reach:.0%} of the tuned "
            f"baseline's seeds by epoch {at} of {budget} ({protocol.target_fraction:g} of the budget); "
            f"{reached} of {len(base_runs)} reach it within the budget")
    if not math.isfinite(target):
        note += " (too few baseline seeds finished: time to target is not measured here)"
    return target, reached, len(base_runs), note


def flattening(study: Study, runs: pd.DataFrame, metric: str, last: float = 0.2) -> Optional[dict]:
    """How much the runs still improve over the last ``last`` of the budget (issue 18: under 2% for
    the tuned baseline means the budget is long enough): the relative change of the median over
    runs between epoch (1 - last) E and E, of the value itself and of the best so far. None where
    no run finished the budget."""
    budget = int(runs["max_epochs"].max())
    early = max(1, round((1 - last) * budget))
    h = study.history[study.history[TRIAL_ID].isin(runs.loc[~runs["diverged"].astype(bool), TRIAL_ID])]
    wide = h.pivot_table(index=ITERATION, columns=TRIAL_ID, values=metric)
    if budget not in wide.index or early not in wide.index:
        return None
    best = wide.cummin()
    change = {name: float((w.loc[early].median() - w.loc[budget].median()) / w.loc[budget].median())
              for name, w in (("value", wide), ("best", best))}
    return {"from": early, "to": budget, "runs": wide.shape[1], **change}
