"""The study record: study.json, and ``StudyRecord``, the one handle that reads and writes it
through a study's life: open (new, or the study --resume continues), the dry-run report, claim
(or, resumed, the repair of a killed driver's copy), running (heartbeat, status, the reason of a
failure, release when no trial started) and finish (outcomes, summary, exit status).

study.json sits beside Tune's trial folders and says what Tune's files do not: the study's
configuration as the user gave it, its status (claimed -> running -> finished | interrupted), the
driver that runs it (host, pid, heartbeat) and, at the end, every trial's status and outcome.

- Claim: a new study's folder is created before Ray starts - exclusively (mkdir) on a local path;
  on s3:// or gs:// (no exclusive create there) it must not exist yet, and a claim marker holding
  a random token is written and read back.
- Heartbeat: the driver rewrites ``heartbeat`` every HEARTBEAT_S seconds. A lock cannot work on
  S3; a heartbeat older than STALE_S (or a dead pid on this host) means the driver is gone.
- Resume: only a study whose driver is gone; Tune's saved state (tuner.pkl) must be there; a
  flag that would change the study is refused, naming each changed flag (tune/resume.py).
- Statuses (plvae.study_files): claimed -> running -> finished | interrupted, with ``reason``
  saying why a study was interrupted.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import secrets
import shutil
import socket
import stat
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

from plvae import metrics as M
from plvae import study_files as F
from plvae.provenance import git_state, package_versions
from plvae.study_files import STUDY_FILE, TUNER_FILE
from tune.errors import StudyError
from tune.reporting import STUDY_OBJECTIVE
from tune.resume import apply_options, resume_report, tune_state
from tune.staging import apply as apply_repair
from tune.staging import plan_repair
from tune.storage import exists, fs, is_uri, join_storage, read_text, subfolders, write_text
from tune.study_config import StudyConfig
from tune.summary import best_per_variant, outcomes, summary_text, trial_notes

CLAIM_FILE = ".plvae-claim"
HEARTBEAT_S = 15.0
STALE_S = 4 * HEARTBEAT_S
RECORD_FIELDS = ("study_name", "study_config", "status", "started")
def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- study.json
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


def new_record(cfg: StudyConfig) -> dict:
    """A new study's first study.json, written when its folder is claimed (before Ray starts)."""
    return {"study_name": cfg.study_name, "preset": cfg.preset, "metric": cfg.metric, "mode": "min",
            "objective": STUDY_OBJECTIVE, "scheduler": cfg.scheduler, "search": cfg.search,
            "max_epochs": cfg.max_epochs, "num_trials": cfg.count() if cfg.search == "grid" else cfg.num_samples,
            "study_config": cfg.to_dict(), "data_alpha": {}, "started": now_iso(), "finished": None,
            "status": F.STUDY_CLAIMED, "results_path": cfg.experiment_path, **driver_fields(), **provenance()}


def provenance() -> dict:
    """The command line, the code's git commit and the package versions a study starts with: what a
    result needs to be rerun (report.html shows them)."""
    return {"argv": list(sys.argv), "git": git_state(os.path.dirname(os.path.abspath(__file__))),
            "versions": package_versions()}


# ---------------------------------------------------------------------------- claim
def _taken(cfg: StudyConfig) -> str:
    return (f"study_name={cfg.study_name!r} is invalid: {cfg.experiment_path} exists; allowed: a new --study-name, "
            f"or --resume to continue that study")


def claim(cfg: StudyConfig, record: dict) -> None:
    """Create the study folder for this study alone and write its first record, before Ray starts.
    Raises StudyError (one line) when the name is taken or the storage cannot be written."""
    path = cfg.experiment_path
    taken = _taken(cfg)
    try:
        if is_uri(path):
            filesystem, p = fs(path)
            if exists(path):
                raise StudyError(taken)
            filesystem.create_dir(p, recursive=True)
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
    if record.get("status") not in (F.STUDY_CLAIMED, F.STUDY_RUNNING):
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
def resume_candidate(storage_path: str, now: Optional[_dt.datetime] = None) -> Optional[str]:
    """The most recently started study under storage_path that did not finish and whose driver is
    gone (a study still running elsewhere is no candidate), for a bare --resume. On a local path
    only a study.json this user owns counts (another user's could be planted: a resume unpickles
    what the study folder holds), and a start time in the future (more than a minute) is ignored."""
    now = now or _dt.datetime.now().astimezone()
    found = []
    for name in subfolders(storage_path):
        path = join_storage(storage_path, name)
        if not is_uri(path) and not _own_file(os.path.join(path, STUDY_FILE)):
            continue
        try:
            rec = read_record(path)
            started = _dt.datetime.fromisoformat(str(rec.get("started"))) if rec else None
        except (StudyError, ValueError):
            continue
        if started is None or started.tzinfo is None or started > now + _dt.timedelta(seconds=60):
            continue
        if rec.get("status") != F.STUDY_FINISHED and not driver_alive(rec):
            found.append((started, name))
    return max(found)[1] if found else None


def _own_file(path: str) -> bool:
    """A regular file (no link) owned by this user."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()


def prepare_resume(cfg: StudyConfig, given: list) -> tuple[StudyConfig, dict, list[str]]:
    """The study --resume continues: its own configuration from study.json, with the options this
    call may change applied (tune/resume.py). ``given``: (flag, field) pairs the user set
    explicitly. Returns (config, its record, notes). Raises StudyError (one line) for anything
    that cannot resume."""
    path = cfg.experiment_path
    record = read_record(path)
    if record is None:
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: no {STUDY_FILE} under {path}; "
                         f"allowed: a study started there")
    if record.get("status") == F.STUDY_FINISHED:
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: it finished on "
                         f"{record.get('finished')}; allowed: an unfinished study (analyse this one: "
                         f"python -m analysis {path})")
    if driver_alive(record):
        d = record.get("driver") or {}
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: its driver is alive (pid "
                         f"{d.get('pid')} on {d.get('host')}, heartbeat {record.get('heartbeat')}); allowed: a study "
                         f"whose driver has stopped (wait {int(STALE_S)} s after it dies)")
    if not exists(join_storage(path, TUNER_FILE)):
        raise StudyError(f"study_name={cfg.study_name!r} is invalid for --resume: {path} has no {TUNER_FILE} "
                         f"(Tune's saved state; the study stopped before Tune started), so no trial can be "
                         f"continued; allowed: a study with Tune state, or run it anew under a new --study-name")
    invalid = f"{STUDY_FILE} under {path} is invalid (its study_config"
    try:
        stored = StudyConfig(**record["study_config"])
    except TypeError as e:
        raise StudyError(f"{invalid}: {' '.join(str(e).split())}); allowed: the record run_study.py writes") from None
    stored.study_name = cfg.study_name
    applied = apply_options(stored, cfg, given)
    try:
        stored.fill_in().validate()
    except StudyError as e:
        with_options = f", resumed with {', '.join(applied)}" if applied else ""
        raise StudyError(f"{invalid}{with_options}: {' '.join(str(e).split())}); allowed: the record run_study.py "
                         f"writes") from None
    return stored, record, ([f"resume: applied {', '.join(applied)}"] if applied else [])


# ---------------------------------------------------------------------------- the handle
def one_line(e: BaseException) -> str:
    return (type(e).__name__ + (": " + " ".join(str(e).split()) if str(e).strip() else ""))[:300]


@dataclass
class StudyRecord:
    """A study through its life, and the only writer of its study.json: ``open`` (a new study, or
    the one --resume continues), ``dry_run_report``, ``claim`` (or, resumed, the repair of a killed
    driver's copy), ``running`` (heartbeat; "interrupted" with the reason on any failure; a new
    study that started no trial is released), ``start_trials`` and ``finish`` (outcomes, summary,
    the exit status). ``resumed``: whether ``record`` is an earlier run's record being continued."""

    cfg: StudyConfig
    record: dict
    resumed: bool = False
    notes: list = field(default_factory=list)
    _heartbeat: Optional[Heartbeat] = field(default=None, repr=False)
    _trials_started: bool = field(default=False, repr=False)
    _started_at: float = field(default=0.0, repr=False)

    @classmethod
    def open(cls, cfg: StudyConfig, given: list = (), explicit_name: bool = True,
             resume: bool = False) -> "StudyRecord":
        """A new study (its first record, written by ``claim``), or with ``resume`` the study to
        continue: the one named, else the latest under the storage path whose driver is gone.
        Raises StudyError (one line) for a name that is taken, or a study that cannot resume."""
        if not resume:
            if exists(cfg.experiment_path):
                raise StudyError(_taken(cfg))
            return cls(cfg, new_record(cfg))
        if not explicit_name:
            name = resume_candidate(cfg.storage_path)
            if name is None:
                raise StudyError(f"resume: no unfinished study whose driver has stopped under {cfg.storage_path}; "
                                 f"allowed: --study-name NAME of a study there")
            cfg = dataclasses.replace(cfg, study_name=name)
        cfg, record, notes = prepare_resume(cfg, given)
        return cls(cfg, record, resumed=True, notes=notes)

    @property
    def data_alpha(self) -> dict:
        """{data key: alpha} measured for --gamma-from-data, as the record keeps it ({} before)."""
        return self.record.get("data_alpha") or {}

    def dry_run_report(self, trials: list[dict]) -> list[str]:
        """For a resumed study: which trials a resume keeps, continues or has not started, and the
        copy it would finish. Nothing for a new study."""
        if not self.resumed:
            return []
        rep = plan_repair(self.cfg)
        state = tune_state(self.cfg, rep.staging, set(rep.files))   # what the real resume will find
        return resume_report(self.cfg, self.record, trials, state) + rep.notes(done=False)

    def claim(self) -> list[str]:
        """A new study: its folder, for this driver alone, with the first record. A resumed one:
        the copy a killed driver left half done, finished before Tune reads the study back.
        Returns the notes to print."""
        if self.resumed:
            rep = plan_repair(self.cfg)
            tune_state(self.cfg, rep.staging, set(rep.files))   # damaged Tune state: one line, before Ray
            apply_repair(self.cfg, rep)
            return rep.notes(done=True)
        claim(self.cfg, self.record)
        return []

    @contextmanager
    def running(self):
        """While the driver runs the study: the heartbeat (a resumed study says "running" at once,
        so a second --resume sees a live driver). On any exception the record says "interrupted"
        with the reason, and a new study that started no trial is released (its name is free)."""
        self._started_at = time.monotonic()
        self._heartbeat = Heartbeat(self.cfg, self.record).start()
        if self.resumed:
            self._update(status=F.STUDY_RUNNING, reason=None)
        free_name = False
        try:
            yield self
        except BaseException as e:
            self._update(status=F.STUDY_INTERRUPTED, reason=one_line(e), quiet=True)
            free_name = not self.resumed and not self._trials_started
            raise
        finally:
            self._heartbeat.stop()
            if free_name:
                release(self.cfg)

    def start_trials(self, **fields) -> None:
        """Trials start now: status "running" with ``fields`` (dashboard, data alpha, trial count)
        and, resumed, the time of this resume. From here a failure keeps the study's folder."""
        if self.resumed:
            fields["resumed"] = self.record.get("resumed", []) + [now_iso()]
        self._update(status=F.STUDY_RUNNING, finished=None, results_path=self.cfg.experiment_path, **fields)
        self._trials_started = True

    def finish(self, saved: dict, out=sys.stdout) -> int:
        """The end: each trial's outcome from the state Tune saved ({trial_id: status, config,
        last_result}), the counts, the best per variant, the status, the closing text. Returns
        the exit status: 0 finished, 1 some trial errored, 130 trials left unfinished."""
        lost = sorted(tid for tid, t in saved.items() if t.get("lost"))
        if lost:   # Tune counts them, but nothing of them is on disk: named, never counted
            print(f"warning: {len(lost)} trial(s) Tune counts as ended have no folder under "
                  f"{self.cfg.experiment_path}, so they are not counted: {', '.join(lost)}", file=out)
            saved = {tid: t for tid, t in saved.items() if tid not in lost}
            self._update(lost_trials=lost)
        outcome = outcomes(saved, self.cfg.max_epochs)
        unfinished = sum(o == M.RUNNING for o in outcome.values())
        interrupted = bool(unfinished) or not saved
        self._update(status=F.STUDY_INTERRUPTED if interrupted else F.STUDY_FINISHED,
                     finished=None if interrupted else now_iso(),
                     reason=(f"{unfinished} trial(s) unfinished when Tune stopped" if unfinished else
                             "Tune saved no trial") if interrupted else None,
                     trial_status={tid: t["status"] for tid, t in saved.items()}, trial_outcome=outcome,
                     summary={k: sum(o == k for o in outcome.values()) for k in M.OUTCOMES},
                     best_per_variant=best_per_variant(saved, self.cfg.metric, outcome), **trial_notes(saved))
        print(summary_text(self.cfg, self.record, time.monotonic() - self._started_at), file=out)
        if interrupted:
            return 130
        return 1 if self.record["summary"][M.ERRORED] else 0

    def _update(self, quiet: bool = False, **fields) -> None:
        try:
            self._heartbeat.update(**fields)
        except OSError:
            if not quiet:   # while failing already: the first error is the one to report
                raise
