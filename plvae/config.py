"""What one trial needs, as a dataclass validated at construction.

Every field has the quick study's default, so ``TrialConfig(variant="powerlaw_clamp", gamma=1.0)``
is a complete trial. Every invalid value raises ``ConfigError`` (a ValueError) with one line naming
the field, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from plvae.priors import KL_ESTIMATORS, REDUCTIONS, VARIANT_NAMES, get_variant

DATASETS = ("natural_patches", "digits", "powerlaw_gaussian", "cifar10", "mnist", "fashion_mnist",
            "stl10", "image_folder")
NETS = ("conv", "resnet18", "mlp")
RESNET18_FEATURES = 512  # ResNet-18's pooled feature width: the only enc_out_dim net="resnet18" has
PRECISIONS = ("32-true", "32", "64-true", "64", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true",
              "transformer-engine")   # Lightning 2's precision names
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Upper bounds: a typo (an extra zero or three) is refused here, not found as an out-of-memory
# trial hours into a study.
MAX_SIZE = {"batch_size": 65536, "max_epochs": 100000, "n_train": 10_000_000, "n_val": 10_000_000,
            "image_size": 1024, "enc_out_dim": 65536, "latent_dim": 65536, "num_workers": 256,
            "hidden_dims": 65536, "warmup_steps": 10_000_000}
BOOL_FIELDS = ("download", "data_rotate", "first_conv", "maxpool1", "channels_last")


class ConfigError(ValueError):
    """A one-line message: field, bad value, what is allowed."""


def _bad(name: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} is invalid; allowed: {allowed}")


def is_finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# The TrialConfig fields a study may sweep, each with the list key that sweeps it in a study's
# configuration (tune/ builds grids from it; analysis.tuned_plan writes evaluation configs with it).
SWEEPS = {"variant": "variants", "gamma": "gammas", "latent_dim": "latent_dims", "min_decay": "min_decays",
          "clip_dim": "clip_dims", "decay_rate": "decay_rates", "lr": "lrs", "kl_coeff": "kl_coeffs",
          "seed": "seeds", "warmup_steps": "warmup_steps", "grad_clip_norm": "grad_clip_norms"}


@dataclass
class TrialConfig:
    # --- the prior variant (docs/design.md's table)
    variant: str = "vae"
    gamma: float = 0.0
    latent_dim: int = 16
    min_decay: float = 1e-3
    clip_dim: Optional[int] = None      # powerlaw_clip only
    decay_rate: Optional[float] = None  # exponential / linear only
    # --- the objective
    kl_coeff: float = 0.1
    kl_estimator: str = "mc"            # "mc" (log q(z) - log p(z), as the seed) or "analytic"
    kl_reduction: str = "mean"          # "mean" over all elements (seed) or "sum" over latent dims
    # --- optimisation
    lr: float = 1e-3
    warmup_steps: int = 0               # linear lr warm-up over this many optimiser steps (0: off)
    grad_clip_norm: Optional[float] = None  # clip the total gradient norm to this (None: off)
    batch_size: int = 64
    max_epochs: int = 4
    seed: int = 0
    # --- data (plvae.data)
    dataset: str = "natural_patches"
    data_dir: Optional[str] = None      # torchvision datasets / image_folder; default ~/.cache/plvae
    download: bool = True               # torchvision datasets: download when missing
    image_size: int = 16                # side of the (square) images the net sees
    channels: int = 1                   # 1 (grey) or 3 (colour)
    n_train: int = 2048                 # generated datasets: training samples (natural_patches, powerlaw_gaussian)
    n_val: int = 512                    # generated datasets: validation samples
    val_fraction: float = 0.2           # file datasets: share of the training split held out
    data_alpha: float = 1.0             # powerlaw_gaussian: exponent of the covariance spectrum
    data_rotate: bool = True            # powerlaw_gaussian: random orthonormal basis (False: diagonal)
    data_seed: int = 0                  # what data is drawn; `seed` is the training seed
    num_workers: int = 0
    # --- network (plvae.nets)
    net: str = "conv"
    enc_out_dim: int = 512              # resnet18 / conv feature width before the mu / log-var heads
    first_conv: bool = False            # resnet18: ImageNet 7x7 stem instead of the CIFAR 3x3 one
    maxpool1: bool = False              # resnet18: max-pool after the stem
    hidden_dims: tuple = (32, 64)       # conv: channels per stride-2 block; mlp: hidden widths
    # --- run
    accelerator: str = "auto"
    precision: str = "32-true"           # Lightning's, e.g. "bf16-mixed" on a GPU
    channels_last: bool = False          # NHWC memory format: 1.6x faster ResNet-18 on an H200 (BENCHMARKS.md)
    extra: dict = field(default_factory=dict)  # free-form tags carried with results (e.g. data alpha)

    def __post_init__(self):
        if isinstance(self.hidden_dims, list):
            self.hidden_dims = tuple(self.hidden_dims)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        if self.variant not in VARIANT_NAMES:
            raise _bad("variant", self.variant, ", ".join(VARIANT_NAMES))
        v = get_variant(self.variant)
        if not is_finite_number(self.gamma) or self.gamma < 0:
            raise _bad("gamma", self.gamma, "a finite number >= 0")
        if not is_int(self.latent_dim) or not 1 <= self.latent_dim <= MAX_SIZE["latent_dim"]:
            raise _bad("latent_dim", self.latent_dim, f"an integer in [1, {MAX_SIZE['latent_dim']}]")
        if not is_finite_number(self.min_decay) or not 0 < self.min_decay <= 1:
            raise _bad("min_decay", self.min_decay, "a number in (0, 1]")
        if v.uses("clip_dim"):
            if self.clip_dim is None:
                raise ConfigError(f"clip_dim=None is invalid for variant {self.variant!r}; allowed: an integer >= 1 (required)")
            if not is_int(self.clip_dim) or self.clip_dim < 1:
                raise _bad("clip_dim", self.clip_dim, "an integer >= 1")
        if v.uses("decay_rate"):
            if self.decay_rate is None:
                raise ConfigError(f"decay_rate=None is invalid for variant {self.variant!r}; allowed: a number >= 0 (required)")
            if not is_finite_number(self.decay_rate) or self.decay_rate < 0:
                raise _bad("decay_rate", self.decay_rate, "a finite number >= 0")
        if not is_finite_number(self.kl_coeff) or self.kl_coeff < 0:
            raise _bad("kl_coeff", self.kl_coeff, "a finite number >= 0")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise _bad("kl_estimator", self.kl_estimator, ", ".join(KL_ESTIMATORS))
        if self.kl_reduction not in REDUCTIONS:
            raise _bad("kl_reduction", self.kl_reduction, ", ".join(REDUCTIONS))
        if not is_finite_number(self.lr) or self.lr <= 0:
            raise _bad("lr", self.lr, "a finite number > 0")
        if not is_int(self.warmup_steps) or not 0 <= self.warmup_steps <= MAX_SIZE["warmup_steps"]:
            raise _bad("warmup_steps", self.warmup_steps, f"an integer in [0, {MAX_SIZE['warmup_steps']}] (0: off)")
        if self.grad_clip_norm is not None and (not is_finite_number(self.grad_clip_norm) or self.grad_clip_norm <= 0):
            raise _bad("grad_clip_norm", self.grad_clip_norm, "a finite number > 0, or null (off)")
        for name in ("batch_size", "max_epochs", "n_train", "n_val", "image_size", "enc_out_dim"):
            value = getattr(self, name)
            if not is_int(value) or not 1 <= value <= MAX_SIZE[name]:
                raise _bad(name, value, f"an integer in [1, {MAX_SIZE[name]}]")
        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise _bad(name, value, "an integer >= 0")
        if not is_int(self.num_workers) or not 0 <= self.num_workers <= MAX_SIZE["num_workers"]:
            raise _bad("num_workers", self.num_workers, f"an integer in [0, {MAX_SIZE['num_workers']}]")
        for name in BOOL_FIELDS:   # "no" is a non-empty string, which Python would count as True
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), "true or false")
        if self.dataset not in DATASETS:
            raise _bad("dataset", self.dataset, ", ".join(DATASETS))
        if self.channels not in (1, 3):
            raise _bad("channels", self.channels, "1 or 3")
        if not is_finite_number(self.val_fraction) or not 0 < self.val_fraction < 1:
            raise _bad("val_fraction", self.val_fraction, "a number in (0, 1)")
        if not is_finite_number(self.data_alpha) or self.data_alpha <= 0:
            raise _bad("data_alpha", self.data_alpha, "a finite number > 0")
        if self.net not in NETS:
            raise _bad("net", self.net, ", ".join(NETS))
        if self.net == "resnet18" and self.enc_out_dim != RESNET18_FEATURES:
            raise ConfigError(f"enc_out_dim={self.enc_out_dim!r} is invalid for net 'resnet18'; allowed: "
                              f"{RESNET18_FEATURES} (ResNet-18's pooled feature width; set --enc-out-dim 512)")
        if not isinstance(self.hidden_dims, tuple) or not self.hidden_dims or not all(
                is_int(h) and 1 <= h <= MAX_SIZE["hidden_dims"] for h in self.hidden_dims):
            raise _bad("hidden_dims", self.hidden_dims,
                       f"a non-empty list of integers in [1, {MAX_SIZE['hidden_dims']}]")
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise _bad("data_dir", self.data_dir, "a directory path")
        if not isinstance(self.accelerator, str) or self.accelerator not in ACCELERATORS:
            raise _bad("accelerator", self.accelerator, ", ".join(ACCELERATORS))
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            raise _bad("precision", self.precision, ", ".join(PRECISIONS))
        if not isinstance(self.extra, dict) or not all(isinstance(k, str) for k in self.extra):
            raise _bad("extra", self.extra, "a mapping of tag names to values")
        if self.dataset == "image_folder" and not self.data_dir:
            raise ConfigError("data_dir=None is invalid for dataset 'image_folder'; allowed: a folder of images")

    # ------------------------------------------------------------------ helpers
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def replace(self, **changes) -> "TrialConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict) -> "TrialConfig":
        """Build from a mapping, refusing unknown keys with a one-line error."""
        known = set(cls.field_names())
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}={d[unknown[0]]!r} is not a trial field; allowed: {', '.join(sorted(known))}")
        return cls(**d)


def paper_config(**overrides) -> TrialConfig:
    """The seed's protocol: Lightning-Bolts' ResNet-18 VAE on CIFAR-10 (latent 256, enc_out 512,
    kl_coeff 0.1, Adam lr 1e-4, MC KL with mean reduction, 5 epochs, min_decay 1e-3, batch 32,
    20% of the training set held out, pixels in [0, 1] unnormalised)."""
    base = dict(
        variant="powerlaw_clamp", dataset="cifar10", net="resnet18", latent_dim=256, enc_out_dim=512,
        kl_coeff=0.1, lr=1e-4, kl_estimator="mc", kl_reduction="mean", max_epochs=5, min_decay=1e-3,
        batch_size=32, image_size=32, channels=3, val_fraction=0.2,
    )
    base.update(overrides)
    return TrialConfig(**base)
