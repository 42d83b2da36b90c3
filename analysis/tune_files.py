"""A study folder to raw rows: Ray Tune's per-trial files read tolerantly, without Ray or pandas.

Ray Tune documents a per-trial folder layout: ``params.json`` (the trial's config),
``result.json`` (one JSON object per reported result), ``progress.csv`` (the same results as a
table), ``error.txt`` (when the trial raised) and ``checkpoint_NNNNNN/`` folders. Reading those
files directly is faster than ``ExperimentAnalysis``/``ResultGrid`` (which need ``import ray``
and the pickled experiment state), and lets a damaged or still-running study load everything that
is valid: a torn last line of ``result.json`` is skipped instead of failing the whole study.
What could not be read is appended, as one line each, to the caller's ``skipped`` list.
"""
from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Optional

# Ray Tune's per-trial files and result keys, named once in plvae.study_files (loading never
# imports ray); re-exported here under the analysis's short names.
from plvae.study_files import (CHECKPOINT_PREFIX, CONFIG, DONE, ERROR_FILE, HOSTNAME, NODE_IP,  # noqa: F401
                               PARAMS_FILE, PROGRESS_FILE, RESULT_FILE, STUDY_FILE, TRIAL_FILES, TRIAL_ID)
from plvae.study_files import TIME_TOTAL_S as TIME_TOTAL
from plvae.study_files import TRAINING_ITERATION as ITERATION
from plvae.study_files import read_result_lines as parse_result_lines


def _is_trial_dir(d: Path) -> bool:
    return d.is_dir() and any((d / f).exists() for f in TRIAL_FILES)


def trial_dirs(root: Path) -> list[Path]:
    """Trial folders directly under a study folder (Tune's layout), sorted by name."""
    return sorted(d for d in root.iterdir() if not d.name.startswith(".") and _is_trial_dir(d))


def resolve_study_dir(path) -> Path:
    """The study folder for ``path``: the folder itself, or its only study sub-folder (so the
    Tune storage path of a one-study run works too). Anything else is a one-line error."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such study directory")
    if not p.is_dir():
        raise ValueError(f"{p} is not a study directory (it is a file); pass <storage_path>/<study_name>")
    if (p / STUDY_FILE).exists() or trial_dirs(p):
        return p
    subs = [d for d in sorted(p.iterdir()) if d.is_dir() and ((d / STUDY_FILE).exists() or trial_dirs(d))]
    if len(subs) == 1:
        return subs[0]
    if len(subs) > 1:
        raise ValueError(f"{p} holds {len(subs)} studies ({', '.join(d.name for d in subs)}); pass one of them")
    raise ValueError(f"{p} is not a Ray Tune study directory: no {STUDY_FILE} and no trial folders "
                     f"with {PARAMS_FILE} or {RESULT_FILE}")


def read_json_object(f: Path) -> dict:
    """A file holding one JSON object; OSError / ValueError otherwise."""
    obj = json.loads(f.read_text())
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def read_study_json(root: Path, skipped: list) -> dict:
    """study.json's content; {} when absent or unreadable (then said in skipped)."""
    f = root / STUDY_FILE
    if not f.exists():
        return {}
    try:
        return read_json_object(f)
    except (OSError, ValueError) as e:
        skipped.append(f"{STUDY_FILE} unreadable ({e}); statuses inferred from the trial files")
        return {}


def read_result_lines(f: Path) -> tuple[list[dict], list[int]]:
    """Parsed result.json lines and the (1-based) numbers of the lines that would not parse."""
    return parse_result_lines(f.read_text(errors="replace"))


def _cell(v: str):
    """A progress.csv cell back to a value: numbers (nan/inf included), booleans, '' = None."""
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return float(v)
    except ValueError:
        return v


def read_progress(f: Path) -> list[dict]:
    """progress.csv rows, dropping a torn last row (no trailing newline) and any row whose field
    count does not match the header (pandas would pad those with nan, which reads as divergence)."""
    try:
        lines = f.read_text(errors="replace").splitlines(keepends=True)
    except OSError:
        return []
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    reader = csv.reader(lines)
    header = next(reader, None)
    if not header or ITERATION not in header:
        return []
    rows = []
    for values in reader:
        if len(values) != len(header):
            continue
        row = {k: _cell(v) for k, v in zip(header, values)}
        if isinstance(row[ITERATION], float) and math.isfinite(row[ITERATION]):
            row[ITERATION] = int(row[ITERATION])
            rows.append(row)
    return rows


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested result dicts flattened with '/', as Tune's CSV logger does."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def trial_id_from_dirname(name: str, known: dict) -> str:
    """The trial id in a trial folder's name: a known id it contains, else Tune's default pattern."""
    for tid in known:
        if tid in name:
            return tid
    m = re.search(r"_([0-9a-f]{5}_\d{5})", name)  # Tune's default "<trainable>_<id>_<index>_..."
    return m.group(1) if m else name


def as_epoch(v) -> Optional[int]:
    """A training_iteration as an int >= 1, or None when it is not one."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f >= 1 and f == int(f) else None


def one_row_per_epoch(rows: list[dict], d: Path, skipped: list) -> list[dict]:
    """One row per epoch, sorted: a row whose training_iteration is missing or not a positive
    integer is skipped (with a warning naming the file), and an epoch reported twice - a trial
    restored from a checkpoint older than its last result repeats the epochs after it - keeps its
    latest row (file order: the one the restored trial wrote)."""
    by_epoch, bad = {}, 0
    for r in rows:
        e = as_epoch(r.get(ITERATION))
        if e is None:
            bad += ITERATION in r
            continue
        r[ITERATION] = e
        by_epoch[e] = r
    if bad:
        skipped.append(f"{d / RESULT_FILE}: {bad} line(s) with an invalid {ITERATION} skipped")
    repeated = len([r for r in rows if as_epoch(r.get(ITERATION)) is not None]) - len(by_epoch)
    if repeated:
        skipped.append(f"{d.name}: {repeated} repeated epoch(s) (a restore), kept the latest of each")
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_results(d: Path, skipped: list) -> list[dict]:
    """A trial folder's result rows, one per epoch: result.json, with the epochs a torn or
    missing result.json lacks taken from progress.csv."""
    rows, bad = [], []
    rf = d / RESULT_FILE
    if rf.exists():
        try:
            rows, bad = read_result_lines(rf)
        except OSError as e:
            skipped.append(f"{d.name}: {RESULT_FILE} unreadable ({e})")
    if bad:
        skipped.append(f"{d.name}: {len(bad)} unreadable line(s) in {RESULT_FILE} (line {', '.join(map(str, bad))})")
    pf = d / PROGRESS_FILE
    if not pf.exists():
        if rows:
            skipped.append(f"{d.name}: no {PROGRESS_FILE}")
    elif bad or not rows:
        # result.json torn or missing: take the epochs it lacks from progress.csv.
        have = {as_epoch(r.get(ITERATION)) for r in rows}
        extra = [r for r in read_progress(pf) if int(r[ITERATION]) not in have]
        if extra:
            skipped.append(f"{d.name}: {len(extra)} epoch(s) recovered from {PROGRESS_FILE}")
            rows.extend(extra)
    return one_row_per_epoch(rows, d, skipped)


def read_params(d: Path, rows: list[dict], skipped: list) -> Optional[dict]:
    """The trial's config: params.json, else the config a result row carries; None if neither."""
    params = None
    pj = d / PARAMS_FILE
    if pj.exists():
        try:
            params = read_json_object(pj)
        except (OSError, ValueError) as e:
            skipped.append(f"{d.name}: {PARAMS_FILE} unreadable ({e})")
    if params is None:
        params = next((r[CONFIG] for r in rows if isinstance(r.get(CONFIG), dict)), None)
        if params is None:
            skipped.append(f"{d.name}: skipped (no readable {PARAMS_FILE} and no config in {RESULT_FILE})")
    return params


def read_error_text(d: Path) -> Optional[str]:
    """error.txt's whole text (Tune appends one "Failure # N" section per failure), None when the
    trial never failed, '' when the file is there but unreadable."""
    ef = d / ERROR_FILE
    if not ef.exists():
        return None
    try:
        return ef.read_text(errors="replace")
    except OSError:
        return ""


def error_message(error_text: Optional[str]) -> Optional[str]:
    """The last line of an error.txt's text (the last exception), None when there is none."""
    if error_text is None:
        return None
    lines = [ln.strip() for ln in error_text.splitlines() if ln.strip()]
    return lines[-1] if lines else "error (error.txt empty or unreadable)"


def read_error(d: Path) -> Optional[str]:
    """The last line of error.txt (the exception), or None when the trial did not raise."""
    return error_message(read_error_text(d))


def last_checkpoint(d: Path) -> Optional[str]:
    """The trial's last checkpoint folder, or None."""
    checkpoints = sorted(c for c in d.glob(CHECKPOINT_PREFIX + "*") if c.is_dir())
    return str(checkpoints[-1]) if checkpoints else None


def history_rows(tid: str, rows: list[dict]) -> list[dict]:
    """Result rows as history rows: flattened, without the config, under the trial's id."""
    return [{TRIAL_ID: tid, **{k: v for k, v in flatten({k: v for k, v in r.items() if k != CONFIG}).items()
                               if k != TRIAL_ID}} for r in rows]
