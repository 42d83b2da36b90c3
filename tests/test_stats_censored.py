"""Issue 19's statistics on constructed data where the answer is known: intervals whose stated
coverage holds at n = 10 (checked by simulation), resampling seeded from content so identical groups
get identical intervals, one test per ≡ group in a family; and (analysis.censored) time to target
under censoring, which can say "slower", and final quality on the pairs where both finished, which
can say "worse" whatever the baseline's divergence."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from analysis import stats

# ------------------------------------------------------------------------------ exact intervals


def test_exact_ranks_and_coverages_are_the_textbook_ones():
    # order statistics: 1 - 2 P(Bin(10, 1/2) <= 1) = 1 - 22/1024; rank 3 would give 0.89 < 0.95
    assert stats.median_ci_ranks(10) == (2, 9, 1 - 22 / 1024)
    assert stats.median_ci_ranks(20)[:2] == (6, 15)
    # five values cannot reach 95%: [min, max] and the coverage says so (1 - 2/32)
    assert stats.median_ci_ranks(5) == (1, 5, 1 - 2 / 32)
    # Hodges-Lehmann: the signed-rank critical values 8 (n = 10) and 52 (n = 20) at two-sided 0.05
    assert stats.hodges_lehmann_ranks(10) == (9, 47, 1 - 2 * 25 / 1024)
    assert stats.hodges_lehmann_ranks(20)[:2] == (53, 158)
    p = stats.signed_rank_null(10)
    assert p.sum() == pytest.approx(1.0) and p[0] == 1 / 1024 and p[3] == 2 / 1024


def test_median_ci_and_hodges_lehmann_on_one_sample():
    d = np.array([5.0, -1.0, 2.0, 9.0, 0.5, 3.0, 4.0, math.nan, 7.0, 1.0, 6.0])
    e = stats.median_ci(d)
    assert (e.n, e.value, e.low, e.high) == (10, 3.5, 0.5, 7.0)  # ranks 2 and 9 of the sorted ten
    assert e.coverage == pytest.approx(0.978515625)
    # a censored difference (+inf) is an order statistic like any other
    e = stats.median_ci(np.r_[np.arange(8.0), math.inf, math.inf])
    assert (e.low, e.high) == (1.0, math.inf)
    h = stats.hodges_lehmann(np.arange(10.0))
    assert h.value == 4.5 and h.low < 4.5 < h.high and h.coverage == pytest.approx(0.951171875)
    assert math.isnan(stats.hodges_lehmann(np.r_[np.arange(9.0), math.inf]).value)


@pytest.mark.parametrize("n", [10, 20])
def test_order_statistic_interval_covers_the_median_at_its_stated_rate(n):
    """20,000 samples per distribution: the observed coverage is within 2% (and 4 standard errors)
    of the exact coverage stated, on a symmetric and two skewed distributions."""
    rng = np.random.default_rng(19)
    draws = 20_000
    lo, hi, coverage = stats.median_ci_ranks(n)
    assert coverage >= stats.CONFIDENCE
    for sample, median in [(rng.normal(3.0, 2.0, (draws, n)), 3.0),
                           (rng.lognormal(0.0, 1.5, (draws, n)), 1.0),
                           (rng.exponential(1.0, (draws, n)), math.log(2))]:
        s = np.sort(sample, axis=1)
        observed = np.mean((s[:, lo - 1] <= median) & (median <= s[:, hi - 1]))
        se = math.sqrt(coverage * (1 - coverage) / draws)
        assert abs(observed - coverage) < min(0.02, 4 * se), (n, observed, coverage)
        # the function itself picks those order statistics
        e = stats.median_ci(sample[0])
        assert (e.low, e.high, e.coverage) == (s[0, lo - 1], s[0, hi - 1], coverage)


@pytest.mark.parametrize("n", [10, 20])
def test_hodges_lehmann_interval_covers_the_centre_at_its_stated_rate(n):
    rng = np.random.default_rng(20)
    draws = 20_000
    lo, hi, coverage = stats.hodges_lehmann_ranks(n)
    iu = np.triu_indices(n)
    for sample, centre in [(rng.normal(-1.0, 3.0, (draws, n)), -1.0),
                           (rng.standard_t(3, (draws, n)) + 2.0, 2.0)]:
        walsh = np.sort((sample[:, :, None] + sample[:, None, :])[:, iu[0], iu[1]] / 2, axis=1)
        observed = np.mean((walsh[:, lo - 1] <= centre) & (centre <= walsh[:, hi - 1]))
        se = math.sqrt(coverage * (1 - coverage) / draws)
        assert abs(observed - coverage) < min(0.02, 4 * se), (n, observed, coverage)
        e = stats.hodges_lehmann(sample[0])
        assert (e.low, e.high) == (walsh[0, lo - 1], walsh[0, hi - 1])


# ------------------------------------------------------------------------------ content seeds, families


def test_identical_groups_get_identical_intervals_and_different_ones_do_not():
    rng = np.random.default_rng(0)
    a = rng.lognormal(size=10)
    b = rng.permutation(a)  # the same values in another row order: a ≡ group
    assert stats.content_seed(a) == stats.content_seed(b)
    assert stats.content_bootstrap_ci(a) == stats.content_bootstrap_ci(b)
    # the seeds an index gives (what compare did) make two ≡ groups disagree
    assert stats.bootstrap_ci(a, seed=1) != stats.bootstrap_ci(b, seed=2)
    others = [stats.content_bootstrap_ci(a * (1 + 0.01 * i)) for i in range(1, 6)]
    assert len({(e.low / e.value, e.high / e.value) for e in others}) > 1
    assert stats.content_seed([1.0, 2.0], [3.0]) != stats.content_seed([1.0], [2.0, 3.0])
    assert stats.content_seed([-0.0, math.nan]) == stats.content_seed([0.0, -math.nan])


def test_a_family_counts_each_equivalent_test_once():
    p = [0.01, 0.02, 0.01, 0.5]
    keys = [("final", "powerlaw"), ("final", "exp"), ("final", "powerlaw"), ("final", "naive")]
    assert list(stats.first_of_each(keys)) == [True, True, False, True]
    # three distinct tests, not four: 3 x 0.01, then max(0.03, 2 x 0.02), then 0.5
    assert stats.holm_distinct(p, keys) == pytest.approx([0.03, 0.04, 0.03, 0.5])
    assert stats.holm(p) == pytest.approx([0.04, 0.04, 0.04, 0.5])
    with pytest.raises(ValueError, match="keys=3 values is invalid"):
        stats.holm_distinct(p, keys[:3])
    assert stats.min_sign_flip_p(10) == 2 / 1024 < 0.01 and stats.min_sign_flip_p(5) == 0.0625
