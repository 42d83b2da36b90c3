"""A study as a dataclass: what to sweep, what stays fixed, how to schedule it, where it runs.

Everything here is pure Python (no Ray import), so a whole study is validated - every trial of
the grid built as a ``TrialConfig`` - before Ray starts, and bad input is one line:
``error: <field>=<value> is invalid; allowed: <what>``.

Precedence of settings, lowest first: the dataclass defaults, the preset YAML (``quick`` unless
``--preset``), the user's ``--config`` YAML, then single command-line options.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from plvae import metrics as M
from plvae.config import ConfigError, TrialConfig, is_finite_number, is_int
from plvae.priors import VARIANT_NAMES, VARIANTS, W2

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "quick"
SEARCHES = ("grid", "optuna")
SCHEDULERS = ("asha", "fifo")

# What a study may minimise: the per-stage losses (ASHA and Optuna run with mode="min").
# Diagnostics such as active units or `diverged` are reported but are no objective.
STUDY_METRICS = tuple(m for m in (M.metric(stage, name) for stage in (M.VAL, M.TRAIN)
                                  for name in (M.RECON_MU, M.LOSS, M.RECON, M.DIVERGENCE))
                      if m in M.EPOCH_METRICS)

# Swept TrialConfig field -> the StudyConfig list holding its values, and whether a variant uses it
# (None: every variant does). The grid gives a field a variant does not use its TrialConfig default.
SWEEPS = {
    "variant": ("variants", None),
    "gamma": ("gammas", "uses_gamma"),
    "latent_dim": ("latent_dims", None),
    "min_decay": ("min_decays", "uses_min_decay"),
    "clip_dim": ("clip_dims", "uses_clip_dim"),
    "decay_rate": ("decay_rates", "uses_decay_rate"),
    "lr": ("lrs", None),
    "kl_coeff": ("kl_coeffs", None),
    "seed": ("seeds", None),
}
SWEEP_LISTS = tuple(lst for lst, _ in SWEEPS.values())

# A gamma given relative to the data's measured exponent (with gamma_from_data): "alpha/2",
# "alpha", "1.5*alpha", "0.25*alpha". Resolved to numbers once alpha is measured.
_ALPHA_GAMMA = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?alpha\s*(?:/\s*(\d+(?:\.\d*)?))?\s*$")
# A `primary` entry: one declared comparison (Holm corrects over these only; analysis.compare).
PRIMARY_QUANTITIES = ("final", "epochs_to_target", "diverged", "distortion_gap")
PRIMARY_KEYS = ("quantity", "variant", "where", "per")
INT_SWEEPS = {"latent_dim", "clip_dim", "seed"}
TRIAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig)
                  if f.default is not dataclasses.MISSING}


class StudyError(ConfigError):
    """A one-line message naming the field, the bad value and what is allowed."""


def _bad(name: str, value: Any, allowed: str) -> StudyError:
    return StudyError(f"{name}={value!r} is invalid; allowed: {allowed}")


def is_uri(path: str) -> bool:
    """s3://, gs://, hdfs://, ... - storage every node of a cluster can reach by construction."""
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", path or "")) and not path.startswith("file://")


@dataclass
class StudyConfig:
    # --- the sweep (grid search: the Cartesian product, without meaningless duplicates)
    variants: list = field(default_factory=lambda: list(VARIANT_NAMES))
    gammas: list = field(default_factory=lambda: [0.5, 1.0])
    latent_dims: list = field(default_factory=lambda: [16])
    min_decays: list = field(default_factory=lambda: [1e-3])
    clip_dims: list = field(default_factory=lambda: [4])          # powerlaw_clip only
    decay_rates: list = field(default_factory=lambda: [0.1])      # exponential / linear only
    lrs: list = field(default_factory=lambda: [1e-3])
    kl_coeffs: list = field(default_factory=lambda: [0.1])        # beta: a sweep traces the rate-distortion frontier
    seeds: list = field(default_factory=lambda: [0])
    gamma_from_data: bool = False   # add gamma = alpha/2, alpha measured on the training split
    # Several grids in one study: each entry overrides some sweep lists above (e.g. every variant at
    # latent 64, and only vae / powerlaw_clamp at latent 16 and 256); the study runs their union.
    grids: list = field(default_factory=list)
    # The declared primary comparisons (analysis corrects for multiplicity over these only):
    # [{quantity: final|epochs_to_target|diverged|distortion_gap, variant: NAME,
    #   where: {field: value, gamma: data (the data-matched gamma), lr: max}, per: [field, ...]}]
    primary: list = field(default_factory=list)
    # --- every other TrialConfig field, fixed for the whole study (epochs are trial.max_epochs)
    trial: dict = field(default_factory=dict)
    # --- search and scheduling
    metric: str = M.DEFAULT_STUDY_METRIC
    search: str = "grid"
    num_samples: Optional[int] = None   # optuna: trials to sample (default 16); grid: not used
    search_seed: int = 0                # optuna's sampler seed
    scheduler: str = "asha"
    grace_period: int = 1               # ASHA: epochs before a trial can be stopped
    reduction_factor: float = 2
    # --- resources
    cpus_per_trial: int = 1
    gpus_per_trial: Optional[float] = None   # None: CPU-only trials
    max_concurrent: Optional[int] = None
    reuse_actors: bool = True                # a worker runs trial after trial: torch imported once
    num_cpus: Optional[int] = None           # local Ray only: CPUs it may use (default: all)
    num_gpus: Optional[float] = None         # local Ray only: GPUs it declares (default: detected)
    # --- where it runs and where results go
    address: Optional[str] = None            # None: a local Ray; "auto" or HOST:PORT: a cluster
    storage_path: str = "results"            # local paths are made absolute (relative to the cwd)
    shared_storage: bool = False             # the local storage_path is shared by all nodes (NFS)
    study_name: Optional[str] = None         # default: <preset>_<date>-<time>
    dashboard: bool = True
    # --- fault tolerance
    max_failures: int = 2
    keep_checkpoints: int = 2
    verbose: int = 1
    # --- provenance (set by the loader)
    preset: Optional[str] = None
    config_file: Optional[str] = None

    # ------------------------------------------------------------------ derived
    @property
    def max_epochs(self) -> int:
        return self.trial.get("max_epochs", TRIAL_DEFAULTS["max_epochs"])

    @property
    def experiment_path(self) -> str:
        return join_storage(self.storage_path, self.study_name)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    # ------------------------------------------------------------------ validation
    def validate(self) -> "StudyConfig":
        """Check every field, then build every trial of the grid (TrialConfig validates each)."""
        if not isinstance(self.trial, dict):
            raise _bad("trial", self.trial, "a mapping of TrialConfig fields")
        for name in self.trial:
            if name in SWEEPS:
                raise StudyError(f"trial.{name}={self.trial[name]!r} is swept; allowed: set it through "
                                 f"{SWEEPS[name][0]} (a list)")
        try:
            TrialConfig.from_dict(self.trial)
        except ConfigError as e:
            raise StudyError(f"trial: {e}") from None
        self._validate_grids()
        self._validate_sweeps()
        self._validate_primary()
        self._validate_options()
        n = len(self.trial_dicts()) if self.search == "grid" else self.num_samples
        if n < 1:
            raise StudyError(f"grid=[] is invalid; allowed: at least one trial (variants={self.variants!r})")
        return self

    def _validate_grids(self) -> None:
        if not isinstance(self.grids, list):
            raise _bad("grids", self.grids, "a list of mappings of sweep lists (" + ", ".join(SWEEP_LISTS) + ")")
        if self.grids and self.search != "grid":
            raise _bad("grids", f"[{len(self.grids)} grids]", "only with search 'grid'")
        for i, g in enumerate(self.grids):
            if not isinstance(g, dict):
                raise _bad(f"grids[{i}]", g, "a mapping of sweep lists ({} is the top-level grid): "
                           + ", ".join(SWEEP_LISTS))
            for key in g:
                if key not in SWEEP_LISTS:
                    raise _bad(f"grids[{i}].{key}", g[key], "a sweep list: " + ", ".join(SWEEP_LISTS))
            sub = self._grid(i)
            sub._validate_sweeps(f"grids[{i}].")
            self.grids[i] = {k: getattr(sub, k) for k in g}

    def _grid(self, i: int) -> "StudyConfig":
        """Grid i of `grids` as a one-grid StudyConfig (its lists over the top-level ones)."""
        sub = dataclasses.replace(self, grids=[], primary=[])
        for key, value in self.grids[i].items():
            setattr(sub, key, list(value) if isinstance(value, list) else value)
        return sub

    def _validate_sweeps(self, where: str = "") -> None:
        if self.variants == "all" or self.variants == ["all"]:
            self.variants = list(VARIANT_NAMES)
        for tfield, (lst, uses) in SWEEPS.items():
            values = getattr(self, lst)
            if not isinstance(values, list):
                raise _bad(where + lst, values, "a list")
            needed = uses is None or any(getattr(VARIANTS[v], uses) for v in self.variants if v in VARIANTS)
            if not values and needed:
                raise _bad(where + lst, values, f"a non-empty list of {tfield} values (empty grid)")
            seen = []
            for value in values:
                if tfield == "variant":
                    if not isinstance(value, str) or value not in VARIANTS:
                        raise _bad(where + "variant", value, ", ".join(VARIANT_NAMES) + " (or 'all')")
                elif tfield == "gamma" and isinstance(value, str):
                    if not _ALPHA_GAMMA.match(value) or not self.gamma_from_data:
                        raise _bad(where + "gamma", value, "a number >= 0, or with gamma_from_data a multiple of the "
                                                          "measured alpha ('alpha/2', 'alpha', '1.5*alpha')")
                else:
                    if tfield not in INT_SWEEPS and is_int(value):
                        value = float(value)
                    _probe_trial(self.trial, tfield, value, where)
                if value not in seen:
                    seen.append(value)
            setattr(self, lst, seen)

    def _validate_primary(self) -> None:
        allowed = ("a list of {quantity: " + "|".join(PRIMARY_QUANTITIES) + ", variant: NAME, where: {field: value}, "
                   "per: [field, ...]}")
        if not isinstance(self.primary, list):
            raise _bad("primary", self.primary, allowed)
        for i, entry in enumerate(self.primary):
            if not isinstance(entry, dict) or set(entry) - set(PRIMARY_KEYS) or "quantity" not in entry \
                    or "variant" not in entry:
                raise _bad(f"primary[{i}]", entry, allowed)
            if entry["quantity"] not in PRIMARY_QUANTITIES:
                raise _bad(f"primary[{i}].quantity", entry["quantity"], ", ".join(PRIMARY_QUANTITIES))
            if entry["variant"] not in VARIANTS:
                raise _bad(f"primary[{i}].variant", entry["variant"], ", ".join(VARIANT_NAMES))
            where, per = entry.get("where", {}), entry.get("per", [])
            if not isinstance(where, dict) or any(k not in TrialConfig.field_names() for k in where):
                raise _bad(f"primary[{i}].where", where, "a mapping of trial fields to values")
            if not isinstance(per, list) or any(k not in TrialConfig.field_names() for k in per):
                raise _bad(f"primary[{i}].per", per, "a list of trial fields")

    def _validate_options(self) -> None:
        if self.metric not in STUDY_METRICS:
            raise _bad("metric", self.metric, ", ".join(STUDY_METRICS))
        if self.search not in SEARCHES:
            raise _bad("search", self.search, ", ".join(SEARCHES))
        if self.scheduler not in SCHEDULERS:
            raise _bad("scheduler", self.scheduler, ", ".join(SCHEDULERS))
        if self.search == "grid":
            if self.num_samples not in (None, 1):
                raise _bad("num_samples", self.num_samples, "only with search 'optuna' (a grid repeats through seeds)")
            self.num_samples = 1
        else:
            if self.num_samples is None:
                self.num_samples = 16
            if not is_int(self.num_samples) or self.num_samples < 1:
                raise _bad("num_samples", self.num_samples, "an integer >= 1")
        if not is_int(self.search_seed) or self.search_seed < 0:
            raise _bad("search_seed", self.search_seed, "an integer >= 0")
        # The grace period only means something to ASHA: a FIFO study of 1 epoch must not fail
        # on the preset's grace period.
        if not is_int(self.grace_period) or self.grace_period < 1 or (
                self.scheduler == "asha" and self.grace_period > self.max_epochs):
            raise _bad("grace_period", self.grace_period, f"an integer in [1, max_epochs={self.max_epochs}]")
        if not is_finite_number(self.reduction_factor) or self.reduction_factor <= 1:
            raise _bad("reduction_factor", self.reduction_factor, "a number > 1")
        if not is_int(self.cpus_per_trial) or self.cpus_per_trial < 1:
            raise _bad("cpus_per_trial", self.cpus_per_trial, "an integer >= 1 (torch's threads per trial)")
        g = self.gpus_per_trial
        if g is not None:
            if is_finite_number(g) and float(g).is_integer() and g >= 1:
                self.gpus_per_trial = int(g)
            elif not (is_finite_number(g) and 0 < g <= 1):
                raise _bad("gpus_per_trial", g, "a fraction in (0, 1] or an integer >= 1 "
                                                "(leave it out, or 'none', for CPU-only trials)")
        if self.max_concurrent is not None and (not is_int(self.max_concurrent) or self.max_concurrent < 1):
            raise _bad("max_concurrent", self.max_concurrent, "an integer >= 1")
        if self.num_cpus is not None and (not is_int(self.num_cpus) or self.num_cpus < 1):
            raise _bad("num_cpus", self.num_cpus, "an integer >= 1")
        if self.num_gpus is not None and (not is_finite_number(self.num_gpus) or self.num_gpus < 0):
            raise _bad("num_gpus", self.num_gpus, "a number >= 0")
        if self.address is not None:
            if not isinstance(self.address, str) or not (
                    self.address == "auto" or re.fullmatch(r"[A-Za-z0-9._\-\[\]:]+:\d{1,5}", self.address)):
                raise _bad("address", self.address, "'auto' or HOST:PORT of a running Ray cluster")
            for local_only in ("num_cpus", "num_gpus"):
                if getattr(self, local_only) is not None:
                    raise _bad(local_only, getattr(self, local_only),
                               "only for a local Ray (without --address); a cluster has its own resources")
        if not isinstance(self.storage_path, str) or not self.storage_path.strip():
            raise _bad("storage_path", self.storage_path, "a directory or a URI such as s3://bucket/path")
        if not is_uri(self.storage_path):
            self.storage_path = os.path.abspath(os.path.expanduser(self.storage_path.removeprefix("file://")))
        if self.study_name is None:
            self.study_name = f"{self.preset or 'study'}_{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
        if not isinstance(self.study_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", self.study_name):
            raise _bad("study_name", self.study_name, "letters, digits, '.', '_', '-' (a directory name)")
        for flag in ("gamma_from_data", "shared_storage", "dashboard", "reuse_actors"):
            if not isinstance(getattr(self, flag), bool):
                raise _bad(flag, getattr(self, flag), "true or false")
        if not is_int(self.max_failures) or self.max_failures < 0:
            raise _bad("max_failures", self.max_failures, "an integer >= 0")
        if not is_int(self.keep_checkpoints) or self.keep_checkpoints < 1:
            raise _bad("keep_checkpoints", self.keep_checkpoints, "an integer >= 1")
        if not is_int(self.verbose) or not 0 <= self.verbose <= 3:
            raise _bad("verbose", self.verbose, "0, 1, 2 or 3")

    # ------------------------------------------------------------------ the grid
    def trial_dicts(self, extra: Optional[dict] = None) -> list[dict]:
        """Every trial of the grid (or of each of `grids`) as a full, flat TrialConfig dict, each
        distinct config once.

        A field a variant does not use (gamma for `vae`, min_decay for `powerlaw`, ...) keeps its
        TrialConfig default instead of multiplying the grid with identical trials. Gammas relative
        to alpha resolve with the measured alpha in ``extra`` (before it is measured, alpha = 1
        stands in, which is enough to validate the grid)."""
        out, seen = [], set()
        for grid in ([self._grid(i) for i in range(len(self.grids))] if self.grids else [self]):
            grid._grid_trials(extra, out, seen)
        return out

    def _grid_trials(self, extra: Optional[dict], out: list, seen: set) -> None:
        alpha = (extra or {}).get("data_alpha", 1.0)
        gammas = [resolve_gamma(g, alpha) for g in self.gammas]
        for variant in self.variants:
            v = VARIANTS[variant]
            axes = []
            for tfield, (lst, uses) in SWEEPS.items():
                if tfield == "variant":
                    axes.append([variant])
                elif tfield == "gamma" and v.uses_gamma:
                    axes.append(gammas)
                elif uses is None or getattr(v, uses):
                    axes.append(getattr(self, lst))
                else:
                    axes.append([TRIAL_DEFAULTS[tfield]])
            for values in itertools.product(*axes):
                swept = dict(zip(SWEEPS, values))
                tags = {**self.trial.get("extra", {}), **(extra or {})}
                d = TrialConfig.from_dict({**self.trial, **swept, "extra": tags}).to_dict()
                key = json.dumps(d, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    out.append(d)

    def all_variants(self) -> list[str]:
        """Every variant the study runs (over all of `grids`)."""
        lists = [self.variants] + [g["variants"] for g in self.grids if "variants" in g]
        return list(dict.fromkeys(v for lst in lists for v in lst))

    def objective_note(self) -> Optional[str]:
        """One line when W2 trials share a study with KL trials: their val_loss is their own objective."""
        kinds = {VARIANTS[v].divergence for v in self.all_variants()}
        if len(kinds) < 2:
            return None
        w2 = ", ".join(v for v in self.all_variants() if VARIANTS[v].divergence == W2)
        return (f"note: {w2} minimise(s) squared W2, not KL: those trials are scheduled on their own objective "
                f"({self.metric}), which is not comparable with the KL variants'; the analysis compares them in "
                f"the rate-distortion plane only")

    def base_trial(self) -> TrialConfig:
        """The fixed fields with the first value of each sweep: what the data and resources depend on."""
        return TrialConfig.from_dict(self.trial_dicts()[0]) if self.search == "grid" else TrialConfig.from_dict(
            {**self.trial, "variant": self.variants[0]})

    def resources(self) -> dict:
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial or 0}


class OptunaSpace:
    """Optuna's define-by-run space: variant categorical, gamma uniform, min_decay log-uniform,
    each asked only of the variants that use it (the others keep their TrialConfig default), so
    every suggestion is a full, consistent TrialConfig dict. A class, not a closure: the searcher
    is pickled with the experiment state for --resume."""

    def __init__(self, cfg: dict, extra: dict):
        self.cfg, self.extra = cfg, extra

    def __call__(self, trial) -> dict:
        c = self.cfg
        fixed = {}

        def ask(tfield, suggest):
            values = c[SWEEPS[tfield][0]]
            if len(values) > 1:
                suggest(tfield, values)
            else:
                fixed[tfield] = values[0]

        ask("variant", lambda n, v: trial.suggest_categorical(n, v))
        variant = VARIANTS[trial.params.get("variant", fixed.get("variant"))]
        for tfield, (_, uses) in SWEEPS.items():
            if tfield == "variant":
                continue
            if uses is not None and not getattr(variant, uses):
                fixed[tfield] = TRIAL_DEFAULTS[tfield]
            elif tfield == "gamma":
                ask(tfield, lambda n, v: trial.suggest_float(n, min(v), max(v)))
            elif tfield == "min_decay":
                ask(tfield, lambda n, v: trial.suggest_float(n, min(v), max(v), log=True))
            else:
                ask(tfield, lambda n, v: trial.suggest_categorical(n, v))
        tags = {**c["trial"].get("extra", {}), **self.extra}
        # The whole TrialConfig dict (validated), sampled values included: Ray merges it over
        # the sampled values, so params.json is a full, flat trial config, as for the grid.
        return TrialConfig.from_dict({**c["trial"], **trial.params, **fixed, "extra": tags}).to_dict()


def resolve_gamma(value, alpha: float) -> float:
    """A gamma entry as a number: itself, or a multiple of alpha ('alpha/2' -> round(alpha/2, 2))."""
    if not isinstance(value, str):
        return value
    m = _ALPHA_GAMMA.match(value)
    return round(float(m.group(1) or 1) * alpha / float(m.group(2) or 1), 2)


def _probe_trial(fixed: dict, tfield: str, value, where: str = "") -> None:
    """Validate one sweep value by building a TrialConfig that uses it (on a variant that needs it)."""
    uses = SWEEPS[tfield][1]
    probe = {**fixed, tfield: value}
    if uses is not None:
        variant = next(v for v in VARIANTS.values() if getattr(v, uses))
        probe["variant"] = variant.name
        if variant.uses_clip_dim and tfield != "clip_dim":
            probe["clip_dim"] = 1
        if variant.uses_decay_rate and tfield != "decay_rate":
            probe["decay_rate"] = 0.0
    try:
        TrialConfig.from_dict(probe)
    except ConfigError as e:
        raise StudyError(where + str(e)) from None


def join_storage(storage_path: str, name: str) -> str:
    return storage_path.rstrip("/") + "/" + name if is_uri(storage_path) else os.path.join(storage_path, name)


# ---------------------------------------------------------------------------- data
def data_key_name(key: tuple) -> str:
    """A plvae.data.data_key as a JSON-able string: 'dataset=natural_patches,image_size=16,...'."""
    return ",".join(f"{k}={v}" for k, v in key)


def load_study_data(cfg: StudyConfig) -> dict:
    """Each distinct dataset of the study, loaded once by the driver: data_key -> DataSplits
    (shared with the trials through Ray's object store, never rebuilt per trial)."""
    from plvae.data import data_key, load_data

    trials = cfg.trial_dicts() if cfg.search == "grid" else [cfg.base_trial().to_dict()]
    data = {}
    for d in trials:
        trial = TrialConfig.from_dict(d)
        key = data_key(trial)
        if key not in data:
            data[key] = load_data(trial)
    return data


def data_gamma(alpha: float) -> float:
    """The prior whose variance spectrum k^(-2 gamma) matches data of exponent alpha, to 0.01."""
    return round(alpha / 2, 2)


def measure_alphas(data: dict) -> dict:
    """{data_key_name: alpha}, the power-law exponent of each training split's covariance
    spectrum (plvae.spectrum's eigenspectrum and fit_power_law)."""
    from plvae.spectrum import eigenspectrum, fit_power_law

    return {data_key_name(k): float(fit_power_law(eigenspectrum(v.train)).alpha) for k, v in data.items()}


def add_data_gamma(cfg: StudyConfig, alphas: dict) -> dict:
    """--gamma-from-data: add gamma = alpha/2 to cfg.gammas (optuna: widens gamma's range to
    include it); return the trials' extra tags {"data_alpha", "data_gamma"}."""
    alpha = next(iter(alphas.values()))  # the data fields are fixed in a study: one dataset
    gamma = data_gamma(alpha)
    if gamma < 0:
        raise StudyError(f"gamma_from_data: measured alpha={alpha:.3f} gives gamma={gamma} < 0; allowed: "
                         "data whose spectrum decays (alpha > 0)")
    cfg.gammas = sorted({resolve_gamma(g, alpha) for g in cfg.gammas} | {gamma})
    for g in cfg.grids:
        if "gammas" in g:
            g["gammas"] = sorted({resolve_gamma(x, alpha) for x in g["gammas"]} | {gamma})
    return {"data_alpha": alpha, "data_gamma": gamma}


def load_and_measure(cfg: StudyConfig, measure: bool) -> tuple[dict, dict]:
    """(data_key -> DataSplits, {data_key_name: alpha} or {}): what a study loads once. The
    driver runs it as a one-off Ray task (tune/study_runner.py), so torch's data stack and
    Lightning stay out of the driver process."""
    data = load_study_data(cfg)
    return data, (measure_alphas(data) if measure else {})


# ---------------------------------------------------------------------------- study.json
STUDY_FILE = "study.json"


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_study_json(cfg: StudyConfig, record: dict) -> None:
    """study.json beside the trial directories (a cloud URI goes through pyarrow's filesystem)."""
    text = json.dumps(record, indent=2, default=str)
    path = join_storage(cfg.experiment_path, STUDY_FILE)
    if is_uri(path):
        import pyarrow.fs

        fs, fs_path = pyarrow.fs.FileSystem.from_uri(path)
        fs.create_dir(fs_path.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(fs_path) as f:
            f.write(text.encode())
        return
    os.makedirs(cfg.experiment_path, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, path)


def read_study_json(experiment_path: str) -> Optional[dict]:
    path = join_storage(experiment_path, STUDY_FILE)
    if is_uri(path):
        import pyarrow.fs

        try:
            fs, fs_path = pyarrow.fs.FileSystem.from_uri(path)
            with fs.open_input_stream(fs_path) as f:
                return json.loads(f.read().decode())
        except (OSError, ValueError):
            return None
    return _read_json(path)


def latest_unfinished(storage_path: str) -> Optional[str]:
    """The most recently started study under storage_path that did not finish (for --resume)."""
    if is_uri(storage_path) or not os.path.isdir(storage_path):
        return None
    found = []
    for name in os.listdir(storage_path):
        rec = _read_json(os.path.join(storage_path, name, STUDY_FILE))
        if rec and rec.get("status") != "finished":
            found.append((rec.get("started") or "", name))
    return max(found)[1] if found else None


def prepare(cfg: StudyConfig, resume: bool) -> tuple[StudyConfig, Optional[dict]]:
    """Resolve which study to run before Ray starts: a new one (its directory must not exist),
    or the one --resume continues (its study.json gives the sweep; connection options are this
    call's). Returns the config to run and the prior study.json (None for a new study)."""
    if resume:
        prior = read_study_json(cfg.experiment_path)
        if prior is None:
            raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: no {STUDY_FILE} under "
                             f"{cfg.experiment_path}; allowed: a study started there")
        # The study's own sweep and trial settings; where and how to connect come from this call.
        stored = StudyConfig(**{k: v for k, v in prior["study_config"].items()})
        for name in ("address", "storage_path", "shared_storage", "num_cpus", "num_gpus", "dashboard", "verbose"):
            setattr(stored, name, getattr(cfg, name))
        stored.study_name = cfg.study_name
        return stored.validate(), prior
    if not is_uri(cfg.experiment_path) and os.path.exists(cfg.experiment_path):
        raise StudyError(f"study_name={cfg.study_name!r} is invalid: {cfg.experiment_path} exists; allowed: a new "
                         f"--study-name, or --resume to continue that study")
    return cfg, None


# ---------------------------------------------------------------------------- parsing values
def parse_values(name: str, text: str, kind=float) -> list:
    """'0,0.5,1' or a range 'start:stop:step' (stop excluded, like numpy.arange; '0:2:0.1' is
    0.0, 0.1, ..., 1.9) or a mix '0:1:0.25,1.5'. kind is float, int or str."""
    if not isinstance(text, str):
        return text
    allowed = ("comma-separated numbers or ranges start:stop:step (stop excluded, step > 0)"
               if kind is not str else "comma-separated names")
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise _bad(name, text, allowed)
        if kind is str or (name == "gammas" and _ALPHA_GAMMA.match(part)):
            out.append(part)
            continue
        if ":" in part:
            bits = part.split(":")
            if len(bits) != 3:
                raise _bad(name, text, allowed)
            try:
                start, stop, step = (kind(b) for b in bits)
            except ValueError:
                raise _bad(name, text, allowed) from None
            if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)) or step <= 0:
                raise _bad(name, text, allowed)
            n = math.ceil((stop - start) / step - 1e-9)
            if n < 1:
                raise _bad(name, text, allowed + f"; {part!r} is empty")
            out.extend(kind(round(start + i * step, 10)) for i in range(n))
        else:
            try:
                out.append(kind(part))
            except ValueError:
                raise _bad(name, text, allowed + (" (integers)" if kind is int else "")) from None
    return out


def _parse_scalar(name: str, text: str, kind):
    if kind is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise _bad(name, text, "true or false")
    try:
        value = kind(text)
    except ValueError:
        raise _bad(name, text, {int: "an integer", float: "a number"}.get(kind, kind.__name__)) from None
    if kind is float and value.is_integer() and "." not in text and "e" not in text.lower():
        value = int(value)
    return value


# ---------------------------------------------------------------------------- presets and files
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_yaml(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise _bad(what, str(path), f"a readable YAML file ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise _bad(what, str(path), f"valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise _bad(what, str(path), "a YAML mapping of study fields")
    return data


def apply_mapping(cfg: StudyConfig, data: dict, source: str) -> None:
    """Set StudyConfig fields from a YAML mapping; `trial` entries update the fixed trial fields."""
    known = [f.name for f in dataclasses.fields(StudyConfig) if f.name not in ("preset", "config_file")]
    for key, value in data.items():
        if key == "epochs":  # a convenience spelling of trial.max_epochs
            cfg.trial = {**cfg.trial, "max_epochs": value}
        elif key == "trial":
            if not isinstance(value, dict):
                raise _bad(f"{source}: trial", value, "a mapping of TrialConfig fields")
            unknown = sorted(set(value) - set(TrialConfig.field_names()))
            if unknown:
                raise StudyError(f"{source}: trial.{unknown[0]}={value[unknown[0]]!r} is not a trial field; "
                                 f"allowed: {', '.join(TrialConfig.field_names())}")
            cfg.trial = {**cfg.trial, **value}
        elif key in known:
            if key in (SWEEPS[t][0] for t in SWEEPS) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                tfield = next(t for t in SWEEPS if SWEEPS[t][0] == key)
                kind = str if tfield == "variant" else (int if tfield in INT_SWEEPS else float)
                value = parse_values(key, str(value), kind) if not (key == "variants" and value == "all") else "all"
            setattr(cfg, key, value)
        else:
            raise StudyError(f"{source}: {key}={value!r} is not a study field; allowed: "
                             f"{', '.join(sorted(known + ['epochs']))}")


def load_preset(name: str) -> StudyConfig:
    names = preset_names()
    if name not in names:
        raise _bad("preset", name, ", ".join(names))
    cfg = StudyConfig(preset=name)
    apply_mapping(cfg, read_yaml(str(PRESETS_DIR / f"{name}.yaml"), "preset"), f"preset {name}")
    return cfg


# ---------------------------------------------------------------------------- the command line
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit status 2."""

    def error(self, message):
        raise StudyError(message)


# option -> (StudyConfig field or "trial.<field>", value kind). Sweep lists are parsed by parse_values.
OPTIONS = {
    "--variants": ("variants", str), "--gammas": ("gammas", float), "--latent-dims": ("latent_dims", int),
    "--min-decays": ("min_decays", float), "--clip-dims": ("clip_dims", int),
    "--decay-rates": ("decay_rates", float), "--lrs": ("lrs", float), "--seeds": ("seeds", int),
    "--epochs": ("trial.max_epochs", int), "--dataset": ("trial.dataset", str), "--net": ("trial.net", str),
    "--batch-size": ("trial.batch_size", int), "--image-size": ("trial.image_size", int),
    "--channels": ("trial.channels", int), "--n-train": ("trial.n_train", int), "--n-val": ("trial.n_val", int),
    "--kl-coeffs": ("kl_coeffs", float), "--kl-estimator": ("trial.kl_estimator", str),
    "--kl-reduction": ("trial.kl_reduction", str), "--enc-out-dim": ("trial.enc_out_dim", int),
    "--hidden-dims": ("trial.hidden_dims", "intlist"), "--data-dir": ("trial.data_dir", str),
    "--data-alpha": ("trial.data_alpha", float), "--data-seed": ("trial.data_seed", int),
    "--metric": ("metric", str), "--search": ("search", str), "--num-samples": ("num_samples", int),
    "--search-seed": ("search_seed", int), "--scheduler": ("scheduler", str),
    "--grace-period": ("grace_period", int), "--reduction-factor": ("reduction_factor", float),
    "--cpus-per-trial": ("cpus_per_trial", float), "--gpus-per-trial": ("gpus_per_trial", float),
    "--max-concurrent": ("max_concurrent", int), "--num-cpus": ("num_cpus", int),
    "--num-gpus": ("num_gpus", float), "--address": ("address", str), "--storage-path": ("storage_path", str),
    "--study-name": ("study_name", str), "--max-failures": ("max_failures", int),
    "--keep-checkpoints": ("keep_checkpoints", int), "--verbose": ("verbose", int),
}
FLAGS = {"--gamma-from-data": ("gamma_from_data", True), "--shared-storage": ("shared_storage", True),
         "--no-dashboard": ("dashboard", False), "--no-reuse-actors": ("reuse_actors", False)}

_HELP = {
    "--variants": f"comma-separated, or 'all' ({', '.join(VARIANT_NAMES)})",
    "--gammas": "list '0,0.5,1' or range start:stop:step, stop excluded ('0:2:0.1' = 0.0..1.9)",
    "--epochs": "epochs per trial (TrialConfig.max_epochs; ASHA's max_t)",
    "--kl-coeffs": "beta values (list or range): sweep them to trace the baseline's rate-distortion frontier",
    "--metric": f"what ASHA and Optuna minimise: {', '.join(STUDY_METRICS)}",
    "--search": "grid (deduplicated Cartesian product) or optuna",
    "--num-samples": "optuna: number of trials (default 16)",
    "--scheduler": "asha (early stopping, default) or fifo (every trial to the end)",
    "--cpus-per-trial": "an integer >= 1; also torch's thread count in the trial",
    "--gpus-per-trial": "a fraction in (0, 1] (Ray packs trials on one GPU) or an integer; 'none' or "
                        "omitted: CPU-only trials",
    "--address": "join a running cluster: auto or HOST:PORT (default: start a local Ray)",
    "--storage-path": "results root (default ./results); on a multi-node cluster a URI or shared path",
    "--study-name": "results go to <storage-path>/<study-name> (default <preset>_<date>-<time>)",
    "--num-cpus": "local Ray only: CPUs it may use", "--num-gpus": "local Ray only: GPUs it declares",
}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="run_study.py", description="Run a Ray Tune study of power-law-prior VAEs.")
    p.add_argument("--preset", default=None, help=f"a preset in tune/presets ({', '.join(preset_names())}; "
                                                  f"default {DEFAULT_PRESET})")
    p.add_argument("--config", default=None, help="a YAML file of study fields, applied over the preset")
    for opt, (dest, _) in OPTIONS.items():
        p.add_argument(opt, dest=dest.replace(".", "__"), default=None, help=_HELP.get(opt),
                       metavar=opt.lstrip("-").upper().replace("-", "_"))
    for opt, (dest, _) in FLAGS.items():
        p.add_argument(opt, dest=dest, action="store_true", default=None)
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                   help="any TrialConfig field, e.g. --set kl_estimator=analytic (value parsed as YAML)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted study (--study-name, "
                                                         "or the latest unfinished one under --storage-path)")
    p.add_argument("--dry-run", action="store_true", help="print the trials and exit without starting Ray")
    return p


def config_from_args(argv: Optional[Sequence[str]] = None) -> tuple[StudyConfig, argparse.Namespace]:
    """Parse the command line into a validated StudyConfig (raises StudyError)."""
    args = build_parser().parse_args(argv)
    cfg = load_preset(args.preset or DEFAULT_PRESET)
    if args.config:
        apply_mapping(cfg, read_yaml(args.config, "config"), f"config {args.config}")
        cfg.config_file = os.path.abspath(args.config)
    for opt, (dest, kind) in OPTIONS.items():
        text = getattr(args, dest.replace(".", "__"))
        if text is None:
            continue
        name = dest.split(".")[-1]
        if dest.startswith("trial."):
            if kind == "intlist":
                value = parse_values(name, text, int)
            else:
                value = text if kind is str else _parse_scalar(name, text, kind)
            cfg.trial = {**cfg.trial, name: value}
        elif name in (SWEEPS[t][0] for t in SWEEPS):
            value = "all" if (name == "variants" and text == "all") else parse_values(name, text, kind)
            setattr(cfg, name, value)
        elif name == "gpus_per_trial" and text.lower() == "none":
            cfg.gpus_per_trial = None  # CPU-only trials, over a preset that asks for GPUs
        else:
            setattr(cfg, name, text if kind is str else _parse_scalar(name, text, kind))
    for opt, (dest, value) in FLAGS.items():
        if getattr(args, dest) is not None:
            setattr(cfg, dest, value)
    for item in args.sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise _bad("set", item, "FIELD=VALUE with FIELD a TrialConfig field")
        if key not in TrialConfig.field_names():
            raise StudyError(f"set: {key}={text!r} is not a trial field; allowed: {', '.join(TrialConfig.field_names())}")
        if key in SWEEPS:
            raise StudyError(f"set: {key}={text!r} is swept; allowed: --{SWEEPS[key][0].replace('_', '-')}")
        cfg.trial = {**cfg.trial, key: yaml.safe_load(text)}
    args.explicit_name = cfg.study_name is not None
    cfg.validate()
    return cfg, args


def describe(cfg: StudyConfig, trials: list[dict], first: int = 5) -> str:
    """The dry-run text: how many trials, resources each, the fixed fields and the first configs."""
    swept = [t for t in SWEEPS]
    n = len(trials) if cfg.search == "grid" else cfg.num_samples
    res = cfg.resources()
    lines = [
        f"study {cfg.study_name}: {n} trials ({cfg.search} search, {cfg.scheduler} scheduler, "
        f"metric {cfg.metric}, {cfg.max_epochs} epochs each)",
        f"resources per trial: {res['cpu']} CPU, {res['gpu']} GPU; max concurrent: "
        f"{cfg.max_concurrent or 'as resources allow'}",
        f"where: {'local Ray' if cfg.address is None else 'cluster ' + cfg.address}; results: {cfg.experiment_path}",
        "fixed: " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.trial.items())),
    ]
    if cfg.search == "grid":
        lines.append(f"first {min(first, len(trials))} of {len(trials)} trials:")
        for d in trials[:first]:
            lines.append("  " + ", ".join(f"{k}={d[k]}" for k in swept))
    else:
        lines.append(f"optuna space: variant in {cfg.variants}; gamma in [{min(cfg.gammas)}, {max(cfg.gammas)}]; "
                     f"min_decay log-uniform in [{min(cfg.min_decays)}, {max(cfg.min_decays)}]; "
                     f"latent_dim in {cfg.latent_dims}; lr in {cfg.lrs}; seed in {cfg.seeds}")
    return "\n".join(lines)
