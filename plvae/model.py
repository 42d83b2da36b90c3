"""One LightningModule for every prior variant, chosen by configuration.

The encoder gives mu and log sigma^2 per latent dimension k; a variant (plvae.priors) fixes the
decay vector s, whether sampling uses N(mu, (sigma*s)^2) or N(mu, sigma^2), and the divergence
against the prior N(0, s^2). With s = 1 (gamma = 0) every KL variant is the standard VAE, to the bit.

Every KL variant is an exact reparameterisation of the standard beta-VAE (u = z / s), so the total
loss is one objective for all of them (docs/design.md, "Comparing variants fairly"). Validation also
logs where a trial sits on the rate-distortion trade-off: `rate`, the closed-form KL from the
posterior used for sampling to the prior summed over latent dims (nats per example, whatever the
estimator and reduction of the loss), and `recon_mu`, the reconstruction error at z = mu.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from typing import Iterable, Optional, Union

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from plvae import metrics as M
from plvae.config import TrialConfig
from plvae.nets import build_nets
from plvae.priors import divergence, get_variant, kl_normal, prior_scale

_VAL_NOISE_STREAM = 1_000_003  # offsets the validation noise seed from the training seed
_TRAIN_TERMS = (M.LOSS, M.RECON, M.DIVERGENCE)


class PowerLawVAE(pl.LightningModule):
    def __init__(self, cfg: Union[TrialConfig, dict]):
        super().__init__()
        if isinstance(cfg, dict):
            cfg = TrialConfig.from_dict(cfg)
        self.cfg = cfg
        self.save_hyperparameters(cfg.to_dict())
        self.variant = get_variant(cfg.variant)
        self.encoder, self.decoder, enc_out_dim = build_nets(cfg)
        self.fc_mu = nn.Linear(enc_out_dim, cfg.latent_dim)
        self.fc_var = nn.Linear(enc_out_dim, cfg.latent_dim)
        s = prior_scale(cfg.variant, cfg.latent_dim, cfg.gamma, cfg.min_decay, cfg.clip_dim, cfg.decay_rate,
                        dtype=torch.float32)
        # Buffers follow the module's device and dtype; s scales standard deviations.
        self.register_buffer("prior_scale", s)
        self.register_buffer("log_prior_scale", s.log())
        self.diverged = False
        self.initial_metrics: dict[str, float] = {}
        self._val_sums: dict[str, float] = {}
        self._val_mus: list[torch.Tensor] = []
        self._train_sums: dict[str, torch.Tensor] = {}
        self._train_n = 0
        self._clock_start: Optional[float] = None   # perf_counter at this run's first training step
        self._clock_offset = 0.0                     # train_time_s restored from a checkpoint

    # ------------------------------------------------------------------ the model
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean mu and log-variance log sigma^2 (before any decay)."""
        h = self.encoder(x)
        return self.fc_mu(h), self.fc_var(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction at z = mu (the deterministic code)."""
        mu, _ = self.encode(x)
        return self.decoder(mu)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Decode n draws from the prior N(0, s^2)."""
        eps = torch.randn(n, self.cfg.latent_dim, generator=generator).to(self.prior_scale)
        return self.decoder(eps * self.prior_scale)

    def loss_terms(self, x: torch.Tensor, eps: torch.Tensor) -> dict[str, torch.Tensor]:
        """Total loss, reconstruction and divergence for one batch and one noise draw eps ~ N(0, I)."""
        mu, log_var = self.encode(x)
        log_std_q = 0.5 * log_var
        if self.variant.decayed_sampling:
            log_std_q = log_std_q + self.log_prior_scale
        z = mu + torch.exp(log_std_q) * eps
        recon = F.mse_loss(self.decoder(z), x)
        div = divergence(self.variant, z, mu, log_std_q, self.log_prior_scale,
                         self.cfg.kl_estimator, self.cfg.kl_reduction)
        return {M.LOSS: recon + self.cfg.kl_coeff * div, M.RECON: recon, M.DIVERGENCE: div, "mu": mu,
                "log_std_q": log_std_q}

    # ------------------------------------------------------------------ training
    def on_fit_start(self):
        if self.cfg.channels_last:
            self.to(memory_format=torch.channels_last)

    def _images(self, batch) -> torch.Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    def on_train_epoch_start(self):
        self._train_sums, self._train_n = {}, 0

    def on_train_batch_start(self, batch, batch_idx):
        if self._clock_start is None:
            self._clock_start = time.perf_counter()

    def train_time_s(self) -> Optional[float]:
        """Seconds since the trial's first training step (M.TRAIN_TIME_S), summed over a resumed
        trial's runs; None before the first step."""
        if self._clock_start is None:
            return None
        return self._clock_offset + time.perf_counter() - self._clock_start

    def training_step(self, batch, batch_idx):
        x = self._images(batch)
        terms = self.loss_terms(x, torch.randn(x.shape[0], self.cfg.latent_dim, device=x.device, dtype=x.dtype))
        loss = terms[M.LOSS]
        if not torch.isfinite(loss):
            # Divergence is a research outcome: record it, skip this update and stop cleanly.
            self._mark_diverged()
            self._log_train_means()
            return None
        # The epoch's train metrics are summed here (no host sync) and logged once, at the last
        # batch: self.log on every step was 9.5% of the CPU training loop (BENCHMARKS.md, engine).
        n = x.shape[0]
        for name in _TRAIN_TERMS:
            term = terms[name].detach() * n
            self._train_sums[name] = self._train_sums[name] + term if name in self._train_sums else term
        self._train_n += n
        if self._trainer is not None and self.trainer.is_last_batch:
            self._log_train_means()
        return loss

    def _log_train_means(self) -> None:
        """train_loss, train_recon, train_divergence: this epoch's per-example means over the
        finite steps so far (what Lightning's on_epoch=True mean over steps, weighted by batch size,
        gives)."""
        if self._train_n and self._trainer is not None:
            for name, total in self._train_sums.items():
                self.log(M.metric(M.TRAIN, name), total / self._train_n, on_step=False, on_epoch=True,
                         batch_size=self._train_n)

    def _mark_diverged(self) -> None:
        self.diverged = True
        if self._trainer is not None:
            self.trainer.should_stop = True

    def configure_optimizers(self):
        """Adam at cfg.lr; with cfg.warmup_steps = w > 1, update s (counted from 0) uses
        lr * min(1, (s + 1) / w): a linear ramp from lr / w that reaches lr at update w - 1, then
        constant (torch's LinearLR, stepped by Lightning every optimiser step; its state is in the
        checkpoint, so a resumed trial continues the ramp). w = 0 or 1 is plain Adam."""
        optimizer = torch.optim.Adam(self.parameters(), lr=self.cfg.lr)
        w = self.cfg.warmup_steps
        if w <= 1:
            return optimizer
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / w, end_factor=1.0, total_iters=w - 1)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": warmup, "interval": "step", "frequency": 1}}

    # ------------------------------------------------------------------ evaluation
    def _val_noise(self, batch_idx: int, n: int, like: torch.Tensor) -> torch.Tensor:
        """The same noise every epoch (seeded per batch), so validation curves carry no sampling jitter."""
        g = torch.Generator().manual_seed(self.cfg.seed * _VAL_NOISE_STREAM + batch_idx)
        return torch.randn(n, self.cfg.latent_dim, generator=g).to(like)

    @torch.no_grad()
    def _accumulate(self, x: torch.Tensor, batch_idx: int, sums: dict, mus: list) -> None:
        terms = self.loss_terms(x, self._val_noise(batch_idx, x.shape[0], x))
        mu = terms.pop("mu")
        log_std_q = terms.pop("log_std_q")
        terms[M.RECON_MU] = F.mse_loss(self.decoder(mu), x)
        terms[M.RATE] = kl_normal(mu, log_std_q, self.log_prior_scale.expand_as(mu)).sum(dim=-1).mean()
        n = x.shape[0]
        sums["n"] = sums.get("n", 0) + n
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value) * n
        mus.append(mu.float().cpu())

    def _summarise(self, sums: dict, mus: list) -> dict[str, float]:
        out = {M.metric(M.VAL, name): sums[name] / sums["n"]
               for name in (M.LOSS, M.RECON, M.DIVERGENCE, M.RECON_MU, M.RATE)}
        out.update(latent_diagnostics(torch.cat(mus), self.prior_scale.float().cpu()))
        return out

    @torch.no_grad()
    def evaluate(self, batches) -> dict[str, float]:
        """Validation metrics over an iterable of batches, summed exactly as a validation epoch
        sums them ({} for no batches): the pre-training loss, and benchmarks of the engine."""
        sums, mus = {}, []
        for i, batch in enumerate(batches):
            self._accumulate(self._images(batch).to(self.device), i, sums, mus)
        return self._summarise(sums, mus) if sums else {}

    def validation_step(self, batch, batch_idx):
        self._accumulate(self._images(batch), batch_idx, self._val_sums, self._val_mus)

    def on_validation_epoch_start(self):
        self._val_sums, self._val_mus = {}, []

    def on_validation_epoch_end(self):
        if not self._val_sums:
            return
        values = self._summarise(self._val_sums, self._val_mus)
        self._val_mus = []
        if not math.isfinite(values[M.VAL_LOSS]):
            self._mark_diverged()
        values[M.DIVERGED] = float(self.diverged)
        if self.train_time_s() is not None:
            values[M.TRAIN_TIME_S] = self.train_time_s()
        values.update(self.initial_metrics)
        for name, value in values.items():
            self.log(name, float(value), on_step=False, on_epoch=True)

    def on_train_start(self):
        # The seed's "initial" validation loss, measured once before the first update. Kept in
        # checkpoints so a resumed trial does not re-measure it on trained weights.
        if self.initial_metrics:
            return
        dm = getattr(self.trainer, "datamodule", None)
        if dm is None:
            return
        was_training = self.training
        self.eval()
        summary = self.evaluate(dm.val_dataloader())
        self.train(was_training)
        if summary:
            self.initial_metrics = {M.INITIAL_VAL_LOSS: summary[M.VAL_LOSS],
                                    M.INITIAL_VAL_RECON_MU: summary[M.VAL_RECON_MU]}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["plvae"] = {"initial_metrics": self.initial_metrics, "diverged": self.diverged,
                               M.TRAIN_TIME_S: self.train_time_s() or self._clock_offset}

    def on_load_checkpoint(self, checkpoint):
        state = checkpoint.get("plvae", {})
        self.initial_metrics = dict(state.get("initial_metrics", {}))
        self.diverged = bool(state.get("diverged", False))
        self._clock_offset, self._clock_start = float(state.get(M.TRAIN_TIME_S, 0.0)), None


def latent_diagnostics(mus: torch.Tensor, prior_scale: torch.Tensor) -> dict[str, float]:
    """Active units (Burda et al. 2015: Var_x E[z|x] > 0.01), the same on the prior-whitened code
    mu / s (a decayed prior shrinks mu_k by design), and the power-law exponent of mu's spectrum."""
    from plvae.spectrum import eigenspectrum, fit_power_law

    var = mus.var(dim=0) if mus.shape[0] > 1 else torch.full((mus.shape[1],), float("nan"))
    out = {
        M.ACTIVE_UNITS: float((var > M.ACTIVE_UNIT_THRESHOLD).sum()),
        M.ACTIVE_UNITS_WHITENED: float((var / prior_scale.pow(2) > M.ACTIVE_UNIT_THRESHOLD).sum()),
        M.LATENT_ALPHA: float("nan"),
    }
    try:
        out[M.LATENT_ALPHA] = float(fit_power_law(eigenspectrum(mus.numpy())).alpha)
    except ValueError:
        pass  # too few samples or dimensions, or a diverged (non-finite) code: no exponent
    return out


def make_trainer(cfg: TrialConfig, callbacks: Iterable[pl.Callback] = (), logger=False, **overrides) -> pl.Trainer:
    """A Trainer with the project's defaults: no progress bar or summary (studies run dozens at
    once), no sanity check (the model measures the initial validation loss itself), checkpointing
    left to the caller. It changes no process-wide state; ``train`` quiets Lightning for its own
    run only (``quiet_lightning``). ``cfg.grad_clip_norm`` is Lightning's own gradient clipping
    (the total 2-norm over all parameters, torch's clip_grad_norm_); None leaves it off."""
    kwargs = dict(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=1,
        precision=cfg.precision,
        logger=logger,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        log_every_n_steps=10,
    )
    if cfg.grad_clip_norm is not None:
        kwargs.update(gradient_clip_val=cfg.grad_clip_norm, gradient_clip_algorithm="norm")
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


_LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


@contextlib.contextmanager
def quiet_lightning():
    """Within the block only: Lightning's per-run info lines off (a study runs dozens of trials),
    and no per-step warning for a deliberately skipped non-finite step (the divergence is
    recorded). Logger levels and warning filters are restored on exit."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`training_step` returned `None`")
            # A torch deprecation inside Lightning, repeated every batch; nothing a user can act on.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def train(cfg: TrialConfig, data=None, callbacks: Iterable[pl.Callback] = (), logger=False,
          ckpt_path: Optional[str] = None, **trainer_overrides) -> dict[str, float]:
    """Train one trial end to end (notebook use, tests, the Tune trainable); return the final
    epoch's metrics as floats."""
    from plvae.data import VAEDataModule

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = VAEDataModule(cfg, data)
    model = PowerLawVAE(cfg)
    with quiet_lightning():
        trainer = make_trainer(cfg, callbacks=callbacks, logger=logger, **trainer_overrides)
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}
