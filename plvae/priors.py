"""Prior variants: decay schedules, the registry keyed by name, and the divergences.

A variant is three choices (docs/design.md, "The science"): the decay schedule s_k that scales the
prior's standard deviations, N(0, s^2); whether the posterior used for sampling is decayed too,
N(mu, (sigma*s)^2); and the divergence (KL or squared 2-Wasserstein). Everything here is pure
tensor code on the caller's device and dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

KL = "kl"
W2 = "w2"
KL_ESTIMATORS = ("mc", "analytic")
REDUCTIONS = ("mean", "sum")


def _ranks(latent_dim: int, device=None, dtype=None) -> torch.Tensor:
    return torch.arange(1, latent_dim + 1, device=device, dtype=dtype or torch.get_default_dtype())


def _ones(d, gamma, min_decay, clip_dim, decay_rate, device, dtype):
    return torch.ones(d, device=device, dtype=dtype or torch.get_default_dtype())


def _power(d, gamma, min_decay, clip_dim, decay_rate, device, dtype):
    return _ranks(d, device, dtype).pow(-gamma)


def _power_clamp(d, gamma, min_decay, clip_dim, decay_rate, device, dtype):
    return _ranks(d, device, dtype).pow(-gamma).clamp(min=min_decay)


def _power_clip(d, gamma, min_decay, clip_dim, decay_rate, device, dtype):
    return _ranks(d, device, dtype).clamp(max=clip_dim).pow(-gamma)


def _exponential(d, gamma, min_decay, clip_dim, decay_rate, device, dtype):
    return torch.exp(-decay_rate * (_ranks(d, device, dtype) - 1)).clamp(min=min_decay)


def _linear(d, gamma, min_decay, clip_dim, decay_rate, device, dtype):
    k = _ranks(d, device, dtype)
    slope = decay_rate * (k - 1) / max(d - 1, 1)
    return (1 - slope).clamp(min=min_decay)


@dataclass(frozen=True)
class Variant:
    """One row of the variant table."""

    name: str
    schedule: Callable[..., torch.Tensor]
    decayed_sampling: bool  # posterior used for sampling is N(mu, (sigma*s)^2) rather than N(mu, sigma^2)
    divergence: str         # KL or W2
    uses_gamma: bool
    uses_min_decay: bool
    uses_clip_dim: bool = False
    uses_decay_rate: bool = False
    description: str = ""

    def uses(self, field: str) -> bool:
        """Whether this variant's prior uses a trial field: one of PRIOR_FIELDS by its flag; any
        other field (latent_dim, lr, seed, ...) is used by every variant."""
        return getattr(self, "uses_" + field) if field in PRIOR_FIELDS else True


# The prior's own parameters, each used only by some variants (Variant.uses_<field>): the one
# place that says which variant uses which; the grid, the analysis and the figures derive from it.
PRIOR_FIELDS = ("gamma", "min_decay", "clip_dim", "decay_rate")


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("vae", _ones, False, KL, False, False, description="baseline: N(0, 1) prior"),
        Variant("powerlaw", _power, True, KL, True, False, description="s_k = k^-gamma"),
        Variant("powerlaw_clamp", _power_clamp, True, KL, True, True,
                description="s_k = max(k^-gamma, min_decay) (the method)"),
        Variant("powerlaw_clip", _power_clip, True, KL, True, False, uses_clip_dim=True,
                description="s_k = min(k, clip_dim)^-gamma"),
        Variant("powerlaw_prior_only", _power_clamp, False, KL, True, True,
                description="power-law prior, undecayed sampling"),
        Variant("powerlaw_wae", _power_clamp, True, W2, True, True,
                description="power-law prior, squared W2 instead of KL"),
        Variant("exponential", _exponential, True, KL, False, True, uses_decay_rate=True,
                description="s_k = max(exp(-r (k-1)), min_decay)"),
        Variant("linear", _linear, True, KL, False, True, uses_decay_rate=True,
                description="s_k = max(1 - r (k-1)/(d-1), min_decay)"),
    )
}
VARIANT_NAMES = tuple(VARIANTS)
# The variant every other is compared with: the standard VAE (an N(0, I) prior).
BASELINE = "vae"


def matched_gamma(alpha: float) -> float:
    """The gamma whose prior variance spectrum k^(-2 gamma) matches data of exponent alpha
    (gamma = alpha / 2), to 0.01: what --gamma-from-data adds and the analysis calls "data"."""
    return round(alpha / 2, 2)


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"variant={name!r} is unknown; allowed: {', '.join(VARIANT_NAMES)}") from None


def prior_scale(
    variant: str,
    latent_dim: int,
    gamma: float = 0.0,
    min_decay: Optional[float] = None,
    clip_dim: Optional[int] = None,
    decay_rate: Optional[float] = None,
    device=None,
    dtype=None,
) -> torch.Tensor:
    """The decay vector s (1-D, length latent_dim, s_1 = 1) that scales the prior's std."""
    v = get_variant(variant)
    if latent_dim < 1:
        raise ValueError(f"latent_dim={latent_dim!r} is invalid; allowed: an integer >= 1")
    if v.uses_gamma and gamma < 0:
        raise ValueError(f"gamma={gamma!r} is invalid; allowed: gamma >= 0")
    if v.uses_min_decay and (min_decay is None or not 0 < min_decay <= 1):
        raise ValueError(f"min_decay={min_decay!r} is invalid for variant {variant!r}; allowed: 0 < min_decay <= 1")
    if v.uses_clip_dim and (clip_dim is None or clip_dim < 1):
        raise ValueError(f"clip_dim={clip_dim!r} is invalid for variant {variant!r}; allowed: an integer >= 1")
    if v.uses_decay_rate and (decay_rate is None or decay_rate < 0):
        raise ValueError(f"decay_rate={decay_rate!r} is invalid for variant {variant!r}; allowed: decay_rate >= 0")
    return v.schedule(latent_dim, gamma, min_decay, clip_dim, decay_rate, device, dtype)


# ---------------------------------------------------------------- divergences (per element)
# q = N(m, a^2) (the posterior), p = N(0, b^2) (the prior); every function returns the
# per-element value, shape like m, and `reduce` turns it into a scalar.

def kl_normal(m: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor) -> torch.Tensor:
    """KL(N(m, a^2) || N(0, b^2)) = log(b/a) + (a^2 + m^2) / (2 b^2) - 1/2, from log-stds."""
    return log_b - log_a + (torch.exp(2 * (log_a - log_b)) + m.pow(2) * torch.exp(-2 * log_b)) / 2 - 0.5


def w2_squared(m: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance between N(m, a^2) and N(0, b^2): m^2 + (a - b)^2."""
    return m.pow(2) + (a - b).pow(2)


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_prob(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return -((z - mean) ** 2) * torch.exp(-2 * log_std) / 2 - log_std - _HALF_LOG_2PI


def kl_monte_carlo(z, m, log_a, log_b) -> torch.Tensor:
    """One-sample estimate log q(z) - log p(z) at z ~ q, as Lightning-Bolts' VAE did."""
    return normal_log_prob(z, m, log_a) - normal_log_prob(z, torch.zeros_like(z), log_b)


def reduce(per_element: torch.Tensor, reduction: str) -> torch.Tensor:
    """`mean` over batch and latent elements (Lightning-Bolts), or `sum` over latent dims then
    mean over the batch (fair when latent_dim varies)."""
    if reduction == "mean":
        return per_element.mean()
    if reduction == "sum":
        return per_element.sum(dim=-1).mean()
    raise ValueError(f"kl_reduction={reduction!r} is invalid; allowed: {', '.join(REDUCTIONS)}")


def divergence(
    variant: Variant,
    z: torch.Tensor,
    mu: torch.Tensor,
    log_std_q: torch.Tensor,
    log_s: torch.Tensor,
    estimator: str = "mc",
    reduction: str = "mean",
) -> torch.Tensor:
    """The variant's divergence between the posterior used for sampling q = N(mu, exp(log_std_q)^2)
    and the prior N(0, s^2), reduced to a scalar. For W2 the estimator is ignored (closed form)."""
    log_b = log_s.expand_as(mu)
    if variant.divergence == W2:
        per = w2_squared(mu, torch.exp(log_std_q), torch.exp(log_b))
    elif estimator == "mc":
        per = kl_monte_carlo(z, mu, log_std_q, log_b)
    elif estimator == "analytic":
        per = kl_normal(mu, log_std_q, log_b)
    else:
        raise ValueError(f"kl_estimator={estimator!r} is invalid; allowed: {', '.join(KL_ESTIMATORS)}")
    return reduce(per, reduction)
