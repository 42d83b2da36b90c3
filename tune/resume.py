"""What --resume may change, and what it would do: the options a resume applies or refuses, and
the dry run's account of each trial folder. study.json itself is read and written only by
tune/study_record.py; this module works on the record it is given."""
from __future__ import annotations

import json
import os

from plvae import metrics as M
from plvae import study_files as F
from plvae.config import TrialConfig
from tune.errors import StudyError
from tune.storage import is_uri, read_text
from tune.study_config import StudyConfig

# Options a resume applies (where and with what it runs, and images, which the trainable rebuilt on
# resume reads); every other changed option is refused: Tune keeps the search space, scheduler,
# searcher (max_concurrent) and run config (its callbacks: --mlflow, --wandb) in its saved state.
RESUME_APPLIES = ("address", "storage_path", "shared_storage", "num_cpus", "num_gpus", "dashboard",
                  "cpus_per_trial", "gpus_per_trial", "study_name", "images", "allow_cpu_fallback")
# Outcomes a resume keeps as they are (Tune continues the running and the errored trials).
FINAL_OUTCOMES = (M.COMPLETED, M.EARLY_STOPPED, M.DIVERGED_OUTCOME)


def field_value(cfg: StudyConfig, field: str):
    """A study field, or "trial.<name>" (its TrialConfig default when unset), in JSON form."""
    if field.startswith("trial."):
        name = field.split(".", 1)[1]
        default = TrialConfig.__dataclass_fields__[name].default
        value = cfg.trial.get(name, default) if isinstance(cfg.trial, dict) else cfg.trial
    else:
        value = getattr(cfg, field)
    return json.loads(json.dumps(value, default=str))   # tuples and lists compare equal


def apply_options(stored: StudyConfig, cfg: StudyConfig, given: list) -> list[str]:
    """Apply to the stored study the options of this call a resume may change; ``given``: (flag,
    field) pairs the user set explicitly. Returns what was applied ("--flag old -> new"); raises
    StudyError (one line, naming each) for a changed option a resume cannot apply."""
    changed, applied = [], []
    for flag, field in given:
        old, new = field_value(stored, field), field_value(cfg, field)
        if old == new:
            continue
        if field in RESUME_APPLIES:
            setattr(stored, field, getattr(cfg, field))
            applied.append(f"{flag} {old} -> {new}")
        else:
            changed.append(f"{flag} ({old} -> {new})")
    if changed:
        raise StudyError(f"--resume cannot change {', '.join(changed)}: Tune continues the study it saved; allowed: "
                         f"the study's own settings (drop these options), or a new study under another --study-name")
    return applied


def resume_report(cfg: StudyConfig, record: dict, trials: list[dict]) -> list[str]:
    """What a resume would do, for --dry-run: which trials finished (kept as they are), which are
    in progress (continued from their last checkpoint), damaged or missing (not started yet).
    ``record``: the study's study.json; ``trials``: its planned grid (empty for optuna)."""
    path = cfg.experiment_path
    if is_uri(path):
        return [f"resume: trial folders under {path} are not inspected in a dry run"]
    status = record.get("trial_status") or {}
    finished, running, damaged, seen = [], [], [], set()
    for name in sorted(os.listdir(path)):
        d = os.path.join(path, name)
        if not os.path.isfile(os.path.join(d, F.PARAMS_FILE)):
            continue
        try:
            params = json.loads(read_text(os.path.join(d, F.PARAMS_FILE)) or "")
            seen.add(json.dumps(params, sort_keys=True))
        except ValueError:
            damaged.append(f"{name} ({F.PARAMS_FILE} unreadable)")
            continue
        rows, bad = F.read_result_lines(read_text(os.path.join(d, F.RESULT_FILE)) or "")
        checkpoints = sum(c.startswith(F.CHECKPOINT_PREFIX) for c in os.listdir(d))
        tid = next((t for t in status if name.endswith(t)), None)
        outcome = F.trial_outcome(status.get(tid), rows, cfg.max_epochs, record.get("status"),
                                  error_text=read_text(os.path.join(d, F.ERROR_FILE)))
        if bad:
            damaged.append(f"{name} ({len(bad)} unreadable result line(s))")
        elif outcome in FINAL_OUTCOMES:
            finished.append(name)
        else:   # running, or errored: Tune continues both from their last checkpoint (resume_errored)
            running.append(f"{name} (epoch {F.epochs_reported(rows)}, {checkpoints} checkpoint(s))")
    missing = [t for t in trials if json.dumps(t, sort_keys=True) not in seen]
    lines = [f"resume {cfg.study_name}: {len(finished)} finished (kept), {len(running)} in progress (continued "
             f"from their last checkpoint), {len(damaged)} damaged, {len(missing)} not started"]
    lines += [f"  in progress: {r}" for r in running]
    lines += [f"  damaged: {r}" for r in damaged]
    lines += ["  not started: " + ", ".join(f"{k}={t[k]}" for k in ("variant", "gamma", "lr", "seed"))
              for t in missing[:20]]
    if len(missing) > 20:
        lines.append(f"  ... and {len(missing) - 20} more not started")
    return lines
