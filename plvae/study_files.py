"""What a study leaves on disk, named once: Ray Tune's per-trial files and result keys, Tune's
trial states, the study's own statuses (study.json), and the one rule that turns them into a
trial's outcome (one of ``plvae.metrics.OUTCOMES``).

No Ray import: the driver (``tune``) and the analysis (``analysis``) both read these names here,
and neither spells them. The Tune names are those of Ray 2.60 (``ray.air.constants``,
``ray.tune.result``, ``ray.tune.experiment.trial``).
"""
from __future__ import annotations

import json
import math
import re
from typing import Optional, Union

from plvae import metrics as M

# ---------------------------------------------------------------------------- Tune's files
PARAMS_FILE = "params.json"        # the trial's config, written whole when it starts
RESULT_FILE = "result.json"        # one JSON object per reported result (one per epoch here)
PROGRESS_FILE = "progress.csv"     # the same results as a table
ERROR_FILE = "error.txt"           # appended at each failure: "Failure # N (occurred at DATE)" + the error
CHECKPOINT_PREFIX = "checkpoint_"  # checkpoint_NNNNNN/ folders in a trial folder
EXPERIMENT_STATE_PREFIX = "experiment_state"          # experiment_state-<date>.json: what a restore reads
EXPERIMENT_STATE_GLOB = EXPERIMENT_STATE_PREFIX + "-*.json"
TUNER_FILE = "tuner.pkl"           # Tune's saved Tuner (Tuner.restore needs it)
TRIAL_FILES = (PARAMS_FILE, RESULT_FILE, PROGRESS_FILE, ERROR_FILE)

# ---------------------------------------------------------------------------- Tune's result keys
TRAINING_ITERATION = "training_iteration"   # Tune counts reports from 1; one report per epoch here
TIME_TOTAL_S = "time_total_s"
DONE = "done"
TRIAL_ID = "trial_id"
NODE_IP = "node_ip"
HOSTNAME = "hostname"
CONFIG = "config"
DATE = "date"                               # the result's local time, "%Y-%m-%d_%H-%M-%S" (as error.txt's)

# ---------------------------------------------------------------------------- Tune's trial states
TUNE_PENDING = "PENDING"
TUNE_RUNNING = "RUNNING"
TUNE_PAUSED = "PAUSED"
TUNE_TERMINATED = "TERMINATED"
TUNE_ERROR = "ERROR"
TUNE_UNFINISHED = (TUNE_PENDING, TUNE_RUNNING, TUNE_PAUSED)
TUNE_STATES = TUNE_UNFINISHED + (TUNE_TERMINATED, TUNE_ERROR)

# ---------------------------------------------------------------------------- the study's own record
STUDY_FILE = "study.json"
STUDY_CLAIMED = "claimed"          # the folder is this driver's; Ray not started yet
STUDY_RUNNING = "running"          # the driver runs it (its heartbeat says whether it still lives)
STUDY_FINISHED = "finished"        # every trial ended
STUDY_INTERRUPTED = "interrupted"  # stopped with trials unfinished, or failed (study.json says why); --resume continues
STUDY_STATUSES = (STUDY_CLAIMED, STUDY_RUNNING, STUDY_FINISHED, STUDY_INTERRUPTED)
STUDY_UNFINISHED = (STUDY_CLAIMED, STUDY_RUNNING, STUDY_INTERRUPTED)

_FAILURE = re.compile(r"^Failure # (\d+) \(occurred at ([^)]*)\)", re.MULTILINE)


# ---------------------------------------------------------------------------- reading
def read_result_lines(text: Union[str, bytes]) -> tuple[list[dict], list[int]]:
    """A result.json's reported results, tolerantly: (the JSON objects in file order, the 1-based
    numbers of the lines skipped). A line cut short by a kill, or any line that is not a JSON
    object, is skipped and counted; blank lines are neither."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    rows, bad = [], []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad.append(i)
            continue
        if isinstance(obj, dict):
            rows.append(obj)
        else:
            bad.append(i)
    return rows, bad


def failures(error_text: Optional[str]) -> list[str]:
    """The times of the failures error.txt records (Tune appends one header per failure), oldest
    first; ``len()`` is the trial's number of failures, retried or not."""
    return [m.group(2) for m in _FAILURE.finditer(error_text or "")]


def epochs_reported(rows: list[dict]) -> int:
    """The highest training_iteration among the results (0 when none is a number)."""
    best = 0
    for r in rows:
        try:
            v = float(r.get(TRAINING_ITERATION))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v):
            best = max(best, int(v))
    return best


# ---------------------------------------------------------------------------- the outcome rule
def trial_outcome(tune_status: Optional[str], rows_or_last: Union[dict, list, None], max_epochs: Optional[int],
                  study_status: Optional[str] = None, *, error_text: Optional[str] = None) -> str:
    """The one outcome rule: one of plvae.metrics.OUTCOMES.

    ``tune_status``: Tune's state of the trial (TUNE_STATES), None when unknown (a folder loaded
    without study.json, or a trial study.json does not list); any other value counts as unknown.
    ``rows_or_last``: the trial's results (a list of dicts sorted by epoch) or only its last one.
    ``max_epochs``: the epochs planned, None when unknown. ``study_status``: study.json's status,
    when known. ``error_text``: error.txt's text, None when there is no error.txt ('' when it is
    there but unreadable).

    In this order, the first that applies:
    1. Tune says ERROR -> errored. Tune's final word: the trial raised more often than
       max_failures allowed.
    2. Any reported result diverged (plvae.metrics.is_diverged) -> diverged.
    3. It reported its last epoch (max_epochs) -> completed, whatever Tune says: TERMINATED, or
       still RUNNING/PENDING/PAUSED when the driver was killed after the last report. An
       error.txt beside it records a failure that was retried, not an outcome.
    4. Tune says TERMINATED -> early_stopped (the scheduler stopped it; an error.txt is again a
       retry), or completed when max_epochs is unknown (nothing says it stopped early).
    5. Tune says RUNNING, PENDING or PAUSED -> running.
    6. No Tune status:
       a. an error.txt whose last failure no result follows -> errored. Without result dates
          ("date") nothing can follow it, so an error.txt then means errored;
       b. the study is claimed, running or interrupted and the last result is not ``done`` -> running;
       c. the last result is ``done``, or the study finished -> early_stopped (completed when
          max_epochs is unknown);
       d. otherwise -> running.
    """
    rows = [rows_or_last] if isinstance(rows_or_last, dict) else list(rows_or_last or [])
    epochs = epochs_reported(rows)
    stopped = M.EARLY_STOPPED if max_epochs is not None else M.COMPLETED
    if tune_status == TUNE_ERROR:
        return M.ERRORED
    if any(M.is_diverged(r) for r in rows):
        return M.DIVERGED_OUTCOME
    if max_epochs is not None and epochs >= max_epochs:
        return M.COMPLETED
    if tune_status == TUNE_TERMINATED:
        return stopped
    if tune_status in TUNE_UNFINISHED:
        return M.RUNNING
    if error_text is not None and not _reported_after(rows, failures(error_text)):
        return M.ERRORED
    done = bool(rows and rows[-1].get(DONE, False))
    if study_status in STUDY_UNFINISHED and not done:
        return M.RUNNING
    if done or study_status == STUDY_FINISHED:
        return stopped
    return M.RUNNING


def _reported_after(rows: list[dict], failed_at: list[str]) -> bool:
    """Whether some result is dated after the last failure (the trial was retried and went on).
    Both dates are Tune's local "%Y-%m-%d_%H-%M-%S", which sorts as text."""
    if not failed_at:
        return False
    last = failed_at[-1]
    return any(isinstance(r.get(DATE), str) and r[DATE] > last for r in rows)
