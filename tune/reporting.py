"""What a trial reports, shared by the trainable, its Lightning callback and the driver (no Ray,
no Lightning import here, so neither side imports the other to reach these names).

Divergence: the model logs ``diverged`` = 1 and stops cleanly; the raw metrics are reported as
they are (possibly NaN). Schedulers and searchers do not see NaN: they minimise
``study_objective`` - the study metric, or ``DIVERGED_OBJECTIVE`` (a large finite number) when
the trial has diverged (``plvae.metrics.is_diverged``) or the metric is not finite - so ASHA's
rung cutoffs stay meaningful and Optuna records a bad trial rather than a failed one.
"""
from __future__ import annotations

import math
from typing import Optional

from plvae import metrics as M

# The key ASHA / Optuna minimise (reported beside, never instead of, the raw metric).
STUDY_OBJECTIVE = "study_objective"
DIVERGED_OBJECTIVE = 1.0e6
# Facts about where a trial ran, reported with every result (strings are kept in result.json).
NODE_ID = "node_id"              # Ray's node id (node_ip is the same for every node on one machine)
ACCELERATOR = "accelerator"      # what Lightning trained on: "gpu" or "cpu"
ASSIGNED_GPUS = "assigned_gpus"  # the GPU share Ray gave the trial (e.g. 0.25)
CHECKPOINT_FILE = "checkpoint.ckpt"
REPORTED_METRICS = tuple(M.EPOCH_METRICS) + (M.INITIAL_VAL_LOSS, M.INITIAL_VAL_RECON_MU)


def study_objective(result: dict, metric: str) -> Optional[float]:
    """The value a scheduler may rank: the metric, or the finite sentinel once diverged."""
    value = result.get(metric)
    if M.is_diverged(result) or (value is not None and not math.isfinite(value)):
        return DIVERGED_OBJECTIVE
    return value
