"""Load a study's results directory into two DataFrames, without Ray.

``tune_files`` reads Ray Tune's per-trial files; this module summarises each trial into one
record and assembles the :class:`Study`'s tables. ``study.json`` (written by ``tune/run_study.py``)
adds what Tune's files do not say: the study's metric, its status and every trial's final status.

Trial status is plvae.study_files.trial_outcome's (the one rule, shared with tune's study.json),
one of:
- ``completed``: ran all ``max_epochs`` epochs;
- ``early_stopped``: the scheduler (ASHA) stopped it before ``max_epochs``, without divergence
  or error;
- ``diverged``: reported ``diverged == 1`` (a non-finite loss) at some epoch, or a non-finite loss;
- ``errored``: raised and was not retried to the end (``ERROR`` in study.json's ``trial_status``,
  or, without one, an ``error.txt`` that no result follows);
- ``running``: unfinished when the files were read (the study is still running, or was
  interrupted before the trial ended).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from plvae import metrics as M
from plvae import study_files as SF
from plvae.config import TrialConfig

from analysis.columns import LOSS_METRICS, STUDY, best, final, initial, num
from analysis.phases import phase_labels
from analysis.trial_fields import swept_params, trial_config, typed
from analysis.tune_files import (DONE, HOSTNAME, ITERATION, NODE_IP, STUDY_FILE, TIME_TOTAL, TRIAL_ID,
                                 error_message, history_rows, last_checkpoint, read_error_text, read_params,
                                 read_results, read_study_json, resolve_study_dir, trial_dirs,
                                 trial_id_from_dirname)

# Names other modules (and tests) import from here; defined in columns / tune_files.
__all__ = ["STATUSES", "STUDY", "STUDY_FILE", "Study", "StudyLoadWarning", "TRIAL_ID", "best", "final", "initial",
           "load_studies", "load_study", "swept_params", "trial_config"]

# The trials table's ``status`` column: the outcomes defined once in plvae.metrics.
STATUSES = M.OUTCOMES


class StudyLoadWarning(UserWarning):
    """Some of a study's files could not be read (or the study is unfinished); the rest loaded."""


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
    meta = read_study_json(root, skipped)
    tune_states = dict(meta.get("trial_status") or {})
    pairs = []
    for d in trial_dirs(root):
        got = _read_trial(d, tune_states, meta, skipped)
        if got is not None:
            pairs.append(got)
    if not pairs:
        raise ValueError(f"{root} is a study directory but no trial in it could be read: "
                         + ("; ".join(skipped) or "no trial folders yet"))
    pairs = _dedupe(pairs, skipped)
    records = [r for r, _ in pairs]
    lost = sorted(set(tune_states) - {r[TRIAL_ID] for r in records})
    if lost:   # study.json lists every trial the study ran: a folder lost since is named
        skipped.append(f"{len(lost)} trial(s) listed in {STUDY_FILE} have no readable folder: {', '.join(lost)}")
    history_rows = [row for _, rows in pairs for row in rows]
    unfinished = sum(r["status"] == M.RUNNING for r in records)
    if meta.get("status") == "running":
        skipped.append(f"study is still running: {unfinished} of {len(records)} trials unfinished")
    elif unfinished:
        skipped.append(f"{unfinished} of {len(records)} trials unfinished (status {M.RUNNING!r}; "
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


def _read_trial(d: Path, tune_status: dict, meta: dict, skipped: list):
    """(trials-table record, history rows) of one trial folder; None when it has no config."""
    rows = read_results(d, skipped)
    params = read_params(d, rows, skipped)
    if params is None:
        return None
    tid = next((str(r[TRIAL_ID]) for r in rows if r.get(TRIAL_ID)), None) \
        or trial_id_from_dirname(d.name, tune_status)
    history = history_rows(tid, rows)
    record = _summarise(tid, params, history, meta, error=read_error_text(d), tune_status=tune_status.get(tid),
                        trial_dir=str(d), last_checkpoint=last_checkpoint(d))
    if not rows and record["status"] != M.RUNNING:
        skipped.append(f"{d.name}: no results")
    return record, history


# ------------------------------------------------------------------------------ summarising

def _summarise(tid: str, params: dict, rows: list[dict], meta: dict, error=None, tune_status=None,
               trial_dir=None, last_checkpoint=None) -> dict:
    """One trials-table record from a trial's params and its result rows (sorted by epoch).
    ``error``: error.txt's text (None when the trial never failed); its failures are the trial's
    ``retries`` when it went on, its outcome only by plvae.study_files.trial_outcome's rule."""
    params = dict(params)
    epochs = int(max((num(r.get(ITERATION)) for r in rows), default=0) or 0)
    planned = params.get("max_epochs", meta.get("max_epochs"))
    max_epochs = int(planned) if math.isfinite(num(planned)) else None
    diverged_at = None
    for r in rows:  # plvae's one definition: the model's flag, or a non-finite loss actually reported
        if M.is_diverged(r):
            diverged_at = int(num(r.get(ITERATION)))
            break
    last = rows[-1] if rows else {}
    status = SF.trial_outcome(tune_status, rows, max_epochs, meta.get("status"), error_text=error)
    failed = SF.failures(error)
    message = error_message(error) if status == M.ERRORED else None
    if status == M.ERRORED and message is None:
        message = f"error (Tune status {SF.TUNE_ERROR})"
    rec: dict[str, Any] = {TRIAL_ID: tid, "status": status, "epochs": epochs, "max_epochs": max_epochs,
                           "diverged": diverged_at is not None, "diverged_epoch": diverged_at,
                           "retries": max(len(failed) - (status == M.ERRORED), 0)}
    rec.update(_metric_values(rows))
    rec[TIME_TOTAL] = num(last.get(TIME_TOTAL))
    rec["node"] = last.get(NODE_IP) or last.get(HOSTNAME)
    rec["last_checkpoint"] = last_checkpoint
    rec["error"] = message
    rec["tune_status"] = tune_status
    rec["trial_dir"] = trial_dir
    rec["_params"] = params
    return rec


def _metric_values(rows: list[dict]) -> dict:
    """Initial values, final values and (for losses) the best value of a trial's metrics."""
    def series(name):
        return np.array([num(r.get(name)) for r in rows], dtype=float)

    rec = {}
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
    return rec


def _assemble(records: list[dict], history_rows: list[dict], meta: dict, path, skipped) -> Study:
    params = pd.DataFrame([r.pop("_params") for r in records])
    outcome = pd.DataFrame(records)
    params = typed(params)
    params = params.drop(columns=[c for c in params.columns if c in outcome.columns])
    outcome["max_epochs"] = pd.array(outcome["max_epochs"], dtype="Int64")
    outcome["diverged_epoch"] = pd.array(outcome["diverged_epoch"], dtype="Int64")
    trials = pd.concat([outcome.reset_index(drop=True), params.reset_index(drop=True)], axis=1)
    swept = swept_params(trials)
    outcome_cols = [c for c in outcome.columns if c != TRIAL_ID and c not in swept]
    rest = [c for c in params.columns if c not in swept]
    trials = trials[[TRIAL_ID, *swept, *outcome_cols, *rest]]

    history = pd.DataFrame(history_rows)
    if history.empty:
        history = pd.DataFrame(columns=[TRIAL_ID, ITERATION])
    for c in history.columns:
        if c not in (TRIAL_ID, NODE_IP, HOSTNAME, "date") and history[c].dtype == object:
            conv = pd.to_numeric(history[c], errors="coerce")
            if conv.notna().sum() == history[c].notna().sum():
                history[c] = conv
    trials, history = _frame(trials, history, swept)
    return Study(trials=trials, history=history, path=path, meta=meta, skipped=tuple(skipped))


def _frame(trials: pd.DataFrame, history: pd.DataFrame, swept: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two tables in their order: trials sorted by the swept parameters, the history carrying
    them (merged from the trials table) and sorted by trial and epoch, key columns first."""
    trials["status"] = pd.Categorical(trials["status"], categories=STATUSES)
    trials = trials.sort_values([c for c in (*swept, TRIAL_ID) if c in trials.columns],
                                kind="stable", na_position="last").reset_index(drop=True)
    history = history.drop(columns=[c for c in swept if c in history.columns])
    history = history.merge(trials[[TRIAL_ID, *swept]], on=TRIAL_ID, how="left")
    history[ITERATION] = pd.to_numeric(history[ITERATION], errors="coerce").astype("int64")
    history = history.sort_values([TRIAL_ID, ITERATION], kind="stable").reset_index(drop=True)
    lead = [TRIAL_ID, *swept, ITERATION]
    return trials, history[lead + [c for c in history.columns if c not in lead]]


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
    names = _unique_names(studies)
    labels, protocol = phase_labels([s.meta for s in studies], names)
    ids = [set(s.trials[TRIAL_ID]) for s in studies]
    shared = set().union(*[a & b for i, a in enumerate(ids) for b in ids[i + 1:]])
    trials, history, skipped = [], [], []
    for s, name, label in zip(studies, names, labels):
        t, h = s.trials.copy(), s.history.copy()
        if shared:
            t[TRIAL_ID] = f"{name}:" + t[TRIAL_ID].astype(str)
            h[TRIAL_ID] = f"{name}:" + h[TRIAL_ID].astype(str)
        t.insert(1, STUDY, label)
        trials.append(t)
        history.append(h.drop(columns=[c for c in s.swept if c in h.columns]))
        skipped += [f"{name}: {x}" for x in s.skipped]
    if shared:
        skipped.append(f"{len(shared)} trial id(s) occur in more than one study: every id is prefixed <study>:")
    trials = pd.concat(trials, ignore_index=True)
    swept = swept_params(trials)
    lead = [TRIAL_ID, *swept]
    trials = trials[lead + [c for c in trials.columns if c not in lead]]
    trials, history = _frame(trials, pd.concat(history, ignore_index=True), swept)
    meta = _merged_meta([s.meta for s in studies], names, roots)
    if protocol is not None:
        meta["tuning"] = protocol
    return Study(trials=trials, history=history, path=None, meta=meta, skipped=tuple(skipped))



def _unique_names(studies: list) -> list:
    """Each study's name; two with one name are told apart by their parent folder, else their path."""
    names = [s.name for s in studies]
    if len(set(names)) < len(names):
        names = [f"{s.path.parent.name}/{n}" if names.count(n) > 1 else n for s, n in zip(studies, names)]
    if len(set(names)) < len(names):
        names = [str(s.path) for s in studies]
    return names


def _merged_meta(metas: list, names: list, roots: list) -> dict:
    """One study.json-like meta for studies loaded together: each study's own under ``studies``,
    a field kept where all agree ("mixed" where they do not), data_alpha merged per dataset."""
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
    return meta
