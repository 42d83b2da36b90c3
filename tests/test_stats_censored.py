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


# ------------------------------------------------------------------------------ time to target, censored
from analysis import censored  # noqa: E402

BUDGET = 100.0


def _times(reach_at):
    """(time, reached) of runs that reach the target at these steps (inf: never, within BUDGET)."""
    return censored.censor(np.asarray(reach_at, dtype=float), BUDGET)


def test_a_variant_that_never_reaches_the_target_is_significantly_slower():
    rng = np.random.default_rng(1)
    base = rng.integers(20, 60, 10).astype(float)  # the baseline reaches it on all 10 seeds
    never = np.full(10, math.inf)
    res = censored.gehan_paired(*_times(never), *_times(base))
    assert res.direction == 1 and res.pvalue == pytest.approx(2 / 2 ** 10) and res.pvalue < 0.01
    assert res.exact and res.n == 10 and res.pvalue == stats.min_sign_flip_p(10)
    # what the inf-coded Wilcoxon said: p of 1/2^n over the pairs the baseline reached, here all ten
    # reached so it agrees; with the baseline missing half, it cannot say slower, Gehan can
    half = np.where(np.arange(10) < 5, base, math.inf)
    assert stats.wilcoxon_paired(never, half).pvalue >= 0.0625
    res = censored.gehan_paired(*_times(never), *_times(half))
    assert res.direction == 1 and res.pvalue == pytest.approx(2 / 2 ** 5)  # the 5 pairs both-censored tie
    assert res.n == 5 and res.pvalue == stats.min_sign_flip_p(res.n)
    # faster everywhere: the same p, the other way; identical runs: p = 1, no direction
    fast = censored.gehan_paired(*_times(base - 10), *_times(base))
    assert fast.direction == -1 and fast.pvalue < 0.01
    same = censored.gehan_paired(*_times(half), *_times(half))
    assert same.pvalue == 1.0 and same.direction == 0 and same.n == 0
    # a mixed picture is no evidence
    mixed = censored.gehan_paired(*_times(base + np.r_[-5, 5] .repeat(5)), *_times(base))
    assert mixed.pvalue > 0.5


def test_gehan_scores_and_the_monte_carlo_branch():
    # 10 reached at 10, 20 reached at 20, 30 censored at 30, 15 censored at 15
    s = censored.gehan_scores([10, 20, 30, 15], [True, True, False, False])
    # 10: earlier than all three -> -3; 20: after 10, before 30, 15 censored first: 1 - 1 = 0;
    # 30 censored: surely after 10 and 20 -> +2; 15 censored: surely after 10 only -> +1
    assert list(s) == [-3, 0, 2, 1]
    # at equal times: reached at 20 is surely before censored at 20 (it never got there by 20);
    # two runs reaching at 20 are a tie, and so are two censored
    assert list(censored.gehan_scores([20, 20], [True, False])) == [-1, 1]
    assert list(censored.gehan_scores([20, 20, 30, 30], [True, True, False, False])) == [-2, -2, 2, 2]
    rng = np.random.default_rng(2)
    base = rng.uniform(20, 60, 30)
    res = censored.gehan_paired(*_times(np.full(30, math.inf)), *_times(base))
    assert not res.exact and res.direction == 1 and res.pvalue == pytest.approx(1 / (1 + censored.N_FLIPS))
    again = censored.gehan_paired(*_times(np.full(30, math.inf)), *_times(rng.permutation(base)))
    assert again == res  # the Monte Carlo seed comes from the content, not the row order
    d = rng.normal(0, 1, 30)
    assert abs(censored.sign_flip_test(d).pvalue - sps.ttest_1samp(d, 0).pvalue) < 0.05


def test_gehan_paired_holds_its_size_under_the_null_and_finds_a_slower_variant():
    """1,000 studies of 10 pairs, times lognormal with a per-seed effect, censored at BUDGET (about
    a third never reach it): with no difference the test rejects at most 5% of the time; with the
    variant needing twice the steps it says "slower" in most studies and "faster" in none."""
    rng = np.random.default_rng(8)
    draws, n = 1000, 10
    seed_effect = rng.normal(0, 0.3, (draws, n))
    base = np.exp(4.3 + seed_effect + rng.normal(0, 0.4, (draws, n)))
    null = np.exp(4.3 + seed_effect + rng.normal(0, 0.4, (draws, n)))
    rejected, slower, faster = 0, 0, 0
    for i in range(draws):
        b = censored.censor(np.where(base[i] <= BUDGET, base[i], math.inf), BUDGET)
        v = censored.censor(np.where(null[i] <= BUDGET, null[i], math.inf), BUDGET)
        rejected += censored.gehan_paired(*v, *b).pvalue <= 0.05
        slow = 2.0 * null[i]
        res = censored.gehan_paired(*censored.censor(np.where(slow <= BUDGET, slow, math.inf), BUDGET), *b)
        slower += res.pvalue <= 0.05 and res.direction == 1
        faster += res.pvalue <= 0.05 and res.direction == -1
    assert rejected / draws <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / draws)
    assert slower / draws > 0.6 and faster == 0


def test_log_rank_separates_a_never_arm_from_an_always_arm():
    rng = np.random.default_rng(3)
    always = rng.integers(20, 60, 10).astype(float)
    res = censored.logrank(*_times(np.full(10, math.inf)), *_times(always))
    assert res.direction == 1 and res.pvalue < 0.001
    res = censored.logrank(*_times(always), *_times(np.full(10, math.inf)))
    assert res.direction == -1 and res.pvalue < 0.001
    same = censored.logrank(*_times(always), *_times(rng.permutation(always)))
    assert same.pvalue > 0.9
    assert censored.logrank(*_times(np.full(5, math.inf)), *_times(np.full(5, math.inf))).pvalue == 1.0


def test_kaplan_meier_median_agrees_with_scipy_ecdf():
    rng = np.random.default_rng(4)
    for _ in range(200):
        n = int(rng.integers(1, 15))
        t = rng.integers(1, 8, n).astype(float)  # many ties
        r = rng.random(n) < 0.7
        sf = sps.ecdf(sps.CensoredData(uncensored=t[r], right=t[~r])).sf if r.any() else None
        med = float(censored.km_median(t, r))
        if sf is None or not np.any(sf.probabilities <= 0.5 + 1e-12):
            assert med == math.inf
            continue
        j = int(np.argmax(sf.probabilities <= 0.5 + 1e-12))
        expect = sf.quantiles[j]
        if abs(sf.probabilities[j] - 0.5) < 1e-12 and j + 1 < len(sf.quantiles):
            drops = np.flatnonzero(sf.probabilities[j + 1:] < sf.probabilities[j] - 1e-12)
            expect = (expect + sf.quantiles[j + 1 + drops[0]]) / 2 if drops.size else expect
        assert med == pytest.approx(expect), (t, r)
    x = rng.normal(size=10)
    assert float(censored.km_median(x, np.ones(10, bool))) == pytest.approx(np.median(x))


def test_speedup_is_a_ratio_of_median_steps_with_a_content_seeded_interval():
    rng = np.random.default_rng(5)
    base = rng.integers(40, 80, 10).astype(float)
    twice = censored.speedup(*_times(base / 2), *_times(base))
    assert twice.value == pytest.approx(2.0) and twice.low <= 2.0 <= twice.high and twice.n == 10
    assert censored.speedup(*_times(np.full(10, math.inf)), *_times(base)).value == 0.0
    # ≡ groups (the same pairs in another order) get the same interval; other data another one
    order = rng.permutation(10)
    again = censored.speedup(*_times((base / 2)[order]), *_times(base[order]))
    assert again == twice
    other = censored.speedup(*_times(base / 2 + rng.normal(0, 3, 10)), *_times(base))
    assert (other.low, other.high) != (twice.low, twice.high)
    unpaired = censored.speedup(*_times(base / 2), *_times(base[:7]), paired=False)
    assert unpaired.low < unpaired.value < unpaired.high
    shuffled = censored.speedup(*_times((base / 2)[order]), *_times(base[:7][::-1]), paired=False)
    assert shuffled == unpaired


# ------------------------------------------------------------------------------ final quality, both finished

@pytest.mark.parametrize("baseline_diverged", [0, 3])
def test_a_variant_worse_on_every_finished_pair_is_worse_whatever_the_baseline_divergence(baseline_diverged):
    rng = np.random.default_rng(6)
    y = rng.lognormal(3.0, 0.3, 10)
    x = 100 * y * rng.uniform(0.9, 1.1, 10)
    y[:baseline_diverged] = math.inf  # diverged baseline seeds
    x[9] = math.nan  # and the variant diverged once (nan: no final value, the same outcome)
    res = censored.finished_pairs(x, y)
    n_both = 9 - baseline_diverged
    assert (res.n_pairs, res.n_both, res.x_only_diverged, res.y_only_diverged) == (10, n_both, 1, baseline_diverged)
    assert res.test.direction == 1 and res.test.pvalue == pytest.approx(2 / 2 ** n_both)
    assert res.test.pvalue < 0.05
    assert 90 < res.ratio.low <= res.ratio.value <= res.ratio.high < 110
    assert res.difference.low > 0 and res.difference.n == n_both
    # a ranking that puts a diverged baseline below every finite loss sees it the other way round
    if baseline_diverged:
        as_inf = np.where(np.isnan(x), math.inf, x)
        assert stats.wilcoxon_paired(as_inf, y).pvalue > 0.05


def test_finished_pairs_with_no_difference_ties_and_signs():
    rng = np.random.default_rng(7)
    y = rng.normal(size=10)
    same = censored.finished_pairs(y, y)
    assert same.test.pvalue == 1.0 and same.test.direction == 0 and math.isnan(same.ratio.value)
    # ties in |d|: the exact permutation distribution of the mid-ranks, not scipy's untied table
    d = np.array([1.0, 1.0, 2.0, 3.0, -1.0, 4.0, 5.0, 6.0, 2.0, 2.0])
    y = np.arange(10.0) / 4  # exact in binary, so y + d - y == d and the ties stay ties
    res = censored.finished_pairs(y + d, y)
    assert res.test.exact and res.test.direction == 1
    assert res.test.pvalue == pytest.approx(
        sps.wilcoxon(d, method=sps.PermutationMethod(n_resamples=np.inf)).pvalue)


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match=r"^pairs=3,3,2,2 is invalid; allowed"):
        censored.gehan_paired([1, 2, 3], [True] * 3, [1, 2], [True] * 2)
    with pytest.raises(ValueError, match=r"^reached=2 values is invalid; allowed"):
        censored.logrank([1, 2, 3], [True] * 2, [1, 2], [True] * 2)
    with pytest.raises(ValueError, match=r"^d=inf is invalid"):
        censored.sign_flip_test([1.0, math.inf])
    with pytest.raises(ValueError, match=r"^pairs=2,3 is invalid"):
        censored.finished_pairs([1.0, 2.0], [1.0, 2.0, 3.0])
    empty = censored.gehan_paired([math.nan], [False], [1.0], [True])
    assert empty.n == 0 and math.isnan(empty.pvalue)
