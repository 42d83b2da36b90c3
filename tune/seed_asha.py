"""Seed-grouped ASHA: asynchronous successive halving that decides per configuration, not per trial.

A study compares configurations across seeds (paired by seed). Plain ASHA ranks single trials, so
it stops one seed of a configuration and keeps another, and the comparison is left with unequal n
at unequal epochs (issue 22: 16-17 of 18 seed-0 trials stopped at epoch 1, n = 2 per group).
Here a configuration is a trial's config without ``seed`` and ``data_seed``; its trials are a
group, and the group is what is ranked, continued or stopped:

- rungs at grace * rf**k epochs below max_t, as ``ASHAScheduler`` (one bracket);
- a trial's first result at or past a rung records its objective there;
- when every trial of the group has recorded at the rung (or ended before it: its last objective
  counts), the group's median is compared with the 1 - 1/rf quantile of the medians of the groups
  judged there before it (ASHA's cutoff, over groups); worse, and the whole group is stopped;
- a stopped group's trials stop at their next result, all of them; a kept group runs on together.

So every seed of a configuration has a value at every rung the configuration passed, a kept
configuration runs every seed to the end, and paired comparisons keep full n at equal epochs (a
stopped configuration's seeds may end epochs apart - the one that waited trained on - but all
hold the rung's epoch, where the group was compared).

The cost: a trial that reaches a rung before its siblings trains on (CONTINUE) until the last
sibling reaches the rung; should the group then be stopped, the epochs it ran past the rung are
spent for nothing - about one epoch per trial when siblings run side by side, as they do when the
grid puts seeds next to each other (it does: ``seed`` is the last swept field). Only when a sibling
has not even started (PENDING: no free slot) is the trial PAUSED at the rung - Tune keeps its last
checkpoint and gives the slot to the sibling (FIFO runs pending trials before paused ones), then
restores it - since otherwise it would run to the end before its sibling starts. Measured in
BENCHMARKS.md (benchmarks/bench_asha.py).

``SeedGroups`` holds the decisions, with no Ray (unit-tested alone); ``SeedGroupedASHA`` puts it
behind Ray Tune's public scheduler API (``ray.tune.schedulers.FIFOScheduler``: trials run in the
order they were added, and the decision is taken in ``on_trial_result``).
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

SEED_FIELDS = ("seed", "data_seed")   # what varies inside a group (TrialConfig's two seeds)


def group_key(config: dict, seed_fields=SEED_FIELDS) -> str:
    """A configuration: the config without its seeds, as one canonical string."""
    return json.dumps({k: v for k, v in config.items() if k not in seed_fields}, sort_keys=True, default=str)


def group_size(trials: list, seed_fields=SEED_FIELDS) -> Optional[int]:
    """Trials per configuration in a grid (its seeds); None for no grid (a searcher's trials)."""
    counts = Counter(group_key(t, seed_fields) for t in trials or ())
    return max(counts.values()) if counts else None


@dataclass
class _Group:
    members: list = field(default_factory=list)        # trial ids, in the order they were added
    recorded: dict = field(default_factory=dict)       # rung -> {trial id: objective}
    judged: set = field(default_factory=set)           # rungs this group has been decided at
    stopped: bool = False


class SeedGroups:
    """The decisions of a seed-grouped ASHA (mode "min": lower objective is better).

    group_size: trials per configuration (the seeds of the grid); a group is decided at a rung once
    that many of its trials recorded there or ended. None: the trials added so far (enough when
    every trial is added before the first reaches a rung)."""

    def __init__(self, grace_period: int, max_t: int, reduction_factor: float, group_size: Optional[int] = None):
        if grace_period < 1 or max_t < grace_period or reduction_factor <= 1:
            raise ValueError(f"grace_period={grace_period}, max_t={max_t}, reduction_factor={reduction_factor}"
                             " is invalid; allowed: 1 <= grace_period <= max_t, reduction_factor > 1")
        self.rf, self.max_t, self.group_size = reduction_factor, max_t, group_size
        n_rungs = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
        self.rungs = [grace_period * reduction_factor ** k for k in range(n_rungs)
                      if grace_period * reduction_factor ** k < max_t]
        self.medians: dict = {r: [] for r in self.rungs}   # rung -> medians of the groups judged there
        self.groups: dict[str, _Group] = {}
        self.group_of: dict[str, str] = {}
        self.last: dict[str, Optional[float]] = {}          # trial id -> last objective
        self.ended: set = set()
        self.stopped_groups = 0

    def add(self, trial_id: str, key: str) -> None:
        if trial_id not in self.group_of:
            self.group_of[trial_id] = key
            self.groups.setdefault(key, _Group()).members.append(trial_id)

    def result(self, trial_id: str, iteration: int, objective: Optional[float]) -> bool:
        """One result of a trial; returns whether the trial stops now (its group was stopped)."""
        group = self.groups[self.group_of[trial_id]]
        self.last[trial_id] = objective
        for rung in self.rungs:
            if iteration >= rung:
                group.recorded.setdefault(rung, {}).setdefault(trial_id, objective)
        self._decide(group)
        return group.stopped

    def end(self, trial_id: str) -> None:
        """A trial ended (finished, stopped, errored or removed): its siblings no longer wait for it."""
        self.ended.add(trial_id)
        if trial_id in self.group_of:
            self._decide(self.groups[self.group_of[trial_id]])

    def stopped(self, trial_id: str) -> bool:
        return self.groups[self.group_of[trial_id]].stopped

    def waiting(self, trial_id: str) -> bool:
        """Whether the trial has reached a rung its group has not been decided at yet."""
        group = self.groups[self.group_of[trial_id]]
        return not group.stopped and any(trial_id in group.recorded.get(r, {}) and r not in group.judged
                                         for r in self.rungs)

    def siblings(self, trial_id: str) -> list:
        return [t for t in self.groups[self.group_of[trial_id]].members if t != trial_id]

    def _complete(self, group: _Group, rung) -> Optional[list]:
        """The group's objectives at the rung once every member recorded there or ended, else None."""
        size = self.group_size or len(group.members)
        recorded = group.recorded.get(rung, {})
        values = []
        for tid in group.members:
            if tid in recorded:
                values.append(recorded[tid])
            elif tid in self.ended:
                values.append(self.last.get(tid))
            else:
                return None
        return values if len(group.members) >= size else None

    def _decide(self, group: _Group) -> None:
        for rung in self.rungs:
            if group.stopped:
                return
            if rung in group.judged:
                continue
            values = self._complete(group, rung)
            if values is None:
                return                      # a higher rung is never judged before a lower one
            finite = [v for v in values if v is not None and not math.isnan(v)]
            group.judged.add(rung)
            if not finite:
                continue                    # nothing to rank: the group goes on
            median = float(np.median(finite))
            earlier = self.medians[rung]
            # ASHA's cutoff over groups (in reward space, -objective: numpy's linear quantile).
            if earlier and -median < np.percentile([-m for m in earlier], (1 - 1 / self.rf) * 100):
                group.stopped = True
                self.stopped_groups += 1
            earlier.append(median)


class SeedGroupedASHA(FIFOScheduler):
    """``SeedGroups`` behind Ray Tune's scheduler API: ``time_attr`` (training_iteration) marks the
    rungs, ``metric`` is minimised (mode "min" only: the study's objective is a loss)."""

    def __init__(self, time_attr: str = "training_iteration", metric: Optional[str] = None, mode: str = "min",
                 max_t: int = 100, grace_period: int = 1, reduction_factor: float = 4,
                 group_size: Optional[int] = None, seed_fields=SEED_FIELDS):
        if mode != "min":
            raise ValueError(f"mode={mode!r} is invalid; allowed: 'min'")
        super().__init__()
        self._time_attr, self._metric, self._mode = time_attr, metric, mode
        self._seed_fields = tuple(seed_fields)
        self.groups = SeedGroups(grace_period, max_t, reduction_factor, group_size)
        self._trials: dict = {}    # trial id -> Trial, to see whether a sibling has not started yet

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec) -> bool:
        if (self._metric and metric and metric != self._metric) or (mode and mode != "min"):
            return False
        self._metric = self._metric or metric
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        self._trials[trial.trial_id] = trial
        self.groups.add(trial.trial_id, group_key(trial.config, self._seed_fields))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._time_attr not in result:
            return TrialScheduler.CONTINUE
        self.groups.add(trial.trial_id, group_key(trial.config, self._seed_fields))   # a restored trial
        value = result.get(self._metric)
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        stop = self.groups.result(trial.trial_id, int(result[self._time_attr]), value)
        if stop:
            # A sibling paused at the rung is stopped now, rather than resumed for one more epoch
            # (how Ray's own HyperBand stops paused trials).
            for t in self.groups.siblings(trial.trial_id):
                if getattr(self._trials.get(t), "status", None) == Trial.PAUSED:
                    tune_controller.stop_trial(self._trials[t])
            return TrialScheduler.STOP
        if result[self._time_attr] >= self.groups.max_t:
            return TrialScheduler.STOP
        if self.groups.waiting(trial.trial_id) and any(
                getattr(self._trials.get(t), "status", None) == Trial.PENDING for t in self.groups.siblings(trial.trial_id)):
            return TrialScheduler.PAUSE     # its slot lets a sibling that has not started catch up
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self.groups.end(trial.trial_id)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.groups.end(trial.trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.groups.end(trial.trial_id)

    def debug_string(self) -> str:
        g = self.groups
        return (f"Using seed-grouped ASHA: {len(g.groups)} configurations, {g.stopped_groups} stopped; rungs "
                + ", ".join(f"{r:g} ({len(g.medians[r])} judged)" for r in g.rungs))
