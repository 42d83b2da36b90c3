"""The statistics the comparisons use: bootstrap confidence intervals, two-sample tests, Holm.

Why these and not others:
- A seed fixes initial weights, data order and noise for every variant, so a variant and the
  baseline are compared seed by seed: the Wilcoxon signed-rank test on the paired differences,
  with a bootstrap CI of their median, and for a yes/no outcome (diverged) the exact McNemar test
  on the discordant pairs. The unpaired tests below serve only where pairing is impossible.
- Seeds are few (3-10) and loss distributions are skewed, so estimates are medians with a
  bootstrap CI and the unpaired test is Mann-Whitney U (rank based, no normality assumed).
- Rates (divergence, ASHA-stopped share) are counts: a Wilson interval and Fisher's exact test
  are the exact tools for a 2x2 table; a rank test on 0/1 data says the same thing less well.
- Spread across seeds is compared with the Brown-Forsythe test (Levene, centred on the median).
- Many groups are compared with one baseline, so p-values are Holm-corrected (step-down
  Bonferroni: controls the family-wise error rate without assuming independence). statsmodels
  is not a dependency and scipy only ships Benjamini-Hochberg (false_discovery_control, which
  controls the false discovery rate, a weaker promise), so Holm is written out below.

Time-to-target values are censored: a trial that never reaches the target has ``inf``. Every
function here accepts ``inf`` (ranks and medians handle it); ``nan`` means "no value" and is dropped.
Tests that treat censoring properly (Gehan, log-rank, Kaplan-Meier medians) and final quality on
the pairs where both runs finished are in analysis.censored.

Intervals that hold at n = 10 (issue 19): a percentile or BCa bootstrap of a median under-covers at
ten seeds, so the median paired difference gets the distribution-free order-statistic interval
(``median_ci``) or the Hodges-Lehmann interval (``hodges_lehmann``), each with its exact coverage.
Any resampling the newer functions do is seeded from the data (``content_seed``), so groups that
are identical by construction get identical intervals whatever their index or row order.
"""
from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (nan where it cannot be computed)."""

    value: float
    low: float
    high: float
    n: int


def _clean(x) -> np.ndarray:
    """Float array without nan (inf stays: it is a censored value, not a missing one)."""
    x = np.asarray(x, dtype=float).ravel()
    return x[~np.isnan(x)]


def bootstrap_ci(x, statistic: Callable = np.median, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, seed: int = 0) -> Estimate:
    """``statistic(x)`` with a bootstrap CI; ``statistic`` takes an ``axis`` argument (np.median,
    np.mean, ``functools.partial(np.std, ddof=1)``) so resamples are computed in one call.

    scipy.stats.bootstrap (BCa) does the work for ordinary samples. It cannot handle the cases a
    study produces all the time, so those are answered directly:
    n == 0 -> all nan; n == 1 -> no interval; a constant sample -> the zero-width interval
    [v, v] (scipy's BCa returns nan there); a sample with inf (censored times) -> a percentile
    bootstrap whose quantiles are order statistics, so no inf - inf arithmetic happens.
    """
    x = _clean(x)
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. a std of one value: nan, said below
        value = float(statistic(x))
    if n == 1:
        return Estimate(value, math.nan, math.nan, 1)
    if np.all(x == x[0]):
        return Estimate(value, value, value, n)
    rng = np.random.default_rng(seed)
    if not np.all(np.isfinite(x)):
        idx = rng.integers(0, n, size=(n_resamples, n))
        boots = np.asarray(statistic(x[idx], axis=-1), dtype=float)
        tail = (1 - confidence) / 2
        low, high = np.quantile(boots, [tail, 1 - tail], method="inverted_cdf")
        return Estimate(value, float(low), float(high), n)
    # No try/except here: an error of scipy's (a bad argument, an older SciPy without ``rng=``) is a
    # bug to see, not a confidence interval to turn into nan.
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            # BCa on a nearly constant sample: DegenerateDataWarning and a nan interval, answered by
            # the percentile bootstrap next.
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res = stats.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                                  method=method, rng=rng, vectorized=True)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return Estimate(value, low, high, n)
    warnings.warn(f"bootstrap CI of {statistic.__name__ if hasattr(statistic, '__name__') else 'statistic'} "
                  f"over {n} values is not finite (BCa and percentile); reported as nan", RuntimeWarning,
                  stacklevel=2)
    return Estimate(value, math.nan, math.nan, n)


def proportion_ci(k: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """Share k/n with a Wilson score interval (sensible at 0/n and n/n, unlike the bootstrap)."""
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return Estimate(k / n, float(ci.low), float(ci.high), int(n))


@dataclass(frozen=True)
class TestResult:
    test: str
    statistic: float
    pvalue: float


@dataclass(frozen=True)
class DirectedTest(TestResult):
    """A test result that also says which way: ``direction`` +1 when x is larger (later, worse for a
    loss), -1 when smaller, 0 when neither; ``n`` the pairs or runs used; ``exact`` False where p
    is a Monte Carlo or asymptotic value."""

    direction: int
    n: int
    exact: bool


def mann_whitney(x, y) -> TestResult:
    """Two-sided Mann-Whitney U of x against y (nan dropped, inf allowed).

    Identical constant samples give p = 1 (no evidence of a difference), which scipy already does;
    an empty sample gives nan (no test).
    """
    x, y = _clean(x), _clean(y)
    if len(x) == 0 or len(y) == 0:
        return TestResult("mann-whitney", math.nan, math.nan)
    res = stats.mannwhitneyu(x, y, alternative="two-sided")
    p = float(res.pvalue)
    return TestResult("mann-whitney", float(res.statistic), 1.0 if math.isnan(p) else p)


def fisher(k1: int, n1: int, k2: int, n2: int) -> TestResult:
    """Fisher's exact test of the rates k1/n1 and k2/n2 (two-sided)."""
    if n1 == 0 or n2 == 0:
        return TestResult("fisher", math.nan, math.nan)
    res = stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]])
    return TestResult("fisher", float(res.statistic), float(res.pvalue))


def spread_test(x, y) -> TestResult:
    """Brown-Forsythe test of equal spread (Levene centred on the median); finite values only.

    Two constant samples have no spread to compare: p = 1.
    """
    x, y = _clean(x), _clean(y)
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) < 2 or len(y) < 2:
        return TestResult("brown-forsythe", math.nan, math.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.levene(x, y, center="median")
    p = float(res.pvalue)
    if math.isnan(p):  # both samples constant: zero spread in each
        return TestResult("brown-forsythe", 0.0, 1.0)
    return TestResult("brown-forsythe", float(res.statistic), p)


def paired_differences(x, y) -> np.ndarray:
    """x - y per pair, pairs with a nan dropped. inf - inf (both censored, e.g. both diverged) is
    no difference (0); inf - finite stays +inf, the largest difference there is."""
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    with np.errstate(invalid="ignore"):
        d = x - y
    d[np.isinf(x) & np.isinf(y) & (np.sign(x) == np.sign(y))] = 0.0
    return d


def median_inf(x, axis=None):
    """The median, where the two middle values of an even sample may be -inf and +inf (paired
    differences when one side diverged in some pairs and the other in others): their mean is
    undefined, so the lower of the two is taken there."""
    x = np.asarray(x, dtype=float)
    with np.errstate(invalid="ignore"):
        m = np.median(x, axis=axis)
    return np.where(np.isnan(m), np.quantile(x, 0.5, method="lower", axis=axis), m)


def wilcoxon_paired(x, y) -> TestResult:
    """Two-sided Wilcoxon signed-rank test of the paired differences x - y (or of x alone against
    0 when y is None). Only the ranks of |d| matter, so an infinite difference (one side
    diverged) is given a finite magnitude above every other: same ranks, no inf arithmetic.
    Zero differences are dropped (Wilcoxon's convention); no non-zero difference gives p = 1."""
    d = paired_differences(x, np.zeros_like(np.asarray(x, dtype=float)) if y is None else y)
    d = d[d != 0]
    if len(d) == 0:
        return TestResult("wilcoxon", 0.0, 1.0)
    finite = np.abs(d[np.isfinite(d)])
    big = (finite.max() if len(finite) else 1.0) * 10 + 1
    d = np.where(np.isinf(d), np.sign(d) * big, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.wilcoxon(d)
    p = float(res.pvalue)
    return TestResult("wilcoxon", float(res.statistic), 1.0 if math.isnan(p) else p)


def mcnemar_exact(x, y) -> TestResult:
    """Exact McNemar test of paired yes/no outcomes (e.g. diverged): a two-sided binomial test of
    the discordant pairs, b = x only, c = y only, against b ~ Binomial(b + c, 1/2). The statistic
    is b - c (positive: x has the outcome more often)."""
    x, y = np.asarray(x, dtype=bool).ravel(), np.asarray(y, dtype=bool).ravel()
    b, c = int((x & ~y).sum()), int((~x & y).sum())
    if b + c == 0:
        return TestResult("mcnemar", 0.0, 1.0)
    return TestResult("mcnemar", float(b - c), float(stats.binomtest(b, b + c, 0.5).pvalue))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input order; nan (no test) stays nan and does
    not count towards the number of tests.

    With the m valid p-values sorted ascending p_(1) <= ... <= p_(m), the adjusted value is
    max_{j <= i} min(1, (m - j + 1) p_(j)): reject H_(i) at level a iff adjusted <= a.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def min_mann_whitney_p(n1: int, n2: int) -> float:
    """The smallest two-sided exact Mann-Whitney p-value two samples of these sizes can give:
    2 / C(n1 + n2, n1). At 3 vs 3 it is 0.1, so no difference can be significant at 0.05."""
    if n1 < 1 or n2 < 1:
        return math.nan
    return min(1.0, 2.0 / math.comb(n1 + n2, n1))


def min_wilcoxon_p(n_pairs: int) -> float:
    """The smallest two-sided exact Wilcoxon signed-rank p-value n pairs can give: 2 / 2^n (every
    difference of one sign). At 5 pairs it is 0.0625, so no difference can be significant at 0.05."""
    if n_pairs < 1:
        return math.nan
    return min(1.0, 2.0 / 2 ** n_pairs)


def min_sign_flip_p(n_pairs: int) -> float:
    """The exact p floor of any two-sided paired sign-flip test (Wilcoxon, Gehan, a sign test): 2 / 2^n,
    one outcome in 2^n per tail. 0.00195 at 10 pairs; pairs with a zero score do not count in n."""
    return min_wilcoxon_p(n_pairs)


# ------------------------------------------------------------------------------ issue 19: content seeds,
# exact intervals, sign-flip tests, final quality on both-finished pairs, one test per ≡ group

def content_seed(*arrays) -> int:
    """A resampling seed derived from the values alone: each array is sorted (so row order does not
    matter), -0.0 and every nan are made one bit pattern, and the lengths separate the arrays. Groups
    identical by construction get the same seed, hence the same interval, whatever their index."""
    h = hashlib.sha256()
    for a in arrays:
        v = np.sort(np.asarray(a, dtype=float).ravel())
        v = np.where(np.isnan(v), np.nan, v) + 0.0
        h.update(len(v).to_bytes(8, "little"))
        h.update(v.astype("<f8").tobytes())
    return int.from_bytes(h.digest()[:8], "little")


def content_bootstrap_ci(x, statistic: Callable = np.median, confidence: float = CONFIDENCE,
                         n_resamples: int = N_RESAMPLES) -> Estimate:
    """``bootstrap_ci`` of the sorted values, seeded by ``content_seed(x)``: equal samples give equal
    intervals in any order."""
    x = _clean(x)
    return bootstrap_ci(np.sort(x), statistic, confidence, n_resamples, seed=content_seed(x))


@dataclass(frozen=True)
class CoveredEstimate(Estimate):
    """An estimate whose interval has a known coverage: the probability, exact for continuous data
    (conservative under ties), that the interval holds the true value; nan where there is none."""

    coverage: float


def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int, float]:
    """Ranks (k, n + 1 - k), 1-based, of the order-statistic interval for a median of n values and
    its exact coverage 1 - 2 P(Bin(n, 1/2) <= k - 1): the largest k whose coverage is at least
    ``confidence``. Where no k reaches it (n <= 5 at 95%) k = 1, [min, max], and the coverage says
    how much less it holds. At n = 10, 95%: (2, 9), coverage 0.978515625."""
    if n < 1:
        return 0, 0, math.nan
    ks = np.arange(1, (n + 1) // 2 + 1)
    cover = 1 - 2 * stats.binom.cdf(ks - 1, n, 0.5)
    ok = ks[cover >= confidence - 1e-12]
    k = int(ok.max()) if ok.size else 1
    return k, n + 1 - k, float(1 - 2 * stats.binom.cdf(k - 1, n, 0.5))


def median_ci(d, confidence: float = CONFIDENCE) -> CoveredEstimate:
    """The median of d (e.g. paired differences) with the distribution-free order-statistic interval
    [d_(k), d_(n+1-k)] of ``median_ci_ranks`` and its exact coverage. Needs no symmetry and no
    finite values (a censored +inf is an order statistic like any other); nan is dropped."""
    d = np.sort(_clean(d))
    n = len(d)
    if n == 0:
        return CoveredEstimate(math.nan, math.nan, math.nan, 0, math.nan)
    lo, hi, coverage = median_ci_ranks(n, confidence)
    return CoveredEstimate(float(median_inf(d)), float(d[lo - 1]), float(d[hi - 1]), n, coverage)


def signed_rank_null(n: int) -> np.ndarray:
    """P(W+ = w), w = 0..n(n+1)/2, of the Wilcoxon signed-rank statistic of n untied non-zero
    differences under the null (each sign 1/2). Written out (a product of n two-point laws, halved
    at each step so it cannot overflow) because scipy keeps its version private."""
    p = np.zeros(n * (n + 1) // 2 + 1)
    p[0] = 1.0
    for r in range(1, n + 1):
        p[r:] = (p[r:] + p[:-r].copy()) / 2
        p[:r] /= 2
    return p


def hodges_lehmann_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, int, float]:
    """Ranks (k, M + 1 - k) among the M = n(n+1)/2 sorted Walsh averages of the Hodges-Lehmann
    interval and its exact coverage 1 - 2 P(W+ <= k - 1). At n = 10, 95%: (9, 47), 0.951171875."""
    if n < 1:
        return 0, 0, math.nan
    m = n * (n + 1) // 2
    cdf = np.cumsum(signed_rank_null(n))
    ks = np.arange(1, (m + 1) // 2 + 1)
    cover = 1 - 2 * cdf[ks - 1]
    ok = ks[cover >= confidence - 1e-12]
    k = int(ok.max()) if ok.size else 1
    return k, m + 1 - k, float(1 - 2 * cdf[k - 1])


def hodges_lehmann(d, confidence: float = CONFIDENCE) -> CoveredEstimate:
    """Hodges-Lehmann estimate (median of the Walsh averages (d_i + d_j)/2, i <= j) of the centre of
    a symmetric distribution of differences, with the interval that inverts the exact signed-rank
    test. Narrower than ``median_ci`` but assumes symmetry; finite values only (a Walsh average
    with an inf has no meaning), so any inf gives nan with n stated."""
    d = _clean(d)
    n = len(d)
    if n == 0 or not np.all(np.isfinite(d)):
        return CoveredEstimate(math.nan, math.nan, math.nan, n, math.nan)
    walsh = np.sort(np.add.outer(d, d)[np.triu_indices(n)] / 2)
    lo, hi, coverage = hodges_lehmann_ranks(n, confidence)
    return CoveredEstimate(float(np.median(walsh)), float(walsh[lo - 1]), float(walsh[hi - 1]), n, coverage)


def first_of_each(keys: Sequence) -> np.ndarray:
    """True at the first occurrence of each key: a declared family keeps one test per ≡ group (a key
    that says two rows test the same thing, e.g. (quantity, the ≡ class of the variant))."""
    seen: set = set()
    keep = np.zeros(len(keys), dtype=bool)
    for i, k in enumerate(keys):
        if k not in seen:
            seen.add(k)
            keep[i] = True
    return keep


def holm_distinct(pvalues: Sequence[float], keys: Sequence) -> np.ndarray:
    """Holm over the distinct tests only: rows with an equal key are one test counted once, and
    every duplicate is given its first row's adjusted p (equal keys should carry equal p)."""
    p = np.asarray(pvalues, dtype=float)
    if len(keys) != len(p):
        raise ValueError(f"keys={len(keys)} values is invalid; allowed: one key per p-value ({len(p)})")
    keep = first_of_each(keys)
    adjusted = holm(np.where(keep, p, np.nan))
    first = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    return np.array([adjusted[first[k]] for k in keys], dtype=float)
