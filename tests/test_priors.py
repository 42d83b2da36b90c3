"""Decay schedules, the variant registry and the divergences against torch.distributions."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from plvae.priors import (VARIANT_NAMES, VARIANTS, divergence, get_variant, kl_monte_carlo, kl_normal,
                          prior_scale, reduce, w2_squared)


def test_every_row_of_the_design_table_is_registered():
    assert set(VARIANT_NAMES) == {"vae", "powerlaw", "powerlaw_clamp", "powerlaw_clip", "powerlaw_prior_only",
                                  "powerlaw_wae", "exponential", "linear"}
    assert not VARIANTS["powerlaw_prior_only"].decayed_sampling
    assert VARIANTS["powerlaw_wae"].divergence == "w2"
    assert all(VARIANTS[v].decayed_sampling for v in ("powerlaw", "powerlaw_clamp", "powerlaw_clip", "exponential", "linear"))


@pytest.mark.parametrize("variant,kw,expected", [
    ("vae", {}, [1, 1, 1, 1]),
    ("powerlaw", {"gamma": 1.0}, [1, 1 / 2, 1 / 3, 1 / 4]),
    ("powerlaw_clamp", {"gamma": 2.0, "min_decay": 0.1}, [1, 0.25, 0.1111111, 0.1]),
    ("powerlaw_clip", {"gamma": 1.0, "clip_dim": 2}, [1, 0.5, 0.5, 0.5]),
    ("powerlaw_prior_only", {"gamma": 1.0, "min_decay": 0.3}, [1, 0.5, 1 / 3, 0.3]),
    ("powerlaw_wae", {"gamma": 1.0, "min_decay": 0.3}, [1, 0.5, 1 / 3, 0.3]),
    ("exponential", {"decay_rate": math.log(2), "min_decay": 0.2}, [1, 0.5, 0.25, 0.2]),
    ("linear", {"decay_rate": 0.9, "min_decay": 0.5}, [1, 0.7, 0.5, 0.5]),
])
def test_prior_scale_matches_the_formulas(variant, kw, expected):
    s = prior_scale(variant, 4, **kw)
    assert s.shape == (4,) and s[0] == 1
    assert torch.allclose(s, torch.tensor(expected, dtype=s.dtype), atol=1e-6)


def test_gamma_zero_gives_exactly_ones():
    for v in ("powerlaw", "powerlaw_clamp", "powerlaw_clip", "powerlaw_prior_only"):
        assert torch.equal(prior_scale(v, 32, 0.0, min_decay=1e-3, clip_dim=4), torch.ones(32))


def test_prior_scale_keeps_device_and_dtype():
    s = prior_scale("powerlaw_clamp", 8, 1.0, 1e-3, dtype=torch.float64, device="cpu")
    assert s.dtype == torch.float64 and s.device.type == "cpu"


@pytest.mark.parametrize("call,needle", [
    (lambda: prior_scale("nope", 4), "variant='nope'"),
    (lambda: prior_scale("powerlaw", 0), "latent_dim=0"),
    (lambda: prior_scale("powerlaw", 4, gamma=-1), "gamma=-1"),
    (lambda: prior_scale("powerlaw_clamp", 4, 1.0, min_decay=0.0), "min_decay=0.0"),
    (lambda: prior_scale("powerlaw_clip", 4, 1.0), "clip_dim=None"),
    (lambda: prior_scale("exponential", 4, min_decay=1e-3), "decay_rate=None"),
    (lambda: get_variant("VAE"), "allowed: vae"),
])
def test_bad_arguments_name_the_value(call, needle):
    with pytest.raises(ValueError, match=None) as err:
        call()
    msg = str(err.value)
    assert needle in msg and "allowed" in msg and "\n" not in msg


def _gaussians(seed=0, shape=(64, 8)):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(shape, generator=g, dtype=torch.float64)
    log_a = 0.5 * torch.randn(shape, generator=g, dtype=torch.float64)
    log_b = 0.5 * torch.randn(shape[-1], generator=g, dtype=torch.float64).expand(shape)
    return m, log_a, log_b


def test_closed_form_kl_matches_torch_distributions():
    m, log_a, log_b = _gaussians()
    ref = kl_divergence(Normal(m, log_a.exp()), Normal(torch.zeros_like(m), log_b.exp()))
    assert torch.allclose(kl_normal(m, log_a, log_b), ref, atol=1e-12)


def test_monte_carlo_kl_is_log_q_minus_log_p_and_unbiased():
    m, log_a, log_b = _gaussians()
    q, p = Normal(m, log_a.exp()), Normal(torch.zeros_like(m), log_b.exp())
    z = q.sample()
    assert torch.allclose(kl_monte_carlo(z, m, log_a, log_b), q.log_prob(z) - p.log_prob(z), atol=1e-12)
    torch.manual_seed(0)
    zs = q.sample((4000,))
    estimate = kl_monte_carlo(zs, m, log_a, log_b).mean(0)
    assert torch.allclose(estimate.mean(), kl_normal(m, log_a, log_b).mean(), rtol=0.02)


def test_w2_squared_closed_form():
    # Between 1-D Gaussians W2^2 = (m1 - m2)^2 + (a - b)^2; check against the quantile coupling.
    m, a, b = torch.tensor(0.7), torch.tensor(1.3), torch.tensor(0.4)
    n = 2_000_000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    qx = Normal(m.double(), a.double()).icdf(u)
    qy = Normal(torch.tensor(0.0, dtype=torch.float64), b.double()).icdf(u)
    assert math.isclose(float(((qx - qy) ** 2).mean()), float(w2_squared(m, a, b)), rel_tol=5e-3)


def test_reductions():
    per = torch.arange(6.0).reshape(2, 3)
    assert reduce(per, "mean") == per.mean()
    assert reduce(per, "sum") == per.sum(1).mean()
    with pytest.raises(ValueError, match="kl_reduction='max'"):
        reduce(per, "max")


def test_divergence_dispatches_by_variant_and_estimator():
    m, log_a, log_b = _gaussians(1, (16, 4))
    log_s = log_b[0]
    z = m + log_a.exp() * torch.randn_like(m)
    kl = get_variant("powerlaw_clamp")
    assert torch.isclose(divergence(kl, z, m, log_a, log_s, "analytic", "mean"), kl_normal(m, log_a, log_b).mean())
    assert torch.isclose(divergence(kl, z, m, log_a, log_s, "mc", "sum"), kl_monte_carlo(z, m, log_a, log_b).sum(1).mean())
    w2 = get_variant("powerlaw_wae")
    assert torch.isclose(divergence(w2, z, m, log_a, log_s, "mc", "mean"), w2_squared(m, log_a.exp(), log_b.exp()).mean())


def test_which_variant_uses_which_field_is_defined_once():
    from plvae.priors import PRIOR_FIELDS, VARIANTS
    for v in VARIANTS.values():
        for f in PRIOR_FIELDS:
            assert v.uses(f) == getattr(v, "uses_" + f)
        assert v.uses("latent_dim") and v.uses("lr") and v.uses("seed")
    assert all(any(v.uses(f) for v in VARIANTS.values()) for f in PRIOR_FIELDS)
    assert not VARIANTS["vae"].uses("gamma") and VARIANTS["powerlaw_clamp"].uses("min_decay")
    assert not VARIANTS["powerlaw"].uses("min_decay")
