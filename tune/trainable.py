"""The Tune trainable: one Lightning trial per call, a plain function (Ray Tune's own style).

Runs in a Ray worker. It trains through ``plvae.model.train`` and reports every epoch through
Ray's ``TuneReportCheckpointCallback`` (at train-epoch end, when Lightning has both the train and
the validation metrics of the epoch), with a checkpoint each time, so ASHA can stop a trial after
any epoch and a restarted trial resumes from its last epoch. Nothing runs after the last report
under ASHA, so everything a study needs is in each report.

Divergence: the model logs ``diverged`` = 1 and stops cleanly; the raw metrics are reported as
they are (possibly NaN). Schedulers and searchers do not see NaN: they minimise
``study_objective`` - the study metric, or ``DIVERGED_OBJECTIVE`` (a large finite number) when
the trial has diverged or the metric is not finite - so ASHA's rung cutoffs stay meaningful
(NaN would be skipped by ``nanpercentile`` and never stopped) and Optuna records a bad trial
rather than a failed one.

Lightning is imported only inside the trial (tune/lightning_callback.py), so the driver, which
imports this module for the names below, never loads it.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from contextlib import ExitStack
from typing import Optional

import ray
import torch
from ray import tune

from plvae import metrics as M
from plvae.config import TrialConfig

# The key ASHA / Optuna minimise (reported beside, never instead of, the raw metric).
STUDY_OBJECTIVE = "study_objective"
DIVERGED_OBJECTIVE = 1.0e6
# Facts about where a trial ran, reported with every result (strings are kept in result.json).
NODE_ID = "node_id"            # Ray's node id (node_ip is the same for every node on one machine)
ACCELERATOR = "accelerator"    # what Lightning trained on: "gpu" or "cpu"
ASSIGNED_GPUS = "assigned_gpus"  # the GPU share Ray gave the trial (e.g. 0.25)
CHECKPOINT_FILE = "checkpoint.ckpt"
REPORTED_METRICS = tuple(M.EPOCH_METRICS) + (M.INITIAL_VAL_LOSS, M.INITIAL_VAL_RECON_MU)


def study_objective(result: dict, metric: str) -> Optional[float]:
    """The value a scheduler may rank: the metric, or the finite sentinel once diverged."""
    value = result.get(metric)
    if result.get(M.DIVERGED, 0.0) >= 0.5 or (value is not None and not math.isfinite(value)):
        return DIVERGED_OBJECTIVE
    return value


def train_trial(config: dict, data: Optional[dict] = None, metric: str = M.DEFAULT_STUDY_METRIC,
                cpus: int = 1) -> None:
    """One trial: config is a flat TrialConfig dict; data maps plvae.data.data_key -> DataSplits,
    built once per study and read from the object store zero-copy (None: the trial loads its own)."""
    from plvae.data import data_key
    from plvae.model import train
    from tune.lightning_callback import StudyReportCallback

    torch.set_num_threads(max(1, int(cpus)))  # concurrent trials never oversubscribe the CPUs
    # Quiet workers: one "checkpoint created" line per epoch and trial drowns Tune's table.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    cfg = TrialConfig.from_dict(config)
    splits = (data or {}).get(data_key(cfg))
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU (a fraction still maps to one whole
    # device); a logical GPU on a machine without CUDA (a rehearsal) trains on the CPU.
    use_gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    accelerator = "gpu" if use_gpu else "cpu"
    ctx = ray.get_runtime_context()
    facts = {NODE_ID: ctx.get_node_id(), ACCELERATOR: accelerator,
             ASSIGNED_GPUS: float(ctx.get_assigned_resources().get("GPU", 0.0))}
    callback = StudyReportCallback(metric, facts)
    with ExitStack() as stack:
        ckpt_path = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # a restarted or resumed trial continues from its last epoch
            ckpt_dir = stack.enter_context(checkpoint.as_directory())
            ckpt_path = os.path.join(ckpt_dir, CHECKPOINT_FILE)
        train(cfg, data=splits, callbacks=[callback], logger=False, ckpt_path=ckpt_path,
              accelerator=accelerator, devices=1)


def trial_dirname(trial) -> str:
    """Short, readable trial directory names, <variant>_g<gamma>_d<latent_dim>_s<seed>_<trial_id>
    (Tune's default is a truncated dump of the whole flat config)."""
    c = trial.config
    return (f"{c.get('variant', 'trial')}_g{c.get('gamma', 0):g}_d{c.get('latent_dim', 0)}_s{c.get('seed', 0)}"
            f"_{trial.trial_id}")


def trial_name(trial) -> str:
    return f"{trial.config.get('variant', 'trial')}_{trial.trial_id}"
