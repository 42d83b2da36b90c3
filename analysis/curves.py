"""A trial's learning curve and its per-trial quantities (see ``analysis.compare``'s docstring).

``trial_quantities`` measures one curve; ``TrialCurves`` holds a trial's curves (epoch 0 = before
training where logged) and gives every per-trial quantity as of any comparison epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from plvae import metrics as M

from analysis.columns import (AUC, BEST, CLOCK, DISTORTION, DIVERGED, EPOCHS_TO_TARGET, FINAL, FIRST_EPOCH_RATIO,
                              MAX_INCREASE, PER_TRIAL, RATE, SECONDS_TO_TARGET, initial)
from analysis.tune_files import ITERATION, TIME_TOTAL


def _column(h: pd.DataFrame, name: str) -> np.ndarray:
    """A history column as floats (nan where missing or not a number; all nan when absent)."""
    return pd.to_numeric(h[name], errors="coerce").to_numpy(dtype=float) if name in h else np.full(len(h), np.nan)


def study_clock(history: pd.DataFrame) -> str:
    """The clock of seconds to target: ``train_time_s`` (seconds from the trial's first training
    step, so a reused worker's warm-up is not charged to whichever trial it ran first) where every
    reported row has it, else Tune's ``time_total_s`` (studies from before train_time_s). One
    clock for the whole study: never one trial's seconds on one clock against another's."""
    if M.TRAIN_TIME_S in history.columns and len(history) and \
            np.isfinite(pd.to_numeric(history[M.TRAIN_TIME_S], errors="coerce").to_numpy(dtype=float)).all():
        return M.TRAIN_TIME_S
    return TIME_TOTAL


def trial_curve(hist: pd.DataFrame, metric: str, init: float, clock: str = TIME_TOTAL):
    """Epochs, values and times (on `clock`) of one trial, with the pre-training value as epoch 0."""
    h = hist.sort_values(ITERATION)
    x = h[ITERATION].to_numpy(dtype=float)
    y, t = _column(h, metric), _column(h, clock)
    if math.isfinite(init):
        x, y, t = np.r_[0.0, x], np.r_[init, y], np.r_[0.0, t]
    return x, y, t


def trial_quantities(x, y, t, target: float, diverged: bool, has_initial: bool) -> dict:
    """The per-trial speed and stability quantities of one curve (see the module docstring)."""
    out = dict.fromkeys(PER_TRIAL + (BEST,), math.nan)
    if len(y) == 0:
        return out
    finite = np.isfinite(y)
    reached = np.flatnonzero(finite & (y <= target)) if not math.isnan(target) else np.array([], int)
    out[EPOCHS_TO_TARGET] = float(x[reached[0]]) if len(reached) else math.inf
    out[SECONDS_TO_TARGET] = float(t[reached[0]]) if len(reached) else math.inf
    failed = diverged or not finite.all()
    if finite.any():
        out[BEST] = float(y[finite].min())
    if has_initial and len(y) > 1 and y[0] != 0:
        out[FIRST_EPOCH_RATIO] = float(y[1] / y[0]) if np.isfinite(y[1]) else math.inf
    if failed:  # a diverged run is worse than any finished one: +inf, so no group sheds its bad seeds
        out[FINAL] = out[AUC] = math.inf
    else:
        out[FINAL] = float(y[-1])
        if len(y) > 1 and y[0] != 0 and x[-1] > x[0]:
            out[AUC] = float(np.trapezoid(y, x) / ((x[-1] - x[0]) * y[0]))
    if failed:
        out[MAX_INCREASE] = math.inf
    elif len(y) > 1:
        prev = np.abs(y[:-1])
        rel = np.where(prev > 0, np.diff(y) / np.where(prev > 0, prev, 1.0), 0.0)
        out[MAX_INCREASE] = float(max(0.0, rel.max()))
    return out


@dataclass
class TrialCurves:
    """One trial's curves (epoch 0 = before training where logged) and when it ended."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    rate: np.ndarray
    distortion: np.ndarray
    last: float            # last epoch reported
    diverged_at: float     # epoch it diverged at (inf: never)
    has_initial: bool

    def at(self, epoch: float, target: float) -> dict:
        """Every per-trial quantity as of `epoch` (the comparison epoch)."""
        keep = self.x <= epoch
        diverged = self.diverged_at <= epoch
        q = trial_quantities(self.x[keep], self.y[keep], self.t[keep], target, diverged, self.has_initial)
        reported = np.flatnonzero(keep & (self.x > 0))
        i = reported[-1] if len(reported) else None
        ok = i is not None and not diverged
        q[RATE] = float(self.rate[i]) if ok else math.nan
        q[DISTORTION] = float(self.distortion[i]) if ok else math.nan
        q[DIVERGED] = bool(diverged)
        clock = self.t[keep]
        q[CLOCK] = float(clock[-1]) if len(clock) else math.nan
        return q


def trial_curves(rec: dict, hist: pd.DataFrame, metric: str, clock: str = TIME_TOTAL) -> TrialCurves:
    """A trial's curves from its trials-table record and its history rows (seconds on `clock`)."""
    init = rec.get(initial(metric), math.nan)
    init = float(init) if init is not None and not pd.isna(init) else math.nan
    x, y, t = trial_curve(hist, metric, init, clock)
    h = hist.sort_values(ITERATION)

    def col(name):
        v = _column(h, name)
        return np.r_[np.nan, v] if math.isfinite(init) else v

    last = float(h[ITERATION].max()) if len(h) else 0.0
    d = rec.get("diverged_epoch")
    diverged_at = float(d) if rec.get("diverged") and d is not None and not pd.isna(d) else (
        last if rec.get("diverged") else math.inf)
    return TrialCurves(x, y, t, col(M.VAL_RATE), col(M.VAL_RECON_MU), last, diverged_at, math.isfinite(init))
