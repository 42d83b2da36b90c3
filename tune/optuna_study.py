"""Ray Tune's Optuna searcher, keeping the study's structure in Optuna's record (issue 22):

- a trial the scheduler stopped early (it ended before max_t without diverging or failing) is
  told to Optuna as PRUNED, with its last intermediate value, not COMPLETE with an epoch-1 value
  (Optuna's importance chart then measures the objective, not the run length);
- the objective is named (``STUDY_OBJECTIVE``), not "Objective 0";
- each Optuna trial carries its Tune trial id as the user attribute ``tune_trial_id``.

A diverged trial stays COMPLETE with the study's finite sentinel (tune/reporting.py): a bad
outcome, not an unfinished one.
"""
from __future__ import annotations

import warnings
from typing import Optional

from ray.tune.search.optuna import OptunaSearch
from ray.tune.search.repeater import TRIAL_INDEX, Repeater

from plvae import metrics as M
from tune.reporting import STUDY_OBJECTIVE

TUNE_TRIAL_ID = "tune_trial_id"   # the Optuna user attribute naming the Tune trial


def name_objective(storage, study_name: str) -> None:
    """Create (or load) the study with its objective named before Ray's searcher loads it (Ray
    creates it with load_if_exists); nothing to do for an in-memory study (storage None)."""
    if storage is None:
        return
    import optuna

    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize", load_if_exists=True)
    if study.metric_names is None:
        with warnings.catch_warnings():   # "experimental" since Optuna 3.2, still so in 4.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([STUDY_OBJECTIVE])


class StudyOptunaSearch(OptunaSearch):
    """``OptunaSearch`` with early-stopped trials PRUNED and the Tune trial id on each trial.
    max_t: the epochs a trial runs when nothing stops it (training_iteration)."""

    def __init__(self, *args, max_t: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_t = max_t

    def suggest(self, trial_id: str) -> Optional[dict]:
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)   # Ray's own record of the Optuna trial it asked for
        if ot_trial is not None:
            ot_trial.set_user_attr(TUNE_TRIAL_ID, trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        stopped_early = (not error and result is not None and not M.is_diverged(result)
                         and int(result.get("training_iteration", self.max_t)) < self.max_t)
        # No result and no error is what Ray's searcher tells Optuna as PRUNED (with the last
        # intermediate value, which on_trial_result reported each epoch).
        super().on_trial_complete(trial_id, None if stopped_early else result, error)


class SeedRepeater(Repeater):
    """Ray's public ``Repeater``: each Optuna suggestion (one configuration of the one arm the study
    searches) runs once at every seed of the study - Repeater's ``__trial_index__`` i becomes
    ``seed = seeds[i]`` (and ``data_seed`` with data_seed_from_seed) - so a seed is a replicate, never
    a searched parameter. Optuna is told the mean over ``scored_seeds`` (a tuning protocol's tuning
    seeds: evaluation seeds never steer the search; default every seed), when the whole group has
    finished; an early-stopped seed counts with its last value (prefer fifo or seed_asha)."""

    def __init__(self, searcher, seeds: list, data_seed_from_seed: bool = False, scored_seeds=None):
        super().__init__(searcher, repeat=len(seeds), set_index=True)
        self.seeds, self.data_seed_from_seed = list(seeds), data_seed_from_seed
        self.scored_seeds = set(scored_seeds if scored_seeds is not None else seeds)
        self.seed_of = {}

    def suggest(self, trial_id: str):
        config = super().suggest(trial_id)
        if not isinstance(config, dict):   # None (wait) or Searcher.FINISHED
            return config
        seed = self.seeds[config.pop(TRIAL_INDEX)]
        config["seed"] = seed
        if self.data_seed_from_seed:
            config["data_seed"] = seed
        self.seed_of[trial_id] = seed
        return config

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, **kwargs) -> None:
        scored = self.seed_of.get(trial_id) in self.scored_seeds
        super().on_trial_complete(trial_id, result if scored else None, **kwargs)   # None: left out of the mean
