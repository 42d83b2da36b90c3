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
from analysis.columns import (BETA, DISTORTION, DIVERGED, FROM_SURVIVORS, FRONTIER_MIN_FINISHED, RATE, high, low,
                              median, n_of)
from analysis.groups import contexts, match


def frontier(per_trial: pd.DataFrame, baseline: str, frontier_keys: list, n_resamples: int, seed: int
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The baseline's rate-distortion points over beta, per frontier context (contexts without
    kl_coeff) where beta takes two or more values: (median points with CIs, the per-trial points).

    A point is traced where at least FRONTIER_MIN_FINISHED (8 in 10) of its baseline seeds finished;
    the per-trial points keep only those betas. Where fewer than two betas qualify, the whole context
    is kept but flagged ``from_survivors`` (its medians come from the seeds that did not diverge and
    need not be monotone): gaps to it are reported, never used in a declared test.

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
        points = [_point(frontier_keys, ctx, beta, bg, n_resamples) for beta, bg in fb.groupby(BETA, sort=True)]
        traced = [p[BETA] for p in points if not p[FROM_SURVIVORS]]
        if len(traced) >= 2:
            keep.append(fb[fb[BETA].astype(float).isin(traced)].assign(**{FROM_SURVIVORS: False}))
        else:
            keep.append(fb.assign(**{FROM_SURVIVORS: True}))
        _interpolation_errors(points)
        rows += points
    return pd.DataFrame(rows), (pd.concat(keep) if keep else pd.DataFrame())


def _point(frontier_keys: list, ctx: tuple, beta, bg: pd.DataFrame, n_resamples: int) -> dict:
    """One beta's median rate and distortion (content-seeded CIs) and how many of its seeds finished."""
    finished = int((~bg[DIVERGED].astype(bool)).sum())
    rec = {**dict(zip(frontier_keys, ctx)), BETA: float(beta), "n": len(bg), n_of(DIVERGED): len(bg) - finished,
           "finished": finished, FROM_SURVIVORS: finished < FRONTIER_MIN_FINISHED * len(bg),
           "interpolation_error": math.nan}
    for q in (RATE, DISTORTION):
        v = bg[q][np.isfinite(bg[q].astype(float))]
        e = stats.content_bootstrap_ci(v, median, n_resamples=n_resamples)
        rec[q], rec[low(q)], rec[high(q)] = e.value, e.low, e.high
    return rec


def _interpolation_errors(points: list) -> None:
    """Each interior point's distortion against the one its neighbours predict, relative."""
    by_rate = sorted((p for p in points if not p[FROM_SURVIVORS] and math.isfinite(p[RATE]) and math.isfinite(p[DISTORTION])),
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
    cols = ["gap", "rel_gap", FROM_SURVIVORS]
    if frontier_trials.empty:
        return pd.DataFrame(columns=cols)
    fb = match(frontier_trials, frontier_keys, [rec[k] for k in frontier_keys])
    survivors = bool(fb[FROM_SURVIVORS].any()) if len(fb) else False
    out = []
    for r in g.to_dict("records"):
        same_seed = match(fb, reps, [r[k] for k in reps]) if reps else fb
        f = frontier_at(same_seed[RATE].to_numpy(float), same_seed[DISTORTION].to_numpy(float), r[RATE])
        if math.isfinite(f) and math.isfinite(r[DISTORTION]):
            out.append({"gap": r[DISTORTION] - f, "rel_gap": (r[DISTORTION] - f) / f if f else math.nan,
                        FROM_SURVIVORS: survivors})
    return pd.DataFrame(out, columns=cols)


def frontier_notes(groups: pd.DataFrame, front: pd.DataFrame, frontier_keys: list, min_seeds: int) -> list:
    """How many groups fall outside the traced frontier, and which frontier points come from survivors."""
    if front.empty or groups.empty:
        return []
    ctxs = {tuple(r) for r in front[frontier_keys].itertuples(index=False)} if frontier_keys else {()}
    inside = np.array([tuple(r) in ctxs for r in groups[frontier_keys].itertuples(index=False)] if frontier_keys
                      else [True] * len(groups), dtype=bool)
    placed = groups[~groups["is_baseline"].astype(bool) & inside]
    outside = int((placed["n_gap"] < min_seeds).sum())
    surv = int(placed[FROM_SURVIVORS].astype(bool).sum())
    out = [f"{outside} of {len(placed)} group(s) fall outside the baseline frontier's traced rate range (fewer "
           f"than {min_seeds} seeds inside): no distortion gap tested for them."]
    if front[FROM_SURVIVORS].any() or surv:
        out.append(f"{int(front[FROM_SURVIVORS].sum())} frontier point(s) have fewer than "
                   f"{FRONTIER_MIN_FINISHED:.0%} of the baseline's seeds finished (from survivors): not traced; "
                   f"{surv} group gap(s) measured against a frontier from survivors are exploratory only.")
    return out
