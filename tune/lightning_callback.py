"""Ray Tune's Lightning report callback, extended for a study (imported inside trials only)."""
from __future__ import annotations

from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

from tune.trainable import CHECKPOINT_FILE, REPORTED_METRICS, STUDY_OBJECTIVE, study_objective


class StudyReportCallback(TuneReportCheckpointCallback):
    """Ray's Lightning report callback plus the study objective and where the trial ran."""

    def __init__(self, metric: str, facts: dict):
        super().__init__(metrics=list(REPORTED_METRICS), filename=CHECKPOINT_FILE,
                         save_checkpoints=True, on="train_epoch_end")
        self._metric = metric
        self._facts = facts

    def _get_report_dict(self, trainer, pl_module):
        report = super()._get_report_dict(trainer, pl_module)
        if not report:
            return report
        objective = study_objective(report, self._metric)
        if objective is not None:
            report[STUDY_OBJECTIVE] = objective
        report.update(self._facts)
        return report
