"""The study record: study.json, the claim on the study folder, the heartbeat, and --resume.

study.json sits beside Tune's trial folders and says what Tune's files do not: the study's
configuration as the user gave it, its status (claimed -> running -> finished | interrupted), the
driver that runs it (host, pid, heartbeat) and, at the end, every trial's status and outcome.

- Claim: a new study's folder is created before Ray starts - exclusively (mkdir) on a local path;
  on s3:// or gs:// (no exclusive create there) it must not exist yet, and a claim marker holding
  a random token is written and read back.
- Heartbeat: the driver rewrites ``heartbeat`` every HEARTBEAT_S seconds. A lock cannot work on
  S3; a heartbeat older than STALE_S (or a dead pid on this host) means the driver is gone.
- Resume: only a study whose driver is gone; Tune's saved state (tuner.pkl) must be there; a
  flag that would change the study is refused, naming each changed flag.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import secrets
import shutil
import socket
import threading
from typing import Optional

from plvae.config import TrialConfig
from tune.study_config import StudyConfig, StudyError, is_uri, join_storage

STUDY_FILE = "study.json"
CLAIM_FILE = ".plvae-claim"
TUNER_STATE = "tuner.pkl"          # Tune's saved Tuner (Tuner.restore needs it)
HEARTBEAT_S = 15.0
STALE_S = 4 * HEARTBEAT_S
RECORD_FIELDS = ("study_name", "study_config", "status", "started")
# Options a resume applies (where and with what it runs, and images, which the trainable rebuilt on
# resume reads); every other changed option is refused: Tune keeps the search space, scheduler,
# searcher (max_concurrent) and run config (its callbacks: --mlflow, --wandb) in its saved state.
RESUME_APPLIES = ("address", "storage_path", "shared_storage", "num_cpus", "num_gpus", "dashboard",
                  "cpus_per_trial", "gpus_per_trial", "study_name", "images", "allow_cpu_fallback")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- files, local or URI
def _fs(path: str):
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a bad URI
        raise StudyError(f"storage_path={path!r} is invalid ({' '.join(str(e).split())[:200]}); allowed: "
                         f"a local directory or a URI pyarrow can open (s3://bucket/path, gs://bucket/path)") from None


def exists(path: str) -> bool:
    if not is_uri(path):
        return os.path.exists(path)
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def read_text(path: str) -> Optional[str]:
    try:
        if not is_uri(path):
            with open(path) as f:
                return f.read()
        fs, p = _fs(path)
        with fs.open_input_stream(p) as f:
            return f.read().decode()
    except (OSError, UnicodeDecodeError):
        return None


def write_text(path: str, text: str) -> None:
    if is_uri(path):
        fs, p = _fs(path)
        with fs.open_output_stream(p) as f:
            f.write(text.encode())
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)   # atomic: a reader never sees half a record


def read_record(experiment_path: str) -> Optional[dict]:
    """study.json, or None when absent. Raises StudyError (one line) when it is no study record."""
    path = join_storage(experiment_path, STUDY_FILE)
    text = read_text(path)
    if text is None:
        return None
    try:
        rec = json.loads(text)
    except ValueError as e:
        raise StudyError(f"{STUDY_FILE}={path!r} is invalid (not JSON: {e}); allowed: the record run_study.py "
                         f"writes") from None
    missing = [k for k in RECORD_FIELDS if not isinstance(rec, dict) or k not in rec]
    if missing or not isinstance(rec.get("study_config"), dict):
        raise StudyError(f"{STUDY_FILE}={path!r} is invalid (not a study record; missing: "
                         f"{', '.join(missing) or 'study_config as a mapping'}); allowed: the record run_study.py writes")
    return rec


def write_record(cfg: StudyConfig, record: dict) -> None:
    write_text(join_storage(cfg.experiment_path, STUDY_FILE), json.dumps(record, indent=2, default=str) + "\n")


# ---------------------------------------------------------------------------- claim
def claim(cfg: StudyConfig, record: dict) -> None:
    """Create the study folder for this study alone and write its first record, before Ray starts.
    Raises StudyError (one line) when the name is taken or the storage cannot be written."""
    path = cfg.experiment_path
    taken = (f"study_name={cfg.study_name!r} is invalid: {path} exists; allowed: a new --study-name, or "
             f"--resume to continue that study")
    try:
        if is_uri(path):
            fs, p = _fs(path)
            if exists(path):
                raise StudyError(taken)
            fs.create_dir(p, recursive=True)
            token = secrets.token_hex(8)
            marker = join_storage(path, CLAIM_FILE)
            write_text(marker, token)
            if read_text(marker) != token:   # another driver claimed it at the same moment
                raise StudyError(taken)
        else:
            os.makedirs(cfg.storage_path, exist_ok=True)
            os.mkdir(path)                    # exclusive: exactly one driver gets it
        write_record(cfg, record)
    except FileExistsError:
        raise StudyError(taken) from None
    except OSError as e:
        raise StudyError(f"storage_path={cfg.storage_path!r} is invalid ({e.strerror or e}); allowed: a directory "
                         f"this user can write, or a URI with write access") from None


def release(cfg: StudyConfig) -> None:
    """Undo a claim whose study never started a trial (bad input found once Ray was up): the
    folder holds only what claim() wrote, so the same name can be used again."""
    path = cfg.experiment_path
    if is_uri(path) or not os.path.isdir(path):
        return
    if set(os.listdir(path)) <= {STUDY_FILE, CLAIM_FILE}:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- heartbeat
def driver_fields() -> dict:
    return {"driver": {"host": socket.gethostname(), "pid": os.getpid()}, "heartbeat": now_iso()}


def driver_alive(record: dict, now: Optional[_dt.datetime] = None) -> bool:
    """Whether the driver named in a record still runs: a fresh heartbeat, and on this host a live pid."""
    if record.get("status") not in ("claimed", "running"):
        return False
    try:
        beat = _dt.datetime.fromisoformat(record["heartbeat"])
    except (KeyError, TypeError, ValueError):
        return False
    now = now or _dt.datetime.now().astimezone()
    if (now - beat).total_seconds() > STALE_S:
        return False
    driver = record.get("driver") or {}
    if driver.get("host") == socket.gethostname() and isinstance(driver.get("pid"), int):
        try:
            os.kill(driver["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


class Heartbeat:
    """The driver's record, rewritten every HEARTBEAT_S seconds with a fresh heartbeat (a daemon
    thread), and by `update` whenever the study's state changes. One lock serialises the writes."""

    def __init__(self, cfg: StudyConfig, record: dict, interval: float = HEARTBEAT_S):
        self.cfg, self.record, self.interval = cfg, record, interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="study-heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.update(**driver_fields())
        self._thread.start()
        return self

    def update(self, **fields) -> None:
        with self._lock:
            self.record.update(fields)
            self.record["heartbeat"] = now_iso()
            write_record(self.cfg, self.record)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update()
            except OSError:   # storage briefly unreachable: the next beat tries again
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


# ---------------------------------------------------------------------------- resume
def resume_candidate(storage_path: str) -> Optional[str]:
    """The most recently started study under storage_path that did not finish and whose driver is
    gone (a study still running elsewhere is no candidate), for a bare --resume."""
    if is_uri(storage_path):
        import pyarrow.fs

        fs, p = _fs(storage_path)
        names = [info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(p, allow_not_found=True))
                 if info.type == pyarrow.fs.FileType.Directory]
    else:
        names = os.listdir(storage_path) if os.path.isdir(storage_path) else []
    found = []
    for name in names:
        try:
            rec = read_record(join_storage(storage_path, name))
        except StudyError:
            continue
        if rec and rec.get("status") != "finished" and not driver_alive(rec):
            found.append((str(rec.get("started") or ""), name))
    return max(found)[1] if found else None


def _value(cfg: StudyConfig, field: str):
    if field.startswith("trial."):
        name = field.split(".", 1)[1]
        default = TrialConfig.__dataclass_fields__[name].default
        value = cfg.trial.get(name, default)
    else:
        value = getattr(cfg, field)
    return json.loads(json.dumps(value, default=str))   # tuples and lists compare equal


def prepare_resume(cfg: StudyConfig, given: list) -> tuple[StudyConfig, dict, list[str]]:
    """The study --resume continues: its own configuration from study.json, with the options this
    call may change applied. ``given``: (flag, field) pairs the user set explicitly. Returns
    (config, prior record, notes). Raises StudyError (one line) for anything that cannot resume."""
    path = cfg.experiment_path
    prior = read_record(path)
    if prior is None:
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: no {STUDY_FILE} under {path}; "
                         f"allowed: a study started there")
    if prior.get("status") == "finished":
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: it finished on "
                         f"{prior.get('finished')}; allowed: an unfinished study (analyse this one: "
                         f"python -m analysis {path})")
    if driver_alive(prior):
        d = prior.get("driver") or {}
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: its driver is alive (pid "
                         f"{d.get('pid')} on {d.get('host')}, heartbeat {prior.get('heartbeat')}); allowed: a study "
                         f"whose driver has stopped (wait {int(STALE_S)} s after it dies)")
    if not exists(join_storage(path, TUNER_STATE)):
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: {path} has no {TUNER_STATE} "
                         f"(Tune's saved state; the study stopped before Tune started), so no trial can be "
                         f"continued; allowed: a study with Tune state, or run it anew under a new --study-name")
    try:
        stored = StudyConfig(**prior["study_config"])
        stored.study_name = cfg.study_name
        stored.validate()
    except (TypeError, StudyError) as e:
        raise StudyError(f"{STUDY_FILE} under {path} is invalid (its study_config: {' '.join(str(e).split())}); "
                         f"allowed: the record run_study.py writes") from None
    changed, applied = [], []
    for flag, field in given:
        old, new = _value(stored, field), _value(cfg, field)
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
    notes = [f"resume: applied {', '.join(applied)}"] if applied else []
    return stored.validate(), prior, notes


def resume_report(cfg: StudyConfig, prior: dict, trials: list[dict]) -> list[str]:
    """What a resume would do, for --dry-run: which trials finished (kept as they are), which are
    in progress (continued from their last checkpoint), damaged or missing (not started yet).
    ``trials``: the study's planned grid (empty for optuna)."""
    path = cfg.experiment_path
    if is_uri(path):
        return [f"resume: trial folders under {path} are not inspected in a dry run"]
    status = prior.get("trial_status") or {}
    finished, running, damaged, seen = [], [], [], set()
    for name in sorted(os.listdir(path)):
        d = os.path.join(path, name)
        if not os.path.isfile(os.path.join(d, "params.json")):
            continue
        try:
            with open(os.path.join(d, "params.json")) as f:
                params = json.load(f)
            seen.add(json.dumps(params, sort_keys=True))
        except (OSError, ValueError):
            damaged.append(f"{name} (params.json unreadable)")
            continue
        epochs, bad = 0, 0
        try:
            with open(os.path.join(d, "result.json")) as f:
                for line in f:
                    try:
                        epochs = max(epochs, int(json.loads(line)["training_iteration"]))
                    except (ValueError, KeyError, TypeError):
                        bad += line.strip() != ""
        except OSError:
            pass
        checkpoints = sum(c.startswith("checkpoint_") for c in os.listdir(d))
        tid = next((t for t in status if name.endswith(t)), None)
        if bad:
            damaged.append(f"{name} ({bad} unreadable result line(s))")
        elif epochs >= cfg.max_epochs or status.get(tid) == "TERMINATED":
            finished.append(name)
        else:
            running.append(f"{name} (epoch {epochs}, {checkpoints} checkpoint(s))")
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
