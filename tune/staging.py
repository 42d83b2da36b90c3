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
written if several do.
"""
from __future__ import annotations

import fnmatch
import functools
import glob
import json
import os
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

    def notes(self, done: bool) -> list[str]:
        out = []
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


def find_staging(cfg: StudyConfig, files: dict[str, int]) -> Optional[str]:
    states = sorted(f for f in files if os.sep not in f and fnmatch.fnmatch(f, F.EXPERIMENT_STATE_GLOB))
    if not states:
        return None
    pattern = os.path.join(glob.escape(ray_temp_dir()), "session_*", "artifacts", "*",
                           glob.escape(cfg.study_name), "driver_artifacts",
                           states[-1])
    found = glob.glob(pattern)
    return os.path.dirname(max(found, key=os.path.getmtime)) if found else None


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
    rep = Repair(staging=find_staging(cfg, files))
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
