"""Finish the copy a killed driver left half done, before --resume hands the study back to Tune.

Ray Tune (2.60) writes a study's driver-side files - the experiment state that --resume restores,
and each trial's params.json, result.json and progress.csv - into a staging folder on the driver's
machine, ``<ray temp dir>/session_*/artifacts/<timestamp>/<study>/driver_artifacts``, and copies
that folder to the storage path every few seconds. A driver killed in the middle of that copy
leaves files in the storage path truncated (seen: a finished trial's params.json and result.json
at 0 bytes, while the experiment state already said TERMINATED - so Tune would not run it again
and its record would be lost). The staging folder outlives the driver (Ray does not delete a
session's folder), so a resume on the same machine copies again every file that differs: the copy
Tune would have made had the driver lived. Trial records still torn after that (the staging folder
is gone: another machine, a cleaned /tmp) are named, so nobody mistakes them for results.

Which staging folder: the one holding the experiment-state file that Tune will restore (the newest
``experiment_state-*.json`` in the storage path, by name, as Tune picks it), the most recently
written if several do. Tune unpickles what the experiment state holds, and Ray's temp dir is
world-writable, so a folder is used only if this user owns it and everything in it, nothing from
the session folder down is writable by group or others or a link, and it names this study's own
run (its folder's timestamp, and the start time the stored state records). Any other is named
and left alone.
"""
from __future__ import annotations

import fnmatch
import functools
import glob
import json
import os
import stat
import sys
from dataclasses import dataclass, field
from typing import Optional

from plvae import study_files as F
from tune.storage import is_uri, join_storage, listing, read_bytes, write_bytes
from tune.study_config import StudyConfig

TRIAL_RECORD = (F.PARAMS_FILE, F.RESULT_FILE)   # what analysis and the resume report read per trial


def ray_temp_dir() -> str:
    """Where a Ray started on this machine keeps its sessions (Ray's own rule, without importing ray:
    RAY_TMPDIR, else TMPDIR on Linux, else /tmp; then ``ray``)."""
    base = os.environ.get("RAY_TMPDIR") or (os.environ.get("TMPDIR") if sys.platform.startswith("linux") else None)
    return os.path.join(base or "/tmp", "ray")


@dataclass
class Repair:
    staging: Optional[str] = None                         # the staging folder found, if any
    files: list[str] = field(default_factory=list)        # files that differ (copied by apply())
    torn: list[str] = field(default_factory=list)         # trial folders whose record stays torn
    refused: list[str] = field(default_factory=list)      # staging folders not used, and why

    def notes(self, done: bool) -> list[str]:
        out = [f"resume: not copying from a staging folder this user did not create: {why}" for why in self.refused]
        if self.files:
            trials = sorted({f.split(os.sep)[0] for f in self.files if os.sep in f})
            verb = "copied" if done else "would copy"
            out.append(f"resume: {verb} {len(self.files)} file(s) that the killed driver had not finished copying "
                       f"from Ray's staging folder {self.staging}" + (f" (trials: {_names(trials)})" if trials else ""))
        if self.torn:
            out.append(f"resume: {len(self.torn)} trial record(s) are torn and Ray's staging folder for this study is "
                       f"not on this machine, so they cannot be restored (their checkpoints are kept; analysis skips "
                       f"them): {_names(self.torn)}")
        return out


def trusted(path: str, below: str) -> Optional[str]:
    """Why ``path`` cannot be trusted as this user's own (None when it can): every folder from
    ``below`` (exclusive: Ray makes its temp and session folders world-writable) down to ``path``,
    and ``path`` itself, must be a real folder or file (no link), owned by this user and not
    writable by group or others - else another local user could have planted or swapped it."""
    rel = os.path.relpath(path, below)
    if rel.startswith(os.pardir):
        return f"{path} is not under {below}"
    cur, uid = below, os.geteuid()
    for part in rel.split(os.sep):
        cur = os.path.join(cur, part)
        try:
            st = os.lstat(cur)
        except OSError as e:
            return f"{cur}: {e.strerror}"
        if stat.S_ISLNK(st.st_mode):
            return f"{cur} is a symbolic link"
        if st.st_uid != uid:
            return f"{cur} is owned by uid {st.st_uid}, not this user ({uid})"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{cur} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _same_run(staged_state: str, stored_state: Optional[bytes]) -> Optional[str]:
    """Why a staging folder's experiment state is not this study's Tune run (None when it is): the
    folder's timestamp must be the state's (Tune names both after its run), and where the stored
    copy still parses, both must record one start time (runner_data, plain JSON: nothing unpickled)."""
    stamp = os.path.basename(staged_state)[len(F.EXPERIMENT_STATE_PREFIX) + 1:-len(".json")]
    folder = os.path.basename(os.path.dirname(os.path.dirname(os.path.dirname(staged_state))))
    if folder != stamp:
        return f"{staged_state} lies in the folder of run {folder}, not {stamp}"
    try:
        theirs = json.loads(_bytes(staged_state))["runner_data"]["_start_time"]
        ours = json.loads(stored_state or b"")["runner_data"]["_start_time"]
    except (OSError, ValueError, KeyError, TypeError):
        return None   # the stored copy is torn (what the repair is for): the checks above stand
    return None if theirs == ours else f"{staged_state} records another run (started {theirs}, not {ours})"


def find_staging(cfg: StudyConfig, files: dict[str, int], refused: Optional[list] = None,
                 stored=None) -> Optional[str]:
    """The staging folder of this study's run on this machine (the newest that passes), or None.
    A candidate that fails ``trusted`` or ``_same_run`` is skipped and said in ``refused``."""
    states = sorted(f for f in files if os.sep not in f and fnmatch.fnmatch(f, F.EXPERIMENT_STATE_GLOB))
    if not states:
        return None
    temp = ray_temp_dir()
    pattern = os.path.join(glob.escape(temp), "session_*", "artifacts", "*",
                           glob.escape(cfg.study_name), "driver_artifacts",
                           states[-1])
    stored_state = stored(states[-1]) if stored else None
    for found in sorted(glob.glob(pattern), key=os.path.getmtime, reverse=True):
        session = os.path.join(temp, os.path.relpath(found, temp).split(os.sep)[0])
        owner = os.lstat(session).st_uid
        why = (f"{session} is owned by uid {owner}, not this user ({os.geteuid()})" if owner != os.geteuid() else None)
        why = why or trusted(found, session) or _same_run(found, stored_state) or _walk_refusal(os.path.dirname(found))
        if why is None:
            return os.path.dirname(found)
        if refused is not None:
            refused.append(why)
    return None


def _walk_refusal(staging: str) -> Optional[str]:
    """Why a file or folder inside the staging folder cannot be trusted (None when all can)."""
    for dirpath, dirs, names in os.walk(staging):
        for name in dirs + names:
            why = trusted(os.path.join(dirpath, name), staging)
            if why:
                return why
    return None


def _torn(text: Optional[bytes], name: str) -> bool:
    """A record cut short: params.json is written whole when a trial starts, so empty or invalid is
    torn; result.json is empty until the first report is copied (which a slow copy can leave so
    for a running trial), so only a line that is not JSON - a copy cut mid-line - is torn."""
    if not text or not text.strip():
        return name == F.PARAMS_FILE
    if name != F.PARAMS_FILE:
        return bool(F.read_result_lines(text)[1])
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


def plan_repair(cfg: StudyConfig) -> Repair:
    """What the staging folder would restore, and which trial records would stay torn."""
    path = cfg.experiment_path
    files = listing(path)
    stored = functools.cache(lambda rel: read_bytes(join_storage(path, rel)))   # each stored file read once
    rep = Repair()
    rep.staging = find_staging(cfg, files, rep.refused, stored)
    if rep.staging:
        for dirpath, _, names in os.walk(rep.staging):
            for name in names:
                rel = os.path.relpath(os.path.join(dirpath, name), rep.staging)
                src = os.path.join(dirpath, name)
                if files.get(rel) != os.path.getsize(src) or stored(rel) != _bytes(src):
                    rep.files.append(rel)
    after = set(rep.files)
    trials = sorted({f.split(os.sep)[0] for f in files if f.count(os.sep) == 1 and f.endswith(TRIAL_RECORD)})
    for trial in trials:
        for name in TRIAL_RECORD:
            rel = os.path.join(trial, name)
            if rel not in after and rel in files and _torn(stored(rel), name):
                rep.torn.append(trial)
                break
    return rep


def apply(cfg: StudyConfig, rep: Repair) -> None:
    """Copy the differing files from the staging folder (atomically on a local path)."""
    for rel in rep.files:
        dst = join_storage(cfg.experiment_path, rel)
        if not is_uri(dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
        write_bytes(dst, _bytes(os.path.join(rep.staging, rel)))


def finish_interrupted_copy(cfg: StudyConfig, dry_run: bool = False) -> list[str]:
    """Plan and (unless dry_run) apply the repair; the notes to print."""
    rep = plan_repair(cfg)
    if not dry_run:
        apply(cfg, rep)
    return rep.notes(done=not dry_run)


def _names(names: list[str], shown: int = 10) -> str:
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
