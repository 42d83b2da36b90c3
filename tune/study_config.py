"""A study as a dataclass: what to sweep, what stays fixed, how to schedule it, where it runs.

Pure Python (no Ray import), so a whole study is validated - its size counted, every trial of the
grid built as a ``TrialConfig`` - before Ray starts, and bad input is one line:
``<field>=<value> is invalid; allowed: <what>``.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import Optional

from plvae import metrics as M
from plvae.config import ConfigError, TrialConfig, is_finite_number, is_int
from plvae.priors import VARIANT_NAMES, VARIANTS, W2
from tune.errors import StudyError, bad
from tune.storage import is_uri, join_storage
from tune.sweeps import (ALPHA_GAMMA, DEFAULT_MAX_TRIALS, INT_SWEEPS, SWEEP_LISTS, SWEEPS, TRIAL_DEFAULTS,
                         count_trials, grid_trials, probe_value)
from tune.tuning import check_knobs_swept, fill_in_tuning, validate_tuning

SEARCHES = ("grid", "optuna")
SCHEDULERS = ("asha", "seed_asha", "fifo")
# What a study may minimise: the per-stage losses (ASHA and Optuna run with mode="min").
STUDY_METRICS = tuple(m for m in (M.metric(stage, name) for stage in (M.VAL, M.TRAIN)
                                  for name in (M.RECON_MU, M.LOSS, M.RECON, M.DIVERGENCE))
                      if m in M.EPOCH_METRICS)
# A `primary` entry: one declared comparison (Holm corrects over these only; analysis.compare).
PRIMARY_QUANTITIES = M.PRIMARY_QUANTITIES
PRIMARY_KEYS = ("quantity", "variant", "where", "per")


def canonical_sweep(lst: str, values):
    """A sweep list in its one form: variants 'all' spelled out, ints made floats for float
    fields, each value once (in order). Anything else is returned as it is, for validate()."""
    if lst == "variants" and values in ("all", ["all"]):
        return list(VARIANT_NAMES)
    if lst not in SWEEP_LISTS or not isinstance(values, list) or any(isinstance(v, bool) for v in values):
        return values
    tfield = next(t for t, name in SWEEPS.items() if name == lst)
    clean = {}
    for value in values:
        if tfield not in INT_SWEEPS and isinstance(value, int):
            value = float(value)
        try:
            clean.setdefault(value, None)
        except TypeError:   # an unhashable entry: validate() names it
            return values
    return list(clean)


def default_study_name(preset: Optional[str]) -> str:
    """<preset>_<date>-<time>-<4 hex>: two studies started in the same second get different names."""
    return f"{preset or 'study'}_{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


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
    warmup_steps: list = field(default_factory=lambda: [0])         # linear lr warm-up steps (0: off)
    grad_clip_norms: list = field(default_factory=lambda: [None])   # gradient-norm clipping (None: off)
    gamma_from_data: bool = False   # add gamma = alpha/2, alpha measured on the training split
    data_seed_from_seed: bool = False   # each trial's data_seed is its seed: replicates redraw the data too
    # Several grids in one study: each entry overrides some sweep lists above; the study runs their union.
    grids: list = field(default_factory=list)
    # The declared primary comparisons (analysis corrects for multiplicity over these only):
    # [{quantity: final|epochs_to_target|diverged|distortion_gap, variant: NAME,
    #   where: {field: value, gamma: data (the data-matched gamma), lr: max}, per: [field, ...]}]
    primary: list = field(default_factory=list)
    max_trials: Optional[int] = None    # refuse a bigger study (default DEFAULT_MAX_TRIALS)
    # The tuning protocol (issue 18; tune/tuning.py): {tuning_seeds, evaluation_seeds, knobs: [lr],
    # target_fraction, target_reach}. With it, seeds are derived from it (evaluation + tuning seeds).
    tuning: Optional[dict] = None
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
    allow_cpu_fallback: bool = False         # a trial given a GPU PyTorch cannot use trains on the CPU (rehearsals)
    # --- where it runs and where results go
    address: Optional[str] = None            # None: a local Ray; "auto" or HOST:PORT: a cluster
    storage_path: str = "results"            # local paths are made absolute (relative to the cwd)
    shared_storage: bool = False             # the local storage_path is shared by all nodes (NFS)
    study_name: Optional[str] = None         # default: <preset>_<date>-<time>-<hex>
    dashboard: bool = True
    # --- watching and tracking
    images: bool = True                      # reconstructions and prior samples to TensorBoard each epoch
    mlflow: Optional[str] = None             # an MLflow tracking URI: Tune logs every trial's params and metrics there
    wandb: Optional[str] = None              # W&B mode, "offline" (runs saved beside the results) or "online"
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

    def resources(self) -> dict:
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial or 0}

    # ------------------------------------------------------------------ filling in, then validation
    def fill_in(self) -> "StudyConfig":
        """Fill in what was left out and bring values to their one form, before ``validate()``: the
        default num_samples (1 for a grid, 16 for optuna), a generated study name, the storage path
        made absolute, a whole GPU count as an int, variants 'all' spelled out, and each sweep list
        (top level and each of ``grids``) with every value once and ints made floats for float
        fields. A value of the wrong kind is left as it is, for ``validate()`` to name. Returns self."""
        if self.num_samples is None:
            self.num_samples = 1 if self.search == "grid" else 16
        g = self.gpus_per_trial
        if is_finite_number(g) and float(g).is_integer() and g >= 1:
            self.gpus_per_trial = int(g)
        if isinstance(self.storage_path, str) and self.storage_path.strip() and not is_uri(self.storage_path):
            self.storage_path = os.path.abspath(os.path.expanduser(self.storage_path.removeprefix("file://")))
        if self.study_name is None:
            self.study_name = default_study_name(self.preset)
        for lst in SWEEP_LISTS:
            setattr(self, lst, canonical_sweep(lst, getattr(self, lst)))
        self.tuning, self.seeds = fill_in_tuning(self.tuning, self.seeds)
        if isinstance(self.grids, list):
            self.grids = [{k: canonical_sweep(k, v) for k, v in g.items()} if isinstance(g, dict) else g
                          for g in self.grids]
        return self

    def validate(self) -> "StudyConfig":
        """Check every field (of a study filled in: ``fill_in()``), count the study (refused over
        max_trials), then build every trial. Changes nothing; returns self."""
        if not isinstance(self.trial, dict):
            raise bad("trial", self.trial, "a mapping of TrialConfig fields")
        for name in self.trial:
            if name in SWEEPS:
                raise StudyError(f"trial.{name}={self.trial[name]!r} is swept; allowed: set it through "
                                 f"{SWEEPS[name]} (a list)")
        try:
            TrialConfig.from_dict(self.trial)
        except ConfigError as e:
            raise StudyError(f"trial: {e}") from None
        self._validate_options()
        self._validate_grids()
        self._validate_sweeps()
        self._validate_primary()
        validate_tuning(self.tuning, self.seeds, self.grids)
        check_knobs_swept(self.tuning, {k: {v for _, g in self.each_grid() for v in getattr(g, SWEEPS[k])}
                                        for k in (self.tuning or {}).get("knobs", [])})
        cap = self.max_trials or DEFAULT_MAX_TRIALS
        n = self.count() if self.search == "grid" else self.optuna_trials()
        if n > cap:
            raise StudyError(f"trials={n} is invalid; allowed: at most max_trials={cap} (raise it with "
                             f"--max-trials {n} if you mean it)")
        for where, grid in self.each_grid():
            for tfield, lst in SWEEPS.items():
                for value in ([] if tfield == "variant" else getattr(grid, lst)):
                    if not isinstance(value, str):   # 'alpha/2' gammas were checked with the lists
                        probe_value(self.trial, tfield, value, where)
        if self.search == "grid" and not self.trial_dicts():
            raise StudyError(f"grid=[] is invalid; allowed: at least one trial (variants={self.variants!r})")
        return self

    def each_grid(self):
        """(error prefix, one-grid StudyConfig) for the top-level grid or each of `grids`."""
        if not self.grids:
            return [("", self)]
        return [(f"grids[{i}].", self._grid(i)) for i in range(len(self.grids))]

    def _grid(self, i: int) -> "StudyConfig":
        sub = dataclasses.replace(self, grids=[], primary=[])
        for key, value in self.grids[i].items():
            setattr(sub, key, list(value) if isinstance(value, list) else value)
        return sub

    def _validate_grids(self) -> None:
        if not isinstance(self.grids, list):
            raise bad("grids", self.grids, "a list of mappings of sweep lists (" + ", ".join(SWEEP_LISTS) + ")")
        if self.grids and self.search != "grid":
            raise bad("grids", f"[{len(self.grids)} grids]", "only with search 'grid'")
        for i, g in enumerate(self.grids):
            if not isinstance(g, dict):
                raise bad(f"grids[{i}]", g, "a mapping of sweep lists ({} is the top-level grid): "
                          + ", ".join(SWEEP_LISTS))
            for key in g:
                if key not in SWEEP_LISTS:
                    raise bad(f"grids[{i}].{key}", g[key], "a sweep list: " + ", ".join(SWEEP_LISTS))
            self._grid(i)._validate_sweeps(f"grids[{i}].")

    def _validate_sweeps(self, where: str = "") -> None:
        """Each sweep list: a list of plain values (the values themselves are checked by
        `probe_value` later)."""
        for tfield, lst in SWEEPS.items():
            values = getattr(self, lst)
            if not isinstance(values, list):
                raise bad(where + lst, values, "a list")
            needed = any(VARIANTS[v].uses(tfield) for v in self.variants if v in VARIANTS)
            if not values and needed:
                raise bad(where + lst, values, f"a non-empty list of {tfield} values (empty grid)")
            for value in values:
                if tfield == "variant":
                    if not isinstance(value, str) or value not in VARIANTS:
                        raise bad(where + "variant", value, ", ".join(VARIANT_NAMES) + " (or 'all')")
                elif tfield == "gamma" and isinstance(value, str):
                    if not ALPHA_GAMMA.match(value) or not self.gamma_from_data:
                        raise bad(where + "gamma", value, "a number >= 0, or with gamma_from_data a multiple of the "
                                                         "measured alpha ('alpha/2', 'alpha', '1.5*alpha')")
                elif not isinstance(value, (int, float)) or isinstance(value, bool):
                    probe_value(self.trial, tfield, value, where)   # the one-line error of the field

    def _validate_primary(self) -> None:
        allowed = ("a list of {quantity: " + "|".join(PRIMARY_QUANTITIES) + ", variant: NAME, where: {field: value}, "
                   "per: [field, ...]}")
        if not isinstance(self.primary, list):
            raise bad("primary", self.primary, allowed)
        for i, entry in enumerate(self.primary):
            if not isinstance(entry, dict) or set(entry) - set(PRIMARY_KEYS) or "quantity" not in entry \
                    or "variant" not in entry:
                raise bad(f"primary[{i}]", entry, allowed)
            if entry["quantity"] not in PRIMARY_QUANTITIES:
                raise bad(f"primary[{i}].quantity", entry["quantity"], ", ".join(PRIMARY_QUANTITIES))
            if entry["variant"] not in VARIANTS:
                raise bad(f"primary[{i}].variant", entry["variant"], ", ".join(VARIANT_NAMES))
            where, per = entry.get("where", {}), entry.get("per", [])
            if not isinstance(where, dict) or any(k not in TrialConfig.field_names() for k in where):
                raise bad(f"primary[{i}].where", where, "a mapping of trial fields to values")
            if not isinstance(per, list) or any(k not in TrialConfig.field_names() for k in per):
                raise bad(f"primary[{i}].per", per, "a list of trial fields")

    def _validate_options(self) -> None:
        def check(name, ok, allowed):
            if not ok(getattr(self, name)):
                raise bad(name, getattr(self, name), allowed)

        check("metric", lambda v: v in STUDY_METRICS, ", ".join(STUDY_METRICS))
        check("search", lambda v: v in SEARCHES, ", ".join(SEARCHES))
        check("scheduler", lambda v: v in SCHEDULERS, ", ".join(SCHEDULERS))
        if self.search == "grid":
            check("num_samples", lambda v: v == 1, "only with search 'optuna' (a grid repeats through seeds)")
        else:
            check("num_samples", lambda v: is_int(v) and v >= 1, "an integer >= 1 (suggestions; each runs at "
                                                                 "every seed)")
            # Optuna searches within one arm: a variant is an arm, not a knob (issue 18).
            check("variants", lambda v: isinstance(v, list) and len(v) == 1,
                  "one variant with search 'optuna' (Optuna tunes one arm's knobs; run one study per arm with "
                  "the same --num-samples, the same budget for every arm)")
        check("max_trials", lambda v: v is None or (is_int(v) and v >= 1), "an integer >= 1")
        check("search_seed", lambda v: is_int(v) and v >= 0, "an integer >= 0")
        # The grace period only means something to ASHA: a FIFO study of 1 epoch must not fail on it.
        check("grace_period", lambda v: is_int(v) and v >= 1 and (self.scheduler == "fifo" or v <= self.max_epochs),
              f"an integer in [1, max_epochs={self.max_epochs}]")
        check("reduction_factor", lambda v: is_finite_number(v) and v > 1, "a number > 1")
        check("cpus_per_trial", lambda v: is_int(v) and v >= 1, "an integer >= 1 (torch's threads per trial)")
        check("gpus_per_trial", lambda g: g is None or (is_finite_number(g) and (0 < g <= 1 or (
            float(g).is_integer() and g >= 1))), "a fraction in (0, 1] or an integer >= 1 (leave it out, or 'none', "
            "for CPU-only trials)")
        check("max_concurrent", lambda v: v is None or (is_int(v) and v >= 1), "an integer >= 1")
        check("num_cpus", lambda v: v is None or (is_int(v) and v >= 1), "an integer >= 1")
        check("num_gpus", lambda v: v is None or (is_finite_number(v) and v >= 0), "a number >= 0")
        if self.address is not None:
            check("address", lambda v: isinstance(v, str) and (
                v == "auto" or re.fullmatch(r"[A-Za-z0-9._\-\[\]:]+:\d{1,5}", v)),
                "'auto' or HOST:PORT of a running Ray cluster")
            for local_only in ("num_cpus", "num_gpus"):
                check(local_only, lambda v: v is None,
                      "only for a local Ray (without --address); a cluster has its own resources")
        check("storage_path", lambda v: isinstance(v, str) and v.strip(), "a directory or a URI such as s3://bucket/path")
        check("study_name", lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._\-]*", v),
              "letters, digits, '.', '_', '-' (a directory name)")
        if self.mlflow is not None:
            check("mlflow", lambda v: isinstance(v, str) and v.strip() and not v.strip().startswith("-"),
                  "an MLflow tracking URI (sqlite:///path/mlflow.db, http://host:5000, databricks)")
            import importlib.util

            if importlib.util.find_spec("mlflow") is None:
                raise bad("mlflow", self.mlflow, "a tracking URI with mlflow installed (pip install 'plvae[mlflow]')")
        if self.wandb is not None:
            check("wandb", lambda v: v in ("offline", "online"), "offline (runs saved under <study>/wandb) or online")
            import importlib.util

            if importlib.util.find_spec("wandb") is None:
                raise bad("wandb", self.wandb, "offline or online with wandb installed (pip install 'plvae[wandb]')")
        if self.data_seed_from_seed is True and self.trial.get("data_seed", 0) != 0:
            raise bad("trial.data_seed", self.trial["data_seed"], "0 (the default) with data_seed_from_seed: each "
                                                                  "trial's data_seed is its seed")
        for flag in ("gamma_from_data", "data_seed_from_seed", "shared_storage", "dashboard", "reuse_actors",
                     "images", "allow_cpu_fallback"):
            check(flag, lambda v: isinstance(v, bool), "true or false")
        check("max_failures", lambda v: is_int(v) and v >= 0, "an integer >= 0")
        check("keep_checkpoints", lambda v: is_int(v) and v >= 1, "an integer >= 1")
        check("verbose", lambda v: is_int(v) and 0 <= v <= 3, "0, 1, 2 or 3")

    # ------------------------------------------------------------------ the grid
    def count(self, alpha: float = 1.0) -> int:
        """Distinct trials of the grid (or the union of `grids`), counted without building them."""
        return count_trials([g for _, g in self.each_grid()], alpha)

    def trial_dicts(self, extra: Optional[dict] = None) -> list[dict]:
        """Every trial of the grid (or of each of `grids`) as a full, flat TrialConfig dict, each
        distinct config once. A field a variant does not use keeps its TrialConfig default. Gammas
        relative to alpha resolve with the measured alpha in ``extra`` (alpha = 1 stands in before)."""
        return grid_trials([g for _, g in self.each_grid()], self.trial, extra, self.data_seed_from_seed)

    def optuna_trials(self) -> int:
        """An Optuna study's trials: num_samples suggestions, each run at every seed."""
        return self.num_samples * len(self.seeds)

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
        """The fixed fields on the baseline variant: what the data and resources depend on."""
        return TrialConfig.from_dict({**self.trial, "variant": VARIANT_NAMES[0]})
