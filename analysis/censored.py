"""Comparisons where some runs have no value: time to a target that some runs never reach, and a
final value that a diverged run does not have (issue 19).

Why these and not the ranks in analysis.stats:
- A run that never reaches the target is right-censored at its budget: it took longer than the
  budget, by an unknown amount. Coding it as ``inf`` and taking x - y makes inf - inf = 0, so a
  variant that never gets there can only differ on the pairs where the baseline did, and at ten
  seeds the test cannot say "slower". ``gehan_paired`` scores every run against every other with
  Gehan's generalised Wilcoxon rule (a comparison counts only where censoring leaves no doubt),
  then tests the within-pair score differences by flipping signs: swapping the two runs of a pair
  only swaps their scores, so the null distribution is exact. Exact enumeration up to 16 pairs
  (written out with numpy: scipy.stats.permutation_test enumerates the same 2^16 flips ~50x
  slower), Monte Carlo seeded from the data above. Where the seeds do not pair: the log-rank test
  (scipy.stats.logrank).
- The speed-up is the ratio of Kaplan-Meier median steps (``speedup``), with a bootstrap over pairs.
  The KM median is written out, vectorised over resamples: scipy.stats.ecdf gives the same curve
  (the tests check they agree) but one sample per call, ~1 ms, and a CI needs thousands.
- Final quality is compared only on pairs where both runs finished (``finished_pairs``), with the
  number of such pairs stated: a diverged run ranked below every finite loss would let a few
  baseline divergences outweigh a variant that is 100x worse on every seed where both finished.
  Divergence itself is compared separately, by ``stats.mcnemar_exact``; the two never fold into one.

Sign convention everywhere: x is the variant, y the baseline; direction +1 means x larger (later
to the target: slower; a higher loss: worse), -1 smaller, 0 neither.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from analysis.stats import (CONFIDENCE, N_RESAMPLES, CoveredEstimate, DirectedTest, Estimate, content_seed,
                            median_ci)

# The default target for time to target (issue 19), one rule for analysis.compare and analysis.tuned:
# the value TARGET_REACH (8 in 10) of the baseline's seeds have reached by TARGET_FRACTION (3/4) of
# the budget. A plain median of the final value is reached by about half the seeds, so a variant
# that never gets there could differ from the baseline on half the pairs at most.
TARGET_FRACTION = 0.75
TARGET_REACH = 0.8
MAX_EXACT_PAIRS = 16  # 2^16 sign flips: exact enumeration, ~0.1 s (measured 144 ms at 16 pairs)
N_FLIPS = 9999  # Monte Carlo sign flips above that: p has a resolution of 1e-4


def target_epoch(budget: float, fraction: float = TARGET_FRACTION) -> int:
    """The epoch the target is read at: ``fraction`` of the budget, rounded, at least 1."""
    return max(1, round(fraction * budget))


def reach_target(best_by_seed, reach: float = TARGET_REACH) -> float:
    """The smallest value that a share ``reach`` of the seeds have reached: the ``reach`` quantile
    (inverted CDF: an observed value) of each seed's best value by the target epoch; a seed with no
    finite value (diverged) has reached nothing, +inf. nan for no seeds; +inf when too few finished."""
    b = np.asarray(best_by_seed, dtype=float).ravel()
    if len(b) == 0:
        return math.nan
    return float(np.quantile(np.where(np.isfinite(b), b, np.inf), reach, method="inverted_cdf"))


def censor(times, budget) -> tuple[np.ndarray, np.ndarray]:
    """(time, reached) from times with ``inf`` for "never reached": a run that never reached the
    target is censored at ``budget`` (a scalar or one per run: the steps it ran). nan stays nan."""
    t = np.asarray(times, dtype=float).ravel()
    reached = np.isfinite(t)
    return np.where(reached | np.isnan(t), t, np.broadcast_to(np.asarray(budget, dtype=float), t.shape)), reached


def _pairs(time_x, reached_x, time_y, reached_y):
    """The four arrays with every pair holding a nan dropped, in a canonical (sorted) order."""
    tx, ty = np.asarray(time_x, dtype=float).ravel(), np.asarray(time_y, dtype=float).ravel()
    rx, ry = np.asarray(reached_x, dtype=bool).ravel(), np.asarray(reached_y, dtype=bool).ravel()
    if not len(tx) == len(rx) == len(ty) == len(ry):
        raise ValueError(f"pairs={len(tx)},{len(rx)},{len(ty)},{len(ry)} is invalid; allowed: four arrays "
                         "of one length (time_x, reached_x, time_y, reached_y)")
    keep = ~(np.isnan(tx) | np.isnan(ty))
    tx, rx, ty, ry = tx[keep], rx[keep], ty[keep], ry[keep]
    order = np.lexsort((ry, ty, rx, tx))
    return tx[order], rx[order], ty[order], ry[order]


def _sample(time, reached):
    """One sample's (time, reached) without nan, sorted by time (events first at a tie)."""
    t, r = np.asarray(time, dtype=float).ravel(), np.asarray(reached, dtype=bool).ravel()
    if len(t) != len(r):
        raise ValueError(f"reached={len(r)} values is invalid; allowed: one per time ({len(t)})")
    keep = ~np.isnan(t)
    t, r = t[keep], r[keep]
    order = np.lexsort((~r, t))
    return t[order], r[order]


def gehan_scores(time, reached) -> np.ndarray:
    """Gehan's score of each run against all the others: how many surely reached earlier minus how
    many surely reached later. j is surely earlier than i when j reached at t_j and either i
    reached later (t_j < t_i) or i was censored no earlier (t_j <= c_i); two censored runs, or a run
    censored before the other reached, are not compared."""
    t, r = np.asarray(time, dtype=float), np.asarray(reached, dtype=bool)
    ti, tj = t[:, None], t[None, :]
    earlier = r[None, :] & ((tj < ti) | (~r[:, None] & (tj <= ti)))  # earlier[i, j]: j surely before i
    return earlier.sum(axis=1) - earlier.sum(axis=0)


def sign_flip_test(d, max_exact: int = MAX_EXACT_PAIRS, n_flips: int = N_FLIPS, seed: int | None = None,
                   name: str = "sign-flip") -> DirectedTest:
    """Two-sided paired permutation test of sum(d) against its sign-flip distribution: exact over all
    2^n flips of the n non-zero values for n <= max_exact, else Monte Carlo (p = (1 + hits) /
    (1 + n_flips)) seeded by ``seed`` or the content of d. ``n`` in the result counts the non-zero
    values, so ``stats.min_sign_flip_p(n)`` is its exact floor. nan is dropped; no inf allowed."""
    d = np.asarray(d, dtype=float).ravel()
    d = d[~np.isnan(d)]
    if not np.all(np.isfinite(d)):
        raise ValueError("d=inf is invalid; allowed: finite scores (censored times go through gehan_paired)")
    if len(d) == 0:
        return DirectedTest(name, math.nan, math.nan, 0, 0, True)
    d = d[d != 0]  # flipping a zero changes nothing: n counts the informative pairs, p >= 2 / 2^n
    n, total = len(d), float(d.sum())
    if n == 0:
        return DirectedTest(name, 0.0, 1.0, 0, 0, True)
    tol = 1e-9 * max(1.0, float(np.abs(d).sum()))
    exact = n <= max_exact
    if exact:
        signs = 1 - 2 * ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1)
        p = float(np.mean(np.abs(signs @ d) >= abs(total) - tol))
    else:
        rng = np.random.default_rng(content_seed(d) if seed is None else seed)
        flips = rng.choice(np.array([-1.0, 1.0]), size=(n_flips, n)) @ d
        p = float((1 + np.sum(np.abs(flips) >= abs(total) - tol)) / (1 + n_flips))
    direction = 0 if abs(total) <= tol else int(np.sign(total))
    return DirectedTest(name, total, min(1.0, p), direction, n, exact)


def gehan_paired(time_x, reached_x, time_y, reached_y, max_exact: int = MAX_EXACT_PAIRS,
                 n_flips: int = N_FLIPS) -> DirectedTest:
    """Paired test of time to target valid under right-censoring: Gehan scores over all 2n runs,
    the within-pair differences score_x - score_y tested by ``sign_flip_test``. statistic: the sum
    of those differences (> 0: x later, i.e. slower); direction +1 slower, -1 faster. A variant that
    never reaches the target while the baseline does in all 10 pairs gets p = 2/2^10 = 0.002.
    ``n``: the pairs with a non-zero score difference (both censored is a tie and not counted).
    Assumes both runs of a pair had the same chance to be censored (the same budget)."""
    tx, rx, ty, ry = _pairs(time_x, reached_x, time_y, reached_y)
    scores = gehan_scores(np.r_[tx, ty], np.r_[rx, ry])
    return sign_flip_test(scores[:len(tx)] - scores[len(tx):], max_exact, n_flips, name="gehan-paired")


def logrank(time_x, reached_x, time_y, reached_y) -> DirectedTest:
    """Unpaired log-rank test (scipy.stats.logrank) for runs whose seeds do not pair. statistic:
    scipy's z (< 0: x reaches the target less often than expected, i.e. later); direction +1 when
    x is slower. No run reached the target in either sample: nothing to compare, p = 1."""
    (tx, rx), (ty, ry) = _sample(time_x, reached_x), _sample(time_y, reached_y)
    n = len(tx) + len(ty)
    if len(tx) == 0 or len(ty) == 0:
        return DirectedTest("log-rank", math.nan, math.nan, 0, n, False)
    if not (rx.any() or ry.any()):
        return DirectedTest("log-rank", 0.0, 1.0, 0, n, False)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        res = sps.logrank(sps.CensoredData(uncensored=tx[rx], right=tx[~rx]),
                          sps.CensoredData(uncensored=ty[ry], right=ty[~ry]))
    z, p = float(res.statistic), float(res.pvalue)
    if math.isnan(p):  # no variance: every event at one time in both samples alike
        return DirectedTest("log-rank", 0.0, 1.0, 0, n, False)
    return DirectedTest("log-rank", z, p, -int(np.sign(z)), n, False)


def km_median(time, reached) -> np.ndarray:
    """Kaplan-Meier median time of each row (a 1-D sample gives a 0-d array): the first time the
    survival curve is at or below 1/2, the midpoint to the next event where it is exactly 1/2 (so
    without censoring it is np.median); inf where it never drops to 1/2 (the median was not
    reached), nan for an empty row. Censored runs count as at risk at a tied event time."""
    t, r = np.atleast_2d(np.asarray(time, dtype=float)), np.atleast_2d(np.asarray(reached, dtype=bool))
    rows, n = t.shape
    if n == 0:
        return np.full(rows, np.nan).reshape(np.shape(time)[:-1])
    order = np.lexsort((~r, t), axis=-1)  # by time; at a tie, events before censorings
    ts, rs = np.take_along_axis(t, order, -1), np.take_along_axis(r, order, -1)
    surv = np.cumprod(np.where(rs, 1 - 1 / (n - np.arange(n)), 1.0), axis=-1)
    below = surv <= 0.5 + 1e-12
    j = np.argmax(below, axis=-1)
    at = np.take_along_axis(ts, j[:, None], -1)[:, 0]
    later_events = np.where(rs, ts, np.inf)
    next_event = np.minimum.accumulate(later_events[:, ::-1], axis=-1)[:, ::-1]  # first event at or after k
    nxt = np.r_["-1", next_event[:, 1:], np.full((rows, 1), np.inf)]
    after = np.take_along_axis(nxt, j[:, None], -1)[:, 0]
    half = np.abs(np.take_along_axis(surv, j[:, None], -1)[:, 0] - 0.5) < 1e-12
    med = np.where(half & np.isfinite(after), (at + after) / 2, at)
    med = np.where(below.any(axis=-1), med, np.inf)
    return med.reshape(np.shape(time)[:-1])


def _ratio(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isinf(num) & np.isinf(den), np.nan, np.asarray(num, dtype=float) / den)


def speedup(time_x, reached_x, time_y, reached_y, confidence: float = CONFIDENCE,
            n_resamples: int = N_RESAMPLES, paired: bool = True) -> Estimate:
    """How many times fewer steps x needs than y to reach the target: KM median of y / KM median of
    x (> 1: x faster; 0 when x never gets there and y does; inf the other way; nan when neither).
    CI: percentile bootstrap over pairs (``paired``; else each sample on its own), seeded from the
    content, so ≡ groups get the same interval; resamples where neither median exists are left out."""
    if paired:
        tx, rx, ty, ry = _pairs(time_x, reached_x, time_y, reached_y)
    else:
        (tx, rx), (ty, ry) = _sample(time_x, reached_x), _sample(time_y, reached_y)
    nx, ny = len(tx), len(ty)
    if nx == 0 or ny == 0:
        return Estimate(math.nan, math.nan, math.nan, min(nx, ny))
    value = float(_ratio(km_median(ty, ry), km_median(tx, rx)))
    rng = np.random.default_rng(content_seed(tx, rx, ty, ry))
    ix = rng.integers(0, nx, size=(n_resamples, nx))
    iy = ix if paired else rng.integers(0, ny, size=(n_resamples, ny))
    boots = _ratio(km_median(ty[iy], ry[iy]), km_median(tx[ix], rx[ix]))
    boots = boots[~np.isnan(boots)]
    if len(boots) == 0:
        return Estimate(value, math.nan, math.nan, min(nx, ny))
    tail = (1 - confidence) / 2
    low, high = np.quantile(boots, [tail, 1 - tail], method="inverted_cdf")
    return Estimate(value, float(low), float(high), min(nx, ny))


@dataclass(frozen=True)
class FinishedPairs:
    """Final quality over the pairs where both runs finished (a finite value), and how many did not.
    ``test``: exact Wilcoxon signed-rank of x - y (statistic: the sum of signed ranks, > 0 when x is
    larger); ``difference``: median x - y with its order-statistic CI; ``ratio``: median x / y with
    its CI where every value is positive (else nan)."""

    test: DirectedTest
    difference: CoveredEstimate
    ratio: CoveredEstimate
    n_pairs: int  # pairs given
    n_both: int  # pairs where both finished: the n of every number above
    x_only_diverged: int
    y_only_diverged: int


def finished_pairs(x, y, confidence: float = CONFIDENCE) -> FinishedPairs:
    """Compare paired final values on the pairs where both finished; nan or inf is a run that did
    not (diverged). A variant 100x worse on every such pair is worse whatever the baseline's
    divergence. Compare divergence itself with ``stats.mcnemar_exact``, never folded into this."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if len(x) != len(y):
        raise ValueError(f"pairs={len(x)},{len(y)} is invalid; allowed: two arrays of one length")
    fx, fy = np.isfinite(x), np.isfinite(y)
    both = fx & fy
    xb, yb = x[both], y[both]
    n = len(xb)
    if n and np.all(xb > 0) and np.all(yb > 0):
        ratio = median_ci(xb / yb, confidence)
    else:  # a ratio of losses of either sign is no "times worse"
        ratio = CoveredEstimate(math.nan, math.nan, math.nan, n, math.nan)
    return FinishedPairs(_signed_rank_test(xb - yb, content_seed(xb, yb)), median_ci(xb - yb, confidence),
                         ratio, len(x), n, int((~fx & fy).sum()), int((fx & ~fy).sum()))


def _signed_rank_test(d, seed: int) -> DirectedTest:
    """Exact two-sided Wilcoxon signed-rank test of finite differences, zeros dropped: scipy's exact
    distribution when |d| has no ties, else the sign-flip distribution of the signed mid-ranks
    (exact up to MAX_EXACT_PAIRS pairs), which is the same test with ties handled."""
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return DirectedTest("wilcoxon", 0.0, 1.0, 0, 0, True)
    signed = np.sign(d) * sps.rankdata(np.abs(d))
    total = float(signed.sum())
    if len(np.unique(np.abs(d))) == n:
        p = float(sps.wilcoxon(d, method="exact").pvalue)
        return DirectedTest("wilcoxon", total, p, int(np.sign(total)), n, True)
    res = sign_flip_test(signed, seed=seed, name="wilcoxon")
    return DirectedTest("wilcoxon", total, res.pvalue, res.direction, n, res.exact)
