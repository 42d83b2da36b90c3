"""The baseline's rate-distortion frontier over beta (kl_coeff), and a group's distortion gap to it.

Where the study sweeps the baseline's beta, its frontier is traced per frontier context (the
context without kl_coeff); a group's *distortion gap* is, per seed, its distortion minus the same
seed's frontier interpolated (in log rate) at the group's rate: a lower distortion bought with a
higher rate is a move along the curve, not a gain.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import stats
from analysis.columns import BETA, DISTORTION, DIVERGED, RATE, high, low, median, n_of
from analysis.groups import contexts, match


def frontier(per_trial: pd.DataFrame, baseline: str, frontier_keys: list, n_resamples: int, seed: int
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline's rate-distortion points over beta, per frontier context (contexts without
    kl_coeff) where beta takes two or more values: (median points with CIs, the per-trial points).

    ``interpolation_error``: each interior point predicted from its two neighbours, relative to
    its distortion. A convex frontier lies below its chords, so a point exactly on the curve
    shows a small negative gap; gaps of this size are interpolation error, not evidence."""
    if BETA not in per_trial.columns or per_trial.empty:
        return pd.DataFrame(), pd.DataFrame()
    base = per_trial[per_trial["variant"] == baseline]
    rows, keep = [], []
    for ctx, fb in contexts(base, frontier_keys):
        if fb[BETA].nunique() < 2:
            continue
        keep.append(fb)
        points = []
        for i, (beta, bg) in enumerate(fb.groupby(BETA, sort=True)):
            rec = {**dict(zip(frontier_keys, ctx)), BETA: float(beta), "n": len(bg),
                   n_of(DIVERGED): int(bg[DIVERGED].sum()), "interpolation_error": math.nan}
            for q in (RATE, DISTORTION):
                v = bg[q][np.isfinite(bg[q].astype(float))]
                e = stats.bootstrap_ci(v, median, n_resamples=n_resamples, seed=seed + i)
                rec[q], rec[low(q)], rec[high(q)] = e.value, e.low, e.high
            points.append(rec)
        _interpolation_errors(points)
        rows += points
    return pd.DataFrame(rows), (pd.concat(keep) if keep else pd.DataFrame())


def _interpolation_errors(points: list) -> None:
    """Each interior point's distortion against the one its neighbours predict, relative."""
    by_rate = sorted((p for p in points if math.isfinite(p[RATE]) and math.isfinite(p[DISTORTION])),
                     key=lambda p: p[RATE])
    for a, p, b in zip(by_rate, by_rate[1:], by_rate[2:]):
        pred = frontier_at(np.array([a[RATE], b[RATE]]), np.array([a[DISTORTION], b[DISTORTION]]), p[RATE])
        if math.isfinite(pred) and p[DISTORTION]:
            p["interpolation_error"] = (p[DISTORTION] - pred) / p[DISTORTION]


def frontier_at(rates: np.ndarray, distortions: np.ndarray, rate: float) -> float:
    """The frontier's distortion at `rate`, interpolated linearly in log rate between the points
    (monotone in rate after sorting); nan outside the points' rate range (no extrapolation)."""
    ok = np.isfinite(rates) & np.isfinite(distortions) & (rates > 0)
    r, d = rates[ok], distortions[ok]
    if len(r) < 2 or not (math.isfinite(rate) and rate > 0) or rate < r.min() or rate > r.max():
        return math.nan
    order = np.argsort(r)
    return float(np.interp(math.log(rate), np.log(r[order]), d[order]))


def distortion_gaps(g: pd.DataFrame, frontier_trials: pd.DataFrame, frontier_keys: list, rec: dict,
                    reps: list) -> pd.DataFrame:
    """Per seed: the group's distortion minus the same seed's baseline frontier at the group's rate."""
    if frontier_trials.empty:
        return pd.DataFrame(columns=["gap", "rel_gap"])
    fb = match(frontier_trials, frontier_keys, [rec[k] for k in frontier_keys])
    out = []
    for r in g.to_dict("records"):
        same_seed = match(fb, reps, [r[k] for k in reps]) if reps else fb
        f = frontier_at(same_seed[RATE].to_numpy(float), same_seed[DISTORTION].to_numpy(float), r[RATE])
        if math.isfinite(f) and math.isfinite(r[DISTORTION]):
            out.append({"gap": r[DISTORTION] - f, "rel_gap": (r[DISTORTION] - f) / f if f else math.nan})
    return pd.DataFrame(out, columns=["gap", "rel_gap"])
