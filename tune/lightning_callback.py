"""The Lightning callback that reports each epoch to Tune with a checkpoint (imported inside
trials only). Built on Ray's public API - ``ray.tune.report`` with a ``ray.tune.Checkpoint`` -
rather than by overriding a private method of Ray's own Lightning callback."""
from __future__ import annotations

import math
import os
import tempfile

import pytorch_lightning as pl
from ray import tune

from tune.reporting import CHECKPOINT_FILE, REPORTED_METRICS, STUDY_OBJECTIVE, study_objective


class StudyReportCallback(pl.Callback):
    """At each train-epoch end (when Lightning holds both the epoch's train and validation
    metrics): the reported metrics, the study objective and where the trial ran, with a checkpoint
    of the trainer, so ASHA can stop a trial after any epoch and a restarted trial resumes there."""

    def __init__(self, metric: str, facts: dict):
        self.metric = metric
        self.facts = facts

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        logged = trainer.callback_metrics
        report = {name: float(logged[name].item()) for name in REPORTED_METRICS if name in logged}
        if not report:
            return
        objective = study_objective(report, self.metric)
        if objective is not None and not (isinstance(objective, float) and math.isnan(objective)):
            report[STUDY_OBJECTIVE] = objective
        report.update(self.facts)
        with tempfile.TemporaryDirectory() as ckpt_dir:
            trainer.save_checkpoint(os.path.join(ckpt_dir, CHECKPOINT_FILE))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(ckpt_dir))
