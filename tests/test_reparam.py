"""The premise of comparing variants on val_loss (docs/design.md, "Comparing variants fairly"): every
KL variant is an exact reparameterisation of the standard beta-VAE. With u = z / s,
KL(N(mu, (sigma s)^2) || N(0, s^2)) = KL(N(mu / s, sigma^2) || N(0, 1)), and the decoder D(s u) is
just another decoder (for undecayed sampling, sigma_u = sigma / s). So mapping a variant's
weights onto a `vae` model - fc_mu rows / s, decoder input columns * s, and fc_var bias - 2 log s
where sampling is undecayed - must give the same loss, reconstruction, divergence, rate and
distortion, for both KL estimators. Checked in float64, so "the same" means ~1e-12.

powerlaw_wae is the exception the analysis relies on too: its squared-W2 objective is not the
KL one, so the mapped model must NOT reproduce its loss."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from plvae import metrics as M
from plvae.config import TrialConfig
from plvae.model import PowerLawVAE
from plvae.priors import KL, VARIANTS, kl_normal

KL_VARIANTS = [name for name, v in VARIANTS.items() if v.divergence == KL and name != "vae"]
SETTINGS = dict(gamma=1.3, min_decay=0.05, clip_dim=3, decay_rate=0.9)


def _first_linear(decoder: nn.Module, latent_dim: int) -> nn.Linear:
    return next(m for m in decoder.modules() if isinstance(m, nn.Linear) and m.in_features == latent_dim)


def _config(variant: str, estimator: str) -> TrialConfig:
    v = VARIANTS[variant]
    return TrialConfig(variant=variant, latent_dim=8, image_size=8, hidden_dims=(4, 8), enc_out_dim=16,
                       kl_estimator=estimator, kl_reduction="sum", kl_coeff=0.3,
                       gamma=SETTINGS["gamma"] if v.uses_gamma else 0.0, min_decay=SETTINGS["min_decay"],
                       clip_dim=SETTINGS["clip_dim"] if v.uses_clip_dim else None,
                       decay_rate=SETTINGS["decay_rate"] if v.uses_decay_rate else None)


def _as_vae(model: PowerLawVAE) -> PowerLawVAE:
    """The same function written as a standard VAE over u = z / s."""
    cfg = model.cfg
    base = PowerLawVAE(cfg.replace(variant="vae", gamma=0.0, clip_dim=None, decay_rate=None)).double()
    base.load_state_dict({k: v for k, v in model.state_dict().items() if "prior_scale" not in k}, strict=False)
    s = model.log_prior_scale.exp()  # the scale the model computes with (its buffers are float32-made)
    with torch.no_grad():
        base.fc_mu.weight.copy_(model.fc_mu.weight / s[:, None])
        base.fc_mu.bias.copy_(model.fc_mu.bias / s)
        if not model.variant.decayed_sampling:   # sigma_u = sigma / s
            base.fc_var.bias.copy_(model.fc_var.bias - 2 * s.log())
        lin, base_lin = _first_linear(model.decoder, cfg.latent_dim), _first_linear(base.decoder, cfg.latent_dim)
        base_lin.weight.copy_(lin.weight * s[None, :])
    return base.eval()


@torch.no_grad()
def _terms(model: PowerLawVAE, x: torch.Tensor, eps: torch.Tensor) -> dict:
    t = model.loss_terms(x, eps)
    out = {k: float(t[k]) for k in (M.LOSS, M.RECON, M.DIVERGENCE)}
    out[M.RECON_MU] = float(torch.nn.functional.mse_loss(model.decoder(t["mu"]), x))
    out[M.RATE] = float(kl_normal(t["mu"], t["log_std_q"], model.log_prior_scale.expand_as(t["mu"])).sum(-1).mean())
    return out


@pytest.mark.parametrize("estimator", ["mc", "analytic"])
@pytest.mark.parametrize("variant", KL_VARIANTS)
def test_every_kl_variant_is_a_reparameterised_vae(variant, estimator):
    torch.manual_seed(0)
    model = PowerLawVAE(_config(variant, estimator)).double().eval()
    assert not torch.allclose(model.prior_scale, torch.ones_like(model.prior_scale))  # a real decay
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    eps = torch.randn(16, 8, dtype=torch.float64)
    got, want = _terms(model, x, eps), _terms(_as_vae(model), x, eps)
    for name in (M.LOSS, M.RECON, M.DIVERGENCE, M.RECON_MU, M.RATE):
        assert math.isclose(got[name], want[name], rel_tol=1e-10, abs_tol=1e-12), (name, got[name], want[name])


def test_w2_is_not_a_reparameterised_vae():
    torch.manual_seed(0)
    model = PowerLawVAE(_config("powerlaw_wae", "analytic")).double().eval()
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    eps = torch.randn(16, 8, dtype=torch.float64)
    got, want = _terms(model, x, eps), _terms(_as_vae(model), x, eps)
    # the code and the decoder map over exactly (same reconstruction), the penalty does not
    assert math.isclose(got[M.RECON], want[M.RECON], rel_tol=1e-10)
    assert math.isclose(got[M.RATE], want[M.RATE], rel_tol=1e-10)   # the rate is a KL: it maps over too
    assert not math.isclose(got[M.DIVERGENCE], want[M.DIVERGENCE], rel_tol=1e-3)
