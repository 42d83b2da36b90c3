"""The end of a study: each trial's outcome (names from ``plvae.metrics``), the best trial per
variant and the closing text. Pure Python: the driver gives it the trials Tune saved."""
from __future__ import annotations

import math

from plvae import metrics as M
from plvae import study_files as F
from plvae.device import FALLBACK_OPTION
from plvae.priors import VARIANTS, W2
from tune.auth_token import token_path
from tune.reporting import ACCELERATOR, ASSIGNED_GPUS
from tune.study_config import StudyConfig
from tune.sweeps import SWEEPS

ANALYSIS_COMMAND = "python -m analysis {path}"


def outcomes(final: dict, max_epochs: int) -> dict:
    """{trial_id: outcome} of the trials Tune saved, by the one rule (plvae.study_files)."""
    return {tid: F.trial_outcome(t["status"], t["last_result"], max_epochs) for tid, t in final.items()}


def best_per_variant(final: dict, metric: str, outcome: dict) -> dict:
    """For each variant, the trial with the lowest metric among those that did not diverge or
    error and ran the study's longest run (E epochs, the most any such trial reached): every value
    ranked is from epoch E, never one run's epoch 1 against another's epoch 4. A variant with no
    trial that long (all stopped early) keeps its longest trial, marked ``ranked: False``."""
    usable = {}
    for trial_id, t in final.items():
        last, conf = t["last_result"], t["config"]
        value = last.get(metric)
        if outcome[trial_id] in (M.ERRORED, M.DIVERGED_OUTCOME) or value is None or not math.isfinite(value):
            continue
        usable[trial_id] = (conf.get("variant"), value, last.get(F.TRAINING_ITERATION) or 0, conf)
    longest = max((u[2] for u in usable.values()), default=0)
    best = {}
    for trial_id, (variant, value, epochs, conf) in usable.items():
        key = (epochs != longest, -epochs, value)   # the longest runs first, then the lowest value
        if variant not in best or key < best[variant][0]:
            best[variant] = (key, {F.TRIAL_ID: trial_id, metric: value, "epochs": epochs, "ranked": epochs == longest,
                                   **{k: conf.get(k) for k in SWEEPS if k != "variant"}})
    return {v: b for v, (_, b) in best.items()}


def error_line(text) -> str:
    """The last line of an error Tune saved (a traceback ends with 'Type: message')."""
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "(no error text saved)"


def trial_notes(final: dict) -> dict:
    """For study.json: each errored trial's error line (trial_error), and the trials that were
    given a GPU and trained on the CPU (cpu_fallback: only possible with --allow-cpu-fallback)."""
    return {"trial_error": {tid: error_line(t.get("error")) for tid, t in final.items() if t["status"] == "ERROR"},
            "cpu_fallback": sorted(tid for tid, t in final.items()
                                   if (t["last_result"].get(ASSIGNED_GPUS) or 0) > 0
                                   and t["last_result"].get(ACCELERATOR) == "cpu")}


def notes_text(record: dict) -> list:
    """The summary's lines for errored trials (one per distinct error) and for the CPU fallback."""
    lines = []
    errors = record.get("trial_error") or {}
    for line in dict.fromkeys(errors.values()):
        ids = [tid for tid, e in errors.items() if e == line]
        lines.append(f"errored ({len(ids)} trial{'s' * (len(ids) > 1)}: {', '.join(ids[:4])}"
                     f"{', ...' if len(ids) > 4 else ''}): {line}")
    fallback = record.get("cpu_fallback") or []
    if fallback:
        lines.append(f"CPU fallback ({FALLBACK_OPTION}): {len(fallback)} trial(s) were given a GPU that PyTorch "
                     f"could not use and trained on the CPU")
    return lines


def _ranking(cfg: StudyConfig, best: dict, other: set) -> list:
    """The best trial per variant, ranked on values of one epoch (the longest runs'); variants whose
    trials all stopped earlier are listed after it, without a value to set against the others."""
    ranked = {v: b for v, b in best.items() if b.get("ranked", True)}
    epochs = {b["epochs"] for b in ranked.values()}
    at = f"epoch {epochs.pop()}" if len(epochs) == 1 else "the last reported epoch"
    lines = [f"best per variant on {cfg.metric} at {at} (only trials that ran that long are ranked; "
             f"{ANALYSIS_COMMAND.split(' {')[0]} compares every seed at one epoch per context):"]
    for variant, b in sorted(ranked.items(), key=lambda kv: (kv[0] in other, kv[1][cfg.metric])):
        used = [k for k in SWEEPS if k != "variant" and b.get(k) is not None and VARIANTS[variant].uses(k)]
        params = ", ".join(f"{k}={b[k]:g}" if isinstance(b[k], float) else f"{k}={b[k]}" for k in used)
        tag = "  [W2 objective: not comparable]" if variant in other else ""
        lines.append(f"  {variant:<20} {b[cfg.metric]:.5f}  ({params}; {b['epochs']} epochs; {b[F.TRIAL_ID]}){tag}")
    for variant, b in sorted((v, b) for v, b in best.items() if v not in ranked):
        lines.append(f"  {variant:<20} not ranked: every trial stopped early (the longest ran {b['epochs']} "
                     f"epoch{'s' * (b['epochs'] != 1)}; {b[F.TRIAL_ID]})")
    return lines


def tracker_lines(cfg: StudyConfig, record: dict) -> list:
    """Where else the study can be read: MLflow (when used) and the Ray dashboard with where its
    login token is."""
    lines = []
    if cfg.mlflow:
        lines.append(f"MLflow: mlflow ui --backend-store-uri {cfg.mlflow}  (experiment {cfg.study_name}, "
                     f"one run per trial)")
    if record.get("dashboard_url"):
        where = token_path()
        lines.append(f"Ray dashboard: {record['dashboard_url']} (while this Ray runs; login token: "
                     + (f"the file {where})" if where else "the RAY_AUTH_TOKEN variable)"))
    return lines


def summary_text(cfg: StudyConfig, record: dict, wall_s: float) -> str:
    counts = record["summary"]
    lines = ["", f"=== study {cfg.study_name}: {record['status']} in {wall_s:.0f} s ===",
             "trials: " + ", ".join(f"{counts[k]} {k.replace('_', '-')}" for k in M.OUTCOMES
                                    if counts.get(k) or k != M.RUNNING)]
    lines += notes_text(record)
    if record.get("data_alpha"):
        lines.append("data alpha: " + "; ".join(f"{a:.3f} ({k})" for k, a in record["data_alpha"].items()))
    if record["best_per_variant"]:
        # On a total loss, W2 variants optimise another objective: listed after the KL ranking,
        # never in it (docs/design.md, "Comparing variants fairly").
        apart = cfg.metric in (M.VAL_LOSS, M.TRAIN_LOSS)
        other = {v for v in record["best_per_variant"] if apart and VARIANTS[v].divergence == W2}
        lines += _ranking(cfg, record["best_per_variant"], other)
    lines += [f"results: {cfg.experiment_path}",
              f"open them: {ANALYSIS_COMMAND.format(path=cfg.experiment_path)}",
              f"TensorBoard: tensorboard --logdir {cfg.experiment_path}"]
    lines += tracker_lines(cfg, record)
    if record["status"] == F.STUDY_INTERRUPTED:
        lines.append(f"resume: python tune/run_study.py --resume --study-name {cfg.study_name} "
                     f"--storage-path {cfg.storage_path}")
    return "\n".join(lines)
