"""Ray Tune's MLflow logger, keeping the study's structure in MLflow (issue 22):

- the trial's configuration is logged as params only (Ray's callback also logged every number of
  the ``config`` nested in each result as a per-step metric: 22 constants per trial);
- when a trial ends, its outcome (plvae.metrics.OUTCOMES: completed, early_stopped, diverged,
  errored) and the epochs it ran are tags, so an early-stopped run does not look finished.
"""
from __future__ import annotations

from ray.air.integrations.mlflow import MLflowLoggerCallback

from plvae.study_files import TUNE_ERROR, TUNE_TERMINATED, trial_outcome

OUTCOME_TAG = "outcome"
EPOCHS_TAG = "epochs"


class StudyMLflowLogger(MLflowLoggerCallback):
    """``MLflowLoggerCallback`` with config as params only and outcome and epochs as tags.
    max_epochs: the epochs a trial runs when nothing stops it (what "completed" means)."""

    def __init__(self, *args, max_epochs: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})

    def log_trial_end(self, trial, failed: bool = False) -> None:
        from mlflow.tracking import MlflowClient

        run_id = self._trial_runs.get(trial)   # Ray's record of the trial's MLflow run
        if run_id is not None:
            last = dict(trial.last_result or {})
            client = MlflowClient(tracking_uri=self.tracking_uri)
            client.set_tag(run_id, OUTCOME_TAG, trial_outcome(TUNE_ERROR if failed else TUNE_TERMINATED, last,
                                                              self.max_epochs))
            client.set_tag(run_id, EPOCHS_TAG, str(int(last.get("training_iteration", 0))))
        super().log_trial_end(trial, failed)
