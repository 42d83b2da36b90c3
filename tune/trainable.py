"""The Tune trainable: one Lightning trial per call, a plain function (Ray Tune's own style).

Runs in a Ray worker. It trains through ``plvae.model.train`` and reports every epoch through
``tune/lightning_callback.py`` (at train-epoch end, with a checkpoint each time), so ASHA can stop
a trial after any epoch and a restarted trial resumes from its last epoch. What a trial reports
(and the study objective a scheduler ranks) is defined in ``tune/reporting.py``.

Lightning is imported only inside the trial, so the driver, which imports this module for the
trainable, never loads it.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
from contextlib import ExitStack
from typing import Optional

import ray
import torch
from ray import tune

from plvae import metrics as M
from plvae.config import TrialConfig
from plvae.device import training_device
from tune.hparams import write_hparams
from tune.reporting import ACCELERATOR, ASSIGNED_GPUS, CHECKPOINT_FILE, NODE_ID

RAY_CHECKPOINT_LOGGER = "ray.train._internal.storage"   # where Ray 2.60 logs each persisted checkpoint


def train_trial(config: dict, data: Optional[dict] = None, metric: str = M.DEFAULT_STUDY_METRIC,
                cpus: int = 1, images: bool = True, allow_cpu_fallback: bool = False) -> None:
    """One trial: config is a flat TrialConfig dict; data maps plvae.data.data_key -> DataSplits,
    built once per study and read from the object store zero-copy (None: the trial loads its own).
    images: reconstructions and prior samples to TensorBoard each epoch, into the trial's folder
    beside Tune's own events (plvae.callbacks.ReconstructionImages, through ``trial_artifact_dir``). A
    trial given a GPU trains on it or errors in one line (plvae.device); allow_cpu_fallback: on the
    CPU then (rehearsals)."""
    from plvae.callbacks import ReconstructionImages
    from plvae.data import data_key
    from plvae.model import train
    from tune.lightning_callback import StudyReportCallback

    torch.set_num_threads(max(1, int(cpus)))  # concurrent trials never oversubscribe the CPUs
    keep_freed_memory()
    cfg = TrialConfig.from_dict(config)
    splits = (data or {}).get(data_key(cfg))
    # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU (a fraction still maps to one whole
    # device); a GPU PyTorch cannot use is an error, unless the study allows the CPU (rehearsals).
    accelerator = training_device(ray.get_gpu_ids(), allow_cpu_fallback)
    ctx = ray.get_runtime_context()
    facts = {NODE_ID: ctx.get_node_id(), ACCELERATOR: accelerator,
             ASSIGNED_GPUS: float(ctx.get_assigned_resources().get("GPU", 0.0))}
    callbacks = [StudyReportCallback(metric, facts)]
    if images:
        callbacks.append(ReconstructionImages(log_dir=trial_artifact_dir()))
    write_hparams(trial_artifact_dir(), config)   # TensorBoard HParams for grid studies too (tune/hparams.py)
    with ExitStack() as stack:
        # Ray logs "Checkpoint successfully created at: ..." for every epoch of every trial, which
        # buries the study's own output; quiet for this trial only (restored when it ends).
        ray_storage_log = logging.getLogger(RAY_CHECKPOINT_LOGGER)
        stack.callback(ray_storage_log.setLevel, ray_storage_log.level)
        ray_storage_log.setLevel(max(ray_storage_log.getEffectiveLevel(), logging.WARNING))
        ckpt_path = None
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:  # a restarted or resumed trial continues from its last epoch
            ckpt_dir = stack.enter_context(checkpoint.as_directory())
            ckpt_path = os.path.join(ckpt_dir, CHECKPOINT_FILE)
        train(cfg, data=splits, callbacks=callbacks, logger=False, ckpt_path=ckpt_path,
              accelerator=accelerator, devices=1)


def trial_artifact_dir() -> str:
    """This trial's working directory, whose files Ray copies into the trial's folder in the storage
    path at every checkpointed report and when the trial ends (the study's RunConfig turns on
    ``SyncConfig(sync_artifacts=True)``), from any node. Not ``get_trial_dir()``: Ray 2.60 gives the
    first trial of a worker the driver's staging folder, and every later trial a reused worker runs
    its working directory, which without the sync never left Ray's temp folder (issue 22: images
    for 2 trials of 36)."""
    return tune.get_context().get_storage().trial_working_directory


# glibc's mallopt parameters (malloc.h) and the values set for a trial's worker process.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20     # glibc's maximum: blocks below it come from the heap, reused
_TRIM_THRESHOLD = 512 << 20    # freed heap memory kept up to this, not handed back to the OS


@functools.cache   # mallopt is process-wide: once per worker process, not once per trial
def keep_freed_memory() -> bool:
    """Tune runs a trial in a thread of its worker, so glibc serves it from a thread arena. There,
    glibc's dynamic thresholds can settle so that every step's activation tensors are mapped
    fresh from the OS and unmapped again: measured 130,000-180,000 page faults a second and
    epochs 1.2-1.7x slower in 4 trials of 5, against 200 a second in the fast one
    (BENCHMARKS.md, engine). Fixed thresholds keep freed blocks for reuse. glibc (Linux) only;
    elsewhere a no-op (musl's mallopt does nothing and returns 0). Returns whether it applied."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)   # the process's own symbols: the C library already loaded
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def trial_dirname(trial) -> str:
    """Short, readable trial directory names, <variant>_g<gamma>_d<latent_dim>_s<seed>_<trial_id>
    (Tune's default is a truncated dump of the whole flat config)."""
    c = trial.config
    return (f"{c.get('variant', 'trial')}_g{c.get('gamma', 0):g}_d{c.get('latent_dim', 0)}_s{c.get('seed', 0)}"
            f"_{trial.trial_id}")


def trial_name(trial) -> str:
    return f"{trial.config.get('variant', 'trial')}_{trial.trial_id}"
