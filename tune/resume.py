"""What --resume may change, and what it would do: the options a resume applies or refuses, and
the dry run's account of each trial folder. study.json itself is read and written only by
tune/study_record.py; this module works on the record it is given."""
from __future__ import annotations

import fnmatch
import json
import os
from typing import Optional

from plvae import metrics as M
from plvae import study_files as F
from plvae.config import TrialConfig
from tune.errors import StudyError
from tune.storage import is_uri, join_storage, listing, read_bytes, read_text
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


def resume_report(cfg: StudyConfig, record: dict, trials: list[dict], state: Optional[dict] = None) -> list[str]:
    """What a resume would do, for --dry-run: which trials finished (kept as they are), which are
    in progress (continued from their last checkpoint), damaged or missing (not started yet).
    ``record``: the study's study.json; ``trials``: its planned grid (empty for optuna); ``state``:
    tune_state's trials (a finished trial without its folder is lost: never run again, never counted)."""
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
    lost = lost_trials(cfg, state or {})
    seen |= {json.dumps((state or {})[tid]["config"], sort_keys=True) for tid in lost}
    missing = [t for t in trials if json.dumps(t, sort_keys=True) not in seen]
    lines = [f"resume {cfg.study_name}: {len(finished)} finished (kept), {len(running)} in progress (continued "
             f"from their last checkpoint), {len(damaged)} damaged, {len(missing)} not started"
             + (f", {len(lost)} lost (Tune counts them finished but their folders are gone: not run again, "
                f"not counted)" if lost else "")]
    lines += [f"  lost: {tid}" for tid in lost]
    lines += [f"  in progress: {r}" for r in running]
    lines += [f"  damaged: {r}" for r in damaged]
    lines += ["  not started: " + ", ".join(f"{k}={t[k]}" for k in ("variant", "gamma", "lr", "seed"))
              for t in missing[:20]]
    if len(missing) > 20:
        lines.append(f"  ... and {len(missing) - 20} more not started")
    return lines


# ---------------------------------------------------------------------------- Tune's saved state, before Ray
def tune_state(cfg: StudyConfig, staged: Optional[str] = None, copying=()) -> dict[str, dict]:
    """What Tune's restore will read, checked before Ray starts: tuner.pkl present and a whole
    pickle (not unpickled: its first and last byte), the newest experiment state present and
    parseable, each of its trials with an id. ``staged``/``copying``: the staging folder and the
    files the repair copies from it (read there instead). Returns {trial id: {"status", "dir",
    "config"}}; damage is a StudyError, one line with what to do."""
    path = cfg.experiment_path
    files = listing(path)

    def data(rel: str) -> Optional[bytes]:
        return read_bytes(os.path.join(staged, rel) if staged and rel in copying else join_storage(path, rel))

    def damaged(what: str) -> StudyError:
        return StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: {what}, so Tune cannot restore "
                          f"it; allowed: a study with intact Tune state (analyse what it finished: python -m "
                          f"analysis {path}; run the rest anew under another --study-name)")

    pkl = data(F.TUNER_FILE)
    if not pkl or pkl[:1] != b"\x80" or pkl[-1:] != b".":
        raise damaged(f"{F.TUNER_FILE} under {path} is " + ("missing or empty" if not pkl else "truncated"))
    states = sorted(f for f in set(files) | set(copying)
                    if os.sep not in f and fnmatch.fnmatch(f, F.EXPERIMENT_STATE_GLOB))
    if not states:
        raise damaged(f"no {F.EXPERIMENT_STATE_GLOB} under {path}")
    try:
        trial_data = json.loads(data(states[-1]) or b"")["trial_data"]
        trials = [json.loads(entry[0]) for entry in trial_data]
        out = {str(t["trial_id"]): {"status": t.get("status"), "dir": t.get("relative_logdir"),
                                    "config": t.get("config")} for t in trials}
    except (ValueError, KeyError, TypeError, IndexError) as e:
        why = "empty" if not data(states[-1]) else f"not Tune's experiment state ({type(e).__name__})"
        raise damaged(f"{states[-1]} under {path} is {why}") from None
    return out


def lost_trials(cfg: StudyConfig, state: dict[str, dict]) -> list[str]:
    """Trials Tune counts finished whose folder is gone: a resume never runs them again."""
    if is_uri(cfg.experiment_path):
        return []
    return sorted(tid for tid, t in state.items() if t["status"] == F.TUNE_TERMINATED
                  and not os.path.isdir(os.path.join(cfg.experiment_path, str(t["dir"] or tid))))
