"""PowerLawVAE with real Lightning trainers on tiny data."""
import math

import pytest
import torch

from plvae import metrics as M
from plvae.config import TrialConfig
from plvae.model import PowerLawVAE, latent_diagnostics, train
from plvae.priors import VARIANT_NAMES

TINY = dict(dataset="digits", image_size=8, channels=1, latent_dim=4, hidden_dims=(8, 16), enc_out_dim=32,
            batch_size=64, max_epochs=2, lr=3e-3)
VARIANT_EXTRAS = {"powerlaw_clip": {"clip_dim": 2}, "exponential": {"decay_rate": 0.5}, "linear": {"decay_rate": 0.5}}


def tiny(variant="vae", **kw):
    return TrialConfig(**{**TINY, "variant": variant, **VARIANT_EXTRAS.get(variant, {}), **kw})


@pytest.mark.parametrize("variant", ["powerlaw", "powerlaw_clamp", "powerlaw_clip", "powerlaw_prior_only"])
@pytest.mark.parametrize("estimator,reduction", [("mc", "mean"), ("analytic", "sum")])
def test_gamma_zero_is_exactly_the_baseline(variant, estimator, reduction):
    kw = dict(kl_estimator=estimator, kl_reduction=reduction)
    torch.manual_seed(0)
    base = PowerLawVAE(tiny("vae", **kw))
    other = PowerLawVAE(tiny(variant, gamma=0.0, **kw))
    other.load_state_dict(base.state_dict())
    x = torch.rand(8, 1, 8, 8)
    eps = torch.randn(8, 4)
    a, b = base.loss_terms(x, eps), other.loss_terms(x, eps)
    for name in (M.LOSS, M.RECON, M.DIVERGENCE):
        assert torch.equal(a[name], b[name]), name


def test_decayed_sampling_shrinks_the_noise_the_decoder_sees():
    torch.manual_seed(0)
    model = PowerLawVAE(tiny("powerlaw", gamma=2.0, latent_dim=4))
    assert torch.allclose(model.prior_scale, torch.tensor([1, 1 / 4, 1 / 9, 1 / 16]))
    x, eps = torch.rand(8, 1, 8, 8), torch.randn(8, 4)
    prior_only = PowerLawVAE(tiny("powerlaw_prior_only", gamma=2.0, latent_dim=4, min_decay=1e-3))
    prior_only.load_state_dict(model.state_dict())
    # Same prior and weights; only the sampling differs, so the reconstructions differ.
    assert not torch.equal(model.loss_terms(x, eps)[M.RECON], prior_only.loss_terms(x, eps)[M.RECON])


def test_buffers_follow_the_module_dtype():
    model = PowerLawVAE(tiny("powerlaw_clamp", gamma=1.0)).double()
    terms = model.loss_terms(torch.rand(4, 1, 8, 8, dtype=torch.float64), torch.randn(4, 4, dtype=torch.float64))
    assert model.log_prior_scale.dtype == torch.float64 and terms[M.LOSS].dtype == torch.float64


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_every_variant_trains_and_its_loss_falls(variant):
    out = train(tiny(variant, gamma=0.5))
    for name in M.EPOCH_METRICS + (M.INITIAL_VAL_LOSS, M.INITIAL_VAL_RECON_MU):
        assert name in out, name
    assert out[M.DIVERGED] == 0.0
    assert out[M.VAL_LOSS] < out[M.INITIAL_VAL_LOSS]
    assert out[M.VAL_RECON_MU] < out[M.INITIAL_VAL_RECON_MU]
    assert 0 <= out[M.ACTIVE_UNITS] <= 4


def test_divergence_is_recorded_not_raised():
    out = train(tiny("vae", lr=1e8, max_epochs=3))
    assert out[M.DIVERGED] == 1.0


def test_train_metrics_are_each_epochs_mean_over_examples():
    """Summed in training_step and logged once at the last batch: the per-example mean over the
    epoch's steps, weighted by batch size (the last batch is smaller here), every epoch."""
    import pytorch_lightning as pl

    class Steps(pl.Callback):
        def __init__(self):
            self.steps, self.epochs = [], []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.steps.append((float(outputs["loss"]), batch.shape[0]))

        def on_train_epoch_end(self, trainer, module):
            self.epochs.append((float(trainer.callback_metrics[M.TRAIN_LOSS]), self.steps))
            self.steps = []

    seen = Steps()
    train(tiny("powerlaw_clamp", gamma=0.5, batch_size=100, max_epochs=2), callbacks=[seen])
    assert len(seen.epochs) == 2
    for logged, steps in seen.epochs:
        sizes = [n for _, n in steps]
        assert len(sizes) > 2 and sizes[-1] < sizes[0]   # so weighting by batch size matters
        assert logged == pytest.approx(sum(v * n for v, n in steps) / sum(sizes), rel=1e-5)
        assert logged != pytest.approx(sum(v for v, _ in steps) / len(steps), rel=1e-7)


def test_validation_noise_is_the_same_every_epoch():
    cfg = tiny("powerlaw_clamp", gamma=1.0, max_epochs=1)
    from plvae.data import VAEDataModule
    from plvae.model import make_trainer

    dm = VAEDataModule(cfg)
    model = PowerLawVAE(cfg)
    trainer = make_trainer(cfg)
    first = trainer.validate(model, datamodule=dm, verbose=False)[0]
    second = trainer.validate(model, datamodule=dm, verbose=False)[0]
    assert first[M.VAL_LOSS] == second[M.VAL_LOSS] and first[M.VAL_RECON] == second[M.VAL_RECON]


def test_initial_metrics_survive_a_checkpoint(tmp_path):
    cfg = tiny("powerlaw_clamp", gamma=1.0, max_epochs=1)
    from plvae.data import VAEDataModule
    from plvae.model import make_trainer

    model = PowerLawVAE(cfg)
    trainer = make_trainer(cfg)
    trainer.fit(model, datamodule=VAEDataModule(cfg))
    initial = dict(model.initial_metrics)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    resumed = PowerLawVAE(cfg)
    make_trainer(cfg, max_epochs=2).fit(resumed, datamodule=VAEDataModule(cfg), ckpt_path=tmp_path / "last.ckpt")
    assert resumed.initial_metrics == initial


def test_latent_diagnostics_count_active_units():
    g = torch.Generator().manual_seed(0)
    mus = torch.randn(500, 6, generator=g) * torch.tensor([1.0, 1.0, 0.5, 0.01, 0.01, 0.01])
    out = latent_diagnostics(mus, torch.ones(6))
    assert out[M.ACTIVE_UNITS] == 3
    whitened = latent_diagnostics(mus, torch.tensor([1.0, 1.0, 1.0, 0.01, 0.01, 0.01]))
    assert whitened[M.ACTIVE_UNITS_WHITENED] == 6
    nan = latent_diagnostics(torch.full((10, 6), float("nan")), torch.ones(6))
    assert math.isnan(nan[M.LATENT_ALPHA]) and nan[M.ACTIVE_UNITS] == 0


def test_channels_last_gives_the_same_numbers():
    cfg = tiny("powerlaw_clamp", gamma=1.0, max_epochs=1)
    plain = train(cfg)
    nhwc = train(cfg.replace(channels_last=True))
    assert math.isclose(plain[M.VAL_RECON_MU], nhwc[M.VAL_RECON_MU], rel_tol=1e-3)


def test_training_leaves_process_wide_logging_and_warning_filters_alone():
    """Quieting Lightning is scoped to the run: a notebook's own logging and warnings survive."""
    import logging
    import warnings

    from plvae.model import make_trainer, train
    lg = logging.getLogger("pytorch_lightning")
    old = lg.level
    lg.setLevel(logging.DEBUG)
    try:
        filters = list(warnings.filters)
        make_trainer(TrialConfig(max_epochs=1))
        train(TrialConfig(dataset="powerlaw_gaussian", image_size=8, n_train=64, n_val=32, max_epochs=1))
        assert lg.level == logging.DEBUG
        assert list(warnings.filters) == filters
    finally:
        lg.setLevel(old)
