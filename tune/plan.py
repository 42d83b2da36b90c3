"""The plan of a study: what it runs, the same for a dry run and a real run - the trials (grid
search), the tags every trial carries (the measured alpha and the data-matched gamma), how many
run at once, and the text a dry run prints. The caller's StudyConfig is never changed: the plan
holds its own copy with the gammas resolved."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from tune.study_config import StudyConfig
from tune.sweeps import SWEEPS, data_gamma, resolved_gammas

# Optuna learns from finished trials: without a limit it samples every trial at once, blind.
OPTUNA_DEFAULT_CONCURRENCY = 4


@dataclass
class Plan:
    """What a study runs: ``trials`` (grid search; [] for optuna), ``extra`` (the tags every
    trial carries), ``notes`` to print, and ``study``: the study with its gammas resolved."""

    trials: list
    extra: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    study: Optional[StudyConfig] = None

    @property
    def gammas(self) -> list:
        """The gammas the study runs: 'alpha/2'-style entries resolved, the matched gamma added."""
        return self.study.gammas


def with_data_gamma(cfg: StudyConfig, extra: dict) -> StudyConfig:
    """A copy of the study whose gammas (and each of its grids' gammas) hold the matched gamma
    and numbers for the 'alpha/2'-style entries."""
    grids = [{**g, "gammas": resolved_gammas(g["gammas"], extra)} if "gammas" in g else g for g in cfg.grids]
    return dataclasses.replace(cfg, gammas=resolved_gammas(cfg.gammas, extra), grids=grids)


def plan(cfg: StudyConfig, alphas: Optional[dict] = None) -> Plan:
    """The trials of a validated study. ``alphas`` ({data key: alpha}) is the measured data exponent
    for --gamma-from-data (measured on this call's data, or the resumed study's record)."""
    extra, notes, study = {}, [], cfg
    if cfg.gamma_from_data and alphas:
        extra = data_gamma(alphas)
        study = with_data_gamma(cfg, extra)
        notes.append(f"data alpha = {extra['data_alpha']:.3f}: gamma = {extra['data_gamma']} added to the grid")
    if cfg.objective_note():
        notes.append(cfg.objective_note())
    return Plan(study.trial_dicts(extra) if cfg.search == "grid" else [], extra, notes, study)


def max_concurrent(cfg: StudyConfig) -> Optional[int]:
    """Trials running at once: the user's limit, else OPTUNA_DEFAULT_CONCURRENCY for an Optuna search
    (never more than its trials), else None (as resources allow)."""
    if cfg.max_concurrent or cfg.search != "optuna":
        return cfg.max_concurrent
    return min(OPTUNA_DEFAULT_CONCURRENCY, cfg.optuna_trials())


def describe(cfg: StudyConfig, trials: list[dict], first: int = 5) -> str:
    """The dry-run text: how many trials, resources each, the fixed fields and the first configs."""
    n = len(trials) if cfg.search == "grid" else cfg.optuna_trials()
    res = cfg.resources()
    lines = [
        f"study {cfg.study_name}: {n} trials ({cfg.search} search, {cfg.scheduler} scheduler, "
        f"metric {cfg.metric}, {cfg.max_epochs} epochs each)",
        f"resources per trial: {res['cpu']} CPU, {res['gpu']} GPU; max concurrent: {max_concurrent(cfg) or 'as resources allow'}",
        f"where: {'local Ray' if cfg.address is None else 'cluster ' + cfg.address}; results: {cfg.experiment_path}",
        "fixed: " + ", ".join(f"{k}={v}" for k, v in sorted(cfg.trial.items())),
    ]
    if cfg.tuning:
        lines.append(f"tuning protocol: {', '.join(cfg.tuning['knobs'])} picked on seeds {cfg.tuning['tuning_seeds']}, "
                     f"reported on seeds {cfg.tuning['evaluation_seeds']} only")
    if cfg.search == "grid":
        lines.append(f"first {min(first, len(trials))} of {len(trials)} trials:")
        for d in trials[:first]:
            lines.append("  " + ", ".join(f"{k}={d[k]}" for k in SWEEPS))
    else:
        lines.append(f"optuna space (one arm: variant {cfg.variants[0]}): gamma in [{min(cfg.gammas)}, "
                     f"{max(cfg.gammas)}]; min_decay log-uniform in [{min(cfg.min_decays)}, {max(cfg.min_decays)}]; "
                     f"latent_dim in {cfg.latent_dims}; lr in {cfg.lrs} (each only where the variant uses it); "
                     f"{cfg.num_samples} suggestions, each run at every seed {cfg.seeds}")
    return "\n".join(lines)
