"""Lightning callbacks for watching a trial, usable from a notebook or a Tune trial alike.

``ReconstructionImages`` draws, once per validation epoch, two small grids to TensorBoard: a fixed
validation batch (originals over their reconstructions at z = mu) and decoded prior samples from
fixed noise, so the images of successive epochs compare. The model stays logger-agnostic: the
images are made here, and written either to a folder of its own (``log_dir``, e.g. a Tune trial's
folder, beside Tune's own events) or to the trainer's TensorBoardLogger.
"""
from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch

RECONSTRUCTIONS = "images/reconstructions"   # TensorBoard tags
SAMPLES = "images/prior_samples"
_SAMPLE_NOISE_SEED = 2_718_281                # the same prior draws every epoch (and every trial)


def image_grid(top: torch.Tensor, bottom: Optional[torch.Tensor] = None, value_range=None) -> torch.Tensor:
    """One (C, H, W) grid in [0, 1]: ``top`` in a row, ``bottom`` (if any) in the row below, both
    scaled by one value range (the originals'), so a reconstruction is shown on its original's scale."""
    from torchvision.utils import make_grid

    top = top.detach().float().cpu()
    rows = top if bottom is None else torch.cat([top, bottom.detach().float().cpu()])
    if value_range is None:
        value_range = (float(top.min()), float(top.max()))
    rows = torch.nan_to_num(rows, nan=value_range[0])   # a diverged decoder still draws, as flat grey
    lo, hi = value_range
    rows = ((rows - lo) / max(hi - lo, 1e-8)).clamp(0, 1)
    return make_grid(rows, nrow=top.shape[0], padding=1, pad_value=1.0)


class ReconstructionImages(pl.Callback):
    """At each validation epoch's end: reconstructions of the first ``n`` validation images and
    ``n`` decoded prior samples, as TensorBoard images at step epoch + 1 (Tune's training_iteration).

    ``log_dir``: write with a SummaryWriter of its own into this folder; None: use the trainer's
    TensorBoardLogger (nothing is drawn without either)."""

    def __init__(self, log_dir: Optional[str] = None, n: int = 8):
        self.log_dir = log_dir
        self.n = n
        self._writer = None
        self._own_writer = False
        self._batch: Optional[torch.Tensor] = None
        self._noise: Optional[torch.Tensor] = None

    def _get_writer(self, trainer: pl.Trainer):
        if self._writer is None:
            if self.log_dir is not None:
                from torch.utils.tensorboard import SummaryWriter

                self._writer, self._own_writer = SummaryWriter(self.log_dir), True
            else:
                from pytorch_lightning.loggers import TensorBoardLogger

                tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
                self._writer = tb.experiment if tb is not None else None
        return self._writer

    def _fixed_batch(self, trainer: pl.Trainer) -> Optional[torch.Tensor]:
        """The first n validation images, taken once (the validation loader is not shuffled)."""
        if self._batch is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            if loader is None:
                return None
            batch = next(iter(loader))
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            self._batch = x[: self.n].clone()
        return self._batch

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        writer = self._get_writer(trainer)
        x = self._fixed_batch(trainer) if writer is not None else None
        if x is None:
            return
        if self._noise is None:
            g = torch.Generator().manual_seed(_SAMPLE_NOISE_SEED)
            self._noise = torch.randn(self.n, pl_module.cfg.latent_dim, generator=g)
        step = trainer.current_epoch + 1
        value_range = (float(x.min()), float(x.max()))
        recon = pl_module(x.to(pl_module.device))
        samples = pl_module.decoder(self._noise.to(pl_module.prior_scale) * pl_module.prior_scale)
        writer.add_image(RECONSTRUCTIONS, image_grid(x, recon, value_range), step)
        writer.add_image(SAMPLES, image_grid(samples, value_range=value_range), step)
        writer.flush()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self._own_writer and self._writer is not None:
            self._writer.close()
        self._writer, self._own_writer = None, False
