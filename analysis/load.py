"""Load a study's results directory into two DataFrames, without Ray.

Ray Tune documents a per-trial folder layout: ``params.json`` (the trial's config),
``result.json`` (one JSON object per reported result), ``progress.csv`` (the same results as a
table), ``error.txt`` (when the trial raised) and ``checkpoint_NNNNNN/`` folders. Reading those
files directly is faster than ``ExperimentAnalysis``/``ResultGrid`` (which need ``import ray``
and the pickled experiment state), works on a laptop with nothing but pandas, and lets a damaged
or still-running study load everything that is valid: a torn last line of ``result.json`` is
skipped instead of failing the whole study. ``study.json`` (written by ``tune/run_study.py``)
adds what Tune's files do not say: the study's metric, its status and every trial's final status.

Trial status is one of:
- ``completed``: ran all ``max_epochs`` epochs;
- ``early_stopped``: the scheduler (ASHA) stopped it before ``max_epochs``, without divergence
  or error;
- ``diverged``: reported ``diverged == 1`` (a non-finite loss) at some epoch, or a non-finite loss;
- ``errored``: raised (``error.txt``, or ``ERROR`` in study.json's ``trial_status``);
- ``running``: unfinished when the files were read (the study is still running, or was
  interrupted before the trial ended).
"""
from __future__ import annotations

import csv
import json
import math
import re
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from plvae import metrics as M
from plvae.config import TrialConfig

# Ray Tune's documented per-trial files and result keys (ray.air.constants / ray.tune.result);
# spelled here once so that loading never imports ray.
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.csv"
ERROR_FILE = "error.txt"
CHECKPOINT_PREFIX = "checkpoint_"
STUDY_FILE = "study.json"
TRIAL_FILES = (PARAMS_FILE, RESULT_FILE, PROGRESS_FILE, ERROR_FILE)

TRIAL_ID = "trial_id"
ITERATION = "training_iteration"   # Tune counts reports from 1; one report per epoch here
TIME_TOTAL = "time_total_s"
TIME_THIS_ITER = "time_this_iter_s"
DONE = "done"
NODE_IP = "node_ip"
HOSTNAME = "hostname"
CONFIG = "config"

# Status names (the trials table's ``status`` column): the outcomes defined once in plvae.metrics,
# which the study runner's study.json uses too.
COMPLETED = M.COMPLETED
EARLY_STOPPED = M.EARLY_STOPPED
DIVERGED_STATUS = M.DIVERGED_OUTCOME
ERRORED = M.ERRORED
RUNNING = M.RUNNING
STATUSES = M.OUTCOMES

# Tune's own trial states, as study.json's trial_status records them.
TUNE_ERROR = "ERROR"
TUNE_TERMINATED = "TERMINATED"
TUNE_UNFINISHED = ("RUNNING", "PENDING", "PAUSED")

# The column naming each trial's study when several are loaded together (load_studies).
STUDY = "study"
# Swept parameters first, in this order, when present.
KEY_PARAMS = (STUDY, "variant", "gamma", "latent_dim", "min_decay", "clip_dim", "decay_rate", "lr",
              "seed", "dataset", "net", "kl_coeff", "batch_size", "data_seed")
# Validation losses whose best (minimum) over epochs is kept per trial.
LOSS_METRICS = (M.VAL_LOSS, M.VAL_RECON, M.VAL_RECON_MU, M.TRAIN_LOSS)


class StudyLoadWarning(UserWarning):
    """Some of a study's files could not be read (or the study is unfinished); the rest loaded."""


def final(name: str) -> str:
    """Column of the trials table holding a metric's last reported value."""
    return f"final_{name}"


def best(name: str) -> str:
    """Column of the trials table holding a loss's minimum over epochs."""
    return f"best_{name}"


def initial(name: str) -> str:
    """Pre-training value of a metric (``initial_val_loss``), as the model logs it."""
    return M.INITIAL_PREFIX + name


@dataclass
class Study:
    """A loaded study: ``trials`` (one row per trial) and ``history`` (one row per trial per epoch).

    ``meta`` is study.json's content (``{}`` when absent); ``skipped`` lists what could not be
    read. The history carries the swept parameters too, so a learning curve can be grouped
    without a merge.
    """

    trials: pd.DataFrame
    history: pd.DataFrame
    path: Optional[Path] = None
    meta: dict = field(default_factory=dict)
    skipped: tuple = ()

    @property
    def name(self) -> str:
        return str(self.meta.get("study_name") or (self.path.name if self.path else "study"))

    @property
    def metric(self) -> str:
        """The study's own metric (study.json) or the project's default."""
        return str(self.meta.get("metric") or M.DEFAULT_STUDY_METRIC)

    @property
    def status(self) -> str:
        return str(self.meta.get("status") or "unknown")

    @property
    def swept(self) -> list[str]:
        """Trial parameters that take more than one value in this study (variant always)."""
        return swept_params(self.trials)

    @property
    def data_alpha(self) -> dict:
        """Measured power-law exponent of each dataset's spectrum (study.json), keyed by dataset."""
        return dict(self.meta.get("data_alpha") or {})

    def metrics(self) -> list[str]:
        """Every numeric metric reported in the history."""
        skip = {TRIAL_ID, ITERATION, DONE, *self.trials.columns}
        return [c for c in self.history.columns
                if c not in skip and pd.api.types.is_numeric_dtype(self.history[c])]

    @classmethod
    def from_history(cls, history: pd.DataFrame, params: Optional[pd.DataFrame] = None,
                     meta: Optional[dict] = None, errors: Optional[dict] = None) -> "Study":
        """Build a study from DataFrames, summarising trials exactly as ``load_study`` does.

        ``history``: one row per trial per epoch with ``trial_id``, ``training_iteration`` and
        metrics; ``params``: one row per trial with ``trial_id`` and config fields (or put the
        config fields in ``history``). ``errors``: {trial_id: message} for errored trials.
        For notebooks and tests with constructed data.
        """
        meta = dict(meta or {})
        errors = dict(errors or {})
        history = history.copy()
        if params is None:
            fields = [c for c in history.columns if c in TrialConfig.field_names()]
            params = history[[TRIAL_ID, *fields]].drop_duplicates(TRIAL_ID)
            history = history.drop(columns=fields)
        records = []
        for row in params.to_dict("records"):
            tid = row.pop(TRIAL_ID)
            rows = history[history[TRIAL_ID] == tid].sort_values(ITERATION).to_dict("records")
            records.append(_summarise(tid, row, rows, meta, error=errors.get(tid)))
        return _assemble(records, history.to_dict("records"), meta, path=None, skipped=())


# ---------------------------------------------------------------------------------- loading

def load_study(path, warn: bool = True) -> Study:
    """Read a study directory (``<storage_path>/<study_name>``) into a :class:`Study`.

    Everything valid is loaded; what is not (torn result lines, missing files, unreadable
    study.json, unfinished trials) is listed in ``study.skipped`` and, if ``warn``, in ONE
    :class:`StudyLoadWarning`. A path that is not a study raises FileNotFoundError/ValueError.
    """
    root = resolve_study_dir(path)
    skipped: list[str] = []
    meta = _read_study_json(root, skipped)
    trial_status = dict(meta.get("trial_status") or {})
    pairs = []
    for d in trial_dirs(root):
        got = _read_trial(d, trial_status, meta, skipped)
        if got is not None:
            pairs.append(got)
    if not pairs:
        raise ValueError(f"{root} is a study directory but no trial in it could be read: "
                         + ("; ".join(skipped) or "no trial folders yet"))
    pairs = _dedupe(pairs, skipped)
    records = [r for r, _ in pairs]
    lost = sorted(set(trial_status) - {r[TRIAL_ID] for r in records})
    if lost:   # study.json lists every trial the study ran: a folder lost since is named
        skipped.append(f"{len(lost)} trial(s) listed in {STUDY_FILE} have no readable folder: {', '.join(lost)}")
    history_rows = [row for _, rows in pairs for row in rows]
    unfinished = sum(r["status"] == RUNNING for r in records)
    if meta.get("status") == "running":
        skipped.append(f"study is still running: {unfinished} of {len(records)} trials unfinished")
    elif unfinished:
        skipped.append(f"{unfinished} of {len(records)} trials unfinished (status {RUNNING!r}; "
                       f"study status {meta.get('status', 'unknown')!r})")
    study = _assemble(records, history_rows, meta, path=root, skipped=tuple(skipped))
    if warn and skipped:
        warnings.warn(f"{root}: loaded {len(records)} trials; skipped or incomplete: "
                      + "; ".join(skipped), StudyLoadWarning, stacklevel=2)
    return study


def _dedupe(pairs: list, skipped: list) -> list:
    """One (record, history rows) pair per trial id: two folders with one id (a copied or
    restarted trial) would double its history. The folder with the most epochs wins."""
    best_of: dict = {}
    for pair in pairs:
        tid = pair[0][TRIAL_ID]
        if tid not in best_of or pair[0]["epochs"] > best_of[tid][0]["epochs"]:
            best_of[tid] = pair
    if len(best_of) < len(pairs):
        kept = {id(p) for p in best_of.values()}
        skipped.append("duplicate trial ids, kept the folder with the most epochs; dropped: "
                       + ", ".join(Path(p[0]["trial_dir"] or "?").name for p in pairs if id(p) not in kept))
    return list(best_of.values())


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


def _read_study_json(root: Path, skipped: list) -> dict:
    f = root / STUDY_FILE
    if not f.exists():
        return {}
    try:
        meta = json.loads(f.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        return meta
    except (OSError, ValueError) as e:
        skipped.append(f"{STUDY_FILE} unreadable ({e}); statuses inferred from the trial files")
        return {}


def _read_result_lines(f: Path) -> tuple[list[dict], list[int]]:
    """Parsed result.json lines and the (1-based) numbers of the lines that would not parse."""
    rows, bad = [], []
    with f.open("r", errors="replace") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
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


def _read_progress(f: Path) -> list[dict]:
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


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested result dicts flattened with '/', as Tune's CSV logger does."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _trial_id_from_dirname(name: str, known: dict) -> str:
    for tid in known:
        if tid in name:
            return tid
    m = re.search(r"_([0-9a-f]{5}_\d{5})", name)  # Tune's default "<trainable>_<id>_<index>_..."
    return m.group(1) if m else name


def _read_trial(d: Path, trial_status: dict, meta: dict, skipped: list):
    rows, bad = [], []
    rf = d / RESULT_FILE
    if rf.exists():
        try:
            rows, bad = _read_result_lines(rf)
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
        have = {_epoch(r.get(ITERATION)) for r in rows}
        extra = [r for r in _read_progress(pf) if int(r[ITERATION]) not in have]
        if extra:
            skipped.append(f"{d.name}: {len(extra)} epoch(s) recovered from {PROGRESS_FILE}")
            rows.extend(extra)
    rows = _epochs(rows, d, skipped)

    params = None
    pj = d / PARAMS_FILE
    if pj.exists():
        try:
            params = json.loads(pj.read_text())
            if not isinstance(params, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            skipped.append(f"{d.name}: {PARAMS_FILE} unreadable ({e})")
            params = None
    if params is None:
        params = next((r[CONFIG] for r in rows if isinstance(r.get(CONFIG), dict)), None)
        if params is None:
            skipped.append(f"{d.name}: skipped (no readable {PARAMS_FILE} and no config in {RESULT_FILE})")
            return None

    tid = next((str(r[TRIAL_ID]) for r in rows if r.get(TRIAL_ID)), None) \
        or _trial_id_from_dirname(d.name, trial_status)
    error = None
    ef = d / ERROR_FILE
    if ef.exists():
        try:
            lines = [ln.strip() for ln in ef.read_text(errors="replace").splitlines() if ln.strip()]
            error = lines[-1] if lines else "error"
        except OSError:
            error = "error (error.txt unreadable)"
    checkpoints = sorted(c for c in d.glob(CHECKPOINT_PREFIX + "*") if c.is_dir())
    history = [{TRIAL_ID: tid, **{k: v for k, v in _flat({k: v for k, v in r.items() if k != CONFIG}).items()
                                  if k != TRIAL_ID}} for r in rows]
    record = _summarise(tid, params, history, meta, error=error, tune_status=trial_status.get(tid),
                        trial_dir=str(d), last_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    if not rows and record["status"] != RUNNING:
        skipped.append(f"{d.name}: no results")
    return record, history


def _epoch(v) -> Optional[int]:
    """A training_iteration as an int >= 1, or None when it is not one."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f >= 1 and f == int(f) else None


def _epochs(rows: list[dict], d: Path, skipped: list) -> list[dict]:
    """One row per epoch, sorted: a row whose training_iteration is missing or not a positive
    integer is skipped (with a warning naming the file), and an epoch reported twice - a trial
    restored from a checkpoint older than its last result repeats the epochs after it - keeps its
    latest row (file order: the one the restored trial wrote)."""
    by_epoch, bad = {}, 0
    for r in rows:
        e = _epoch(r.get(ITERATION))
        if e is None:
            bad += ITERATION in r
            continue
        r[ITERATION] = e
        by_epoch[e] = r
    if bad:
        skipped.append(f"{d / RESULT_FILE}: {bad} line(s) with an invalid {ITERATION} skipped")
    repeated = len([r for r in rows if _epoch(r.get(ITERATION)) is not None]) - len(by_epoch)
    if repeated:
        skipped.append(f"{d.name}: {repeated} repeated epoch(s) (a restore), kept the latest of each")
    return [by_epoch[e] for e in sorted(by_epoch)]


# ------------------------------------------------------------------------------ summarising

def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _summarise(tid: str, params: dict, rows: list[dict], meta: dict, error=None, tune_status=None,
               trial_dir=None, last_checkpoint=None) -> dict:
    """One trials-table record from a trial's params and its result rows (sorted by epoch)."""
    params = dict(params)
    epochs = int(max((_num(r.get(ITERATION)) for r in rows), default=0) or 0)
    planned = params.get("max_epochs", meta.get("max_epochs"))
    max_epochs = int(planned) if math.isfinite(_num(planned)) else None

    def series(name):
        return np.array([_num(r.get(name)) for r in rows], dtype=float)

    diverged_at = None
    for r in rows:  # plvae's one definition: the model's flag, or a non-finite loss actually reported
        if M.is_diverged(r):
            diverged_at = int(_num(r.get(ITERATION)))
            break
    last = rows[-1] if rows else {}
    done = bool(last.get(DONE, False)) if rows else False

    if error is not None or tune_status == TUNE_ERROR:
        status = ERRORED
    elif diverged_at is not None:
        status = DIVERGED_STATUS
    elif max_epochs is not None and epochs >= max_epochs:
        status = COMPLETED
    elif tune_status in TUNE_UNFINISHED:
        status = RUNNING
    elif tune_status == TUNE_TERMINATED:
        status = EARLY_STOPPED if max_epochs is not None else COMPLETED
    elif meta.get("status") in ("running", "interrupted") and not done:
        status = RUNNING
    elif done or meta.get("status") == "finished":
        status = EARLY_STOPPED if max_epochs is not None else COMPLETED
    else:
        status = RUNNING
    if status == ERRORED and error is None:
        error = "error (Tune status ERROR)"

    rec: dict[str, Any] = {TRIAL_ID: tid, "status": status, "epochs": epochs, "max_epochs": max_epochs,
                           "diverged": diverged_at is not None, "diverged_epoch": diverged_at}
    names = sorted({k for r in rows for k in r}, key=str)
    for name in (initial(M.VAL_LOSS), initial(M.VAL_RECON_MU),
                 *[n for n in names if n.startswith(M.INITIAL_PREFIX)]):
        vals = series(name)
        rec[name] = float(vals[np.isfinite(vals)][0]) if np.isfinite(vals).any() else math.nan
    for name in M.EPOCH_METRICS:
        if name == M.DIVERGED:
            continue
        vals = series(name)
        rec[final(name)] = float(vals[-1]) if len(vals) else math.nan
        if name in LOSS_METRICS:
            finite = vals[np.isfinite(vals)]
            rec[best(name)] = float(finite.min()) if len(finite) else math.nan
    rec[TIME_TOTAL] = _num(last.get(TIME_TOTAL))
    rec["node"] = last.get(NODE_IP) or last.get(HOSTNAME)
    rec["last_checkpoint"] = last_checkpoint
    rec["error"] = error
    rec["tune_status"] = tune_status
    rec["trial_dir"] = trial_dir
    rec["_params"] = params
    return rec


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Give TrialConfig fields their declared dtypes (float, int, bool, str; Optional -> nullable);
    lists become tuples and dicts JSON strings, so every column is hashable for grouping."""
    hints = typing.get_type_hints(TrialConfig)
    for col in df.columns:
        s = df[col]
        if s.map(lambda v: isinstance(v, (list, tuple))).any():
            df[col] = s.map(lambda v: tuple(v) if isinstance(v, (list, tuple)) else v)
            continue
        if s.map(lambda v: isinstance(v, dict)).any():
            df[col] = s.map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
            continue
        hint = hints.get(col)
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Union else hint
        try:
            if base is float:
                df[col] = pd.to_numeric(s, errors="coerce").astype(float)
            elif base is int:
                v = pd.to_numeric(s, errors="coerce")
                df[col] = v.astype("int64") if v.notna().all() else v.astype("Int64")
            elif base is bool and s.notna().all():
                df[col] = s.astype(bool)
        except (TypeError, ValueError):
            pass
    return df


def swept_params(trials: pd.DataFrame) -> list[str]:
    """Config fields with more than one distinct value among the trials (variant always), and the
    ``study`` column of several studies loaded together, first: each study is its own context."""
    fields = [c for c in trials.columns if c in TrialConfig.field_names() or c in ("variant", STUDY)]
    out = []
    for c in fields:
        try:
            n = trials[c].nunique(dropna=False)
        except TypeError:
            n = trials[c].astype(str).nunique()
        if c == "variant" or n > 1:
            out.append(c)
    return sorted(out, key=lambda c: (KEY_PARAMS.index(c) if c in KEY_PARAMS else len(KEY_PARAMS), c))


def _assemble(records: list[dict], history_rows: list[dict], meta: dict, path, skipped) -> Study:
    params = pd.DataFrame([r.pop("_params") for r in records])
    outcome = pd.DataFrame(records)
    params = _typed(params)
    params = params.drop(columns=[c for c in params.columns if c in outcome.columns])
    outcome["max_epochs"] = pd.array(outcome["max_epochs"], dtype="Int64")
    outcome["diverged_epoch"] = pd.array(outcome["diverged_epoch"], dtype="Int64")
    trials = pd.concat([outcome.reset_index(drop=True), params.reset_index(drop=True)], axis=1)
    swept = swept_params(trials)
    outcome_cols = [c for c in outcome.columns if c != TRIAL_ID and c not in swept]
    rest = [c for c in params.columns if c not in swept]
    trials = trials[[TRIAL_ID, *swept, *outcome_cols, *rest]]
    trials["status"] = pd.Categorical(trials["status"], categories=STATUSES)
    trials = trials.sort_values([c for c in (*swept, TRIAL_ID) if c in trials.columns],
                                kind="stable", na_position="last").reset_index(drop=True)

    history = pd.DataFrame(history_rows)
    if history.empty:
        history = pd.DataFrame(columns=[TRIAL_ID, ITERATION])
    for c in history.columns:
        if c not in (TRIAL_ID, NODE_IP, HOSTNAME, "date") and history[c].dtype == object:
            conv = pd.to_numeric(history[c], errors="coerce")
            if conv.notna().sum() == history[c].notna().sum():
                history[c] = conv
    history = history.drop(columns=[c for c in swept if c in history.columns])
    history = history.merge(trials[[TRIAL_ID, *swept]], on=TRIAL_ID, how="left")
    history[ITERATION] = pd.to_numeric(history[ITERATION], errors="coerce").astype("int64")
    history = history.sort_values([TRIAL_ID, ITERATION], kind="stable").reset_index(drop=True)
    lead = [TRIAL_ID, *swept, ITERATION]
    history = history[lead + [c for c in history.columns if c not in lead]]
    return Study(trials=trials, history=history, path=path, meta=meta, skipped=tuple(skipped))


def load_studies(paths, warn: bool = True) -> Study:
    """Several studies as one :class:`Study`: their trials and histories concatenated, with a
    ``study`` column (each study's name) that ``compare`` treats as part of the context, so every
    variant is compared with the baseline of its own study, and the tables list the studies side by side.

    Each study loads as ``load_study`` loads it (one warning per study with something skipped). Trial
    ids that two studies share (a copied study) are prefixed ``<study>:`` in both, so no history mixes;
    two studies with one name are told apart by their parent folder. ``meta`` holds each study's own
    study.json under ``studies``; the metric and primary comparisons are kept when all studies agree.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    studies = [load_study(p, warn=warn) for p in paths]
    if not studies:
        raise ValueError("paths=[] is invalid; allowed: one or more study directories")
    roots = [s.path.resolve() for s in studies]
    for i, root in enumerate(roots):
        if root in roots[:i]:
            raise ValueError(f"{root} is given twice; allowed: each study once")
    names = [s.name for s in studies]
    if len(set(names)) < len(names):
        names = [f"{s.path.parent.name}/{n}" if names.count(n) > 1 else n for s, n in zip(studies, names)]
    if len(set(names)) < len(names):
        names = [str(s.path) for s in studies]
    ids = [set(s.trials[TRIAL_ID]) for s in studies]
    shared = set().union(*[a & b for i, a in enumerate(ids) for b in ids[i + 1:]])
    trials, history, skipped = [], [], []
    for s, name in zip(studies, names):
        t, h = s.trials.copy(), s.history.copy()
        if shared:
            t[TRIAL_ID] = f"{name}:" + t[TRIAL_ID].astype(str)
            h[TRIAL_ID] = f"{name}:" + h[TRIAL_ID].astype(str)
        t.insert(1, STUDY, name)
        trials.append(t)
        history.append(h.drop(columns=[c for c in s.swept if c in h.columns]))
        skipped += [f"{name}: {x}" for x in s.skipped]
    if shared:
        skipped.append(f"{len(shared)} trial id(s) occur in more than one study: every id is prefixed <study>:")
    trials = pd.concat(trials, ignore_index=True)
    trials["status"] = pd.Categorical(trials["status"], categories=STATUSES)
    swept = swept_params(trials)
    lead = [TRIAL_ID, *swept]
    trials = trials[lead + [c for c in trials.columns if c not in lead]]
    trials = trials.sort_values([c for c in (*swept, TRIAL_ID) if c in trials.columns],
                                kind="stable", na_position="last").reset_index(drop=True)
    history = pd.concat(history, ignore_index=True)
    history = history.drop(columns=[c for c in swept if c in history.columns])
    history = history.merge(trials[lead], on=TRIAL_ID, how="left")
    history = history.sort_values([TRIAL_ID, ITERATION], kind="stable").reset_index(drop=True)
    hlead = [*lead, ITERATION]
    history = history[hlead + [c for c in history.columns if c not in hlead]]
    metas = [s.meta for s in studies]

    def agreed(get, default):
        values = [get(m) for m in metas]
        return values[0] if all(v == values[0] for v in values) else default

    data_alpha = {}
    for m in metas:   # keyed by dataset: the first study's measurement of a dataset is kept
        for k, v in (m.get("data_alpha") or {}).items():
            data_alpha.setdefault(k, v)
    meta = {"study_name": " + ".join(names), "studies": dict(zip(names, metas)), "paths": [str(r) for r in roots],
            "metric": agreed(lambda m: m.get("metric"), None),
            "status": agreed(lambda m: m.get("status"), "mixed"),
            "study_config": {"primary": agreed(lambda m: (m.get("study_config") or {}).get("primary") or [], [])},
            "data_alpha": data_alpha}
    for key in ("scheduler", "search", "preset", "max_epochs"):
        meta[key] = agreed(lambda m, key=key: m.get(key), "mixed" if key != "max_epochs" else None)
    return Study(trials=trials, history=history, path=None, meta=meta, skipped=tuple(skipped))


def trial_config(study: Study, trial_id: str) -> TrialConfig:
    """The TrialConfig a trial ran with, rebuilt from its row of the trials table (for
    re-running a trial or loading its data in a notebook)."""
    row = study.trials.loc[study.trials[TRIAL_ID] == trial_id]
    if row.empty:
        raise ValueError(f"trial_id={trial_id!r} is not in this study")
    row = row.iloc[0]
    hints = typing.get_type_hints(TrialConfig)
    d = {}
    for name in TrialConfig.field_names():
        if name not in row.index:
            continue
        v = row[name]
        if name == "extra" and isinstance(v, str):
            v = json.loads(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif v is None or (not isinstance(v, (list, dict)) and pd.isna(v)):
            v = None
        elif isinstance(v, np.generic):
            v = v.item()
        if v is None and typing.get_origin(hints[name]) is not typing.Union:
            continue  # a missing required field: keep TrialConfig's default
        if hints[name] is float and isinstance(v, int):
            v = float(v)
        d[name] = v
    return TrialConfig.from_dict(d)
