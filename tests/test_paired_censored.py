"""Issue 19 through ``compare`` on constructed data with a known answer: a variant that never reaches
the target is significantly slower, a variant 100x worse on every finished pair is worse whatever the
baseline's divergence, groups identical by construction get identical intervals and count once, and
a frontier traced from fewer than 8 of 10 finished baseline seeds is never used in a declared test."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from plvae import metrics as M

from analysis import compare
from analysis.censored import reach_target
from analysis.columns import DISTORTION_GAP, EPOCHS_TO_TARGET, FINAL, FROM_SURVIVORS
from analysis.load import Study
from analysis.stats import median_ci_ranks

SEEDS = range(10)
EPOCHS = 8


def _study(groups: dict, meta: dict | None = None) -> Study:
    """groups: {(variant, gamma, min_decay, kl_coeff): spec}, spec(seed) -> dict(curve=values per epoch
    1..EPOCHS, rate, distortion, diverge=epoch)."""
    rows, params = [], []
    for (variant, gamma, md, beta), spec in groups.items():
        for s in SEEDS:
            sp = spec(s)
            tid = f"{variant}_{gamma:g}_{md:g}_{beta:g}_{s}"
            params.append({"trial_id": tid, "variant": variant, "gamma": float(gamma), "kl_coeff": beta,
                           "latent_dim": 8, "min_decay": md, "lr": 1e-3, "seed": s, "dataset": "digits",
                           "max_epochs": EPOCHS})
            for e in range(1, EPOCHS + 1):
                div = e >= sp.get("diverge", math.inf)
                rows.append({"trial_id": tid, "training_iteration": e, M.DIVERGED: float(div),
                             M.VAL_LOSS: math.nan if div else sp["curve"][e - 1], M.TRAIN_LOSS: 1.0,
                             M.VAL_RATE: math.nan if div else sp.get("rate", 1.0),
                             M.VAL_RECON_MU: math.nan if div else sp.get("distortion", 1.0),
                             M.INITIAL_VAL_LOSS: 3.0, "time_total_s": float(e)})
                if div:
                    break
    return Study.from_history(pd.DataFrame(rows), pd.DataFrame(params), meta={"status": "finished", **(meta or {})})


def _falling(end: float, s: int) -> list:
    """A curve from 2 down to `end` (plus a little per seed) over EPOCHS epochs."""
    return list(np.linspace(2.0, end, EPOCHS) + 0.001 * s)


def test_the_default_target_is_what_8_in_10_baseline_seeds_reached_by_three_quarters_of_the_budget():
    groups = {("vae", 0.0, 1e-3, 0.1): lambda s: dict(curve=_falling(1.0 + 0.01 * s, s))}
    c = compare(_study(groups), n_resamples=200)
    target = next(iter(c.targets.values()))
    bests = [_falling(1.0 + 0.01 * s, s)[5] for s in SEEDS]      # epoch 6 = 3/4 of 8
    assert target == pytest.approx(reach_target(bests)) == pytest.approx(sorted(bests)[7])
    assert any(n.startswith("target val_loss =") and "80%" in n and "epoch 6" in n for n in c.notes)
    assert (np.isfinite(c.per_trial[EPOCHS_TO_TARGET])).sum() >= 8


def test_a_variant_that_never_reaches_the_target_is_significantly_slower():
    groups = {("vae", 0.0, 1e-3, 0.1): lambda s: dict(curve=_falling(1.0, s)),
              ("powerlaw", 1.0, 1e-3, 0.1): lambda s: dict(curve=_falling(1.6, s)),      # never gets there
              ("exponential", 1.0, 1e-3, 0.1): lambda s: dict(curve=[2.0] + [0.5] * (EPOCHS - 1))}  # faster
    c = compare(_study(groups), n_resamples=500)
    t = c.tests[c.tests.quantity == EPOCHS_TO_TARGET].set_index("variant")
    assert t.loc["powerlaw", "test"] == "gehan-paired" and t.loc["powerlaw", "p"] < 0.01
    assert t.loc["powerlaw", "direction"] == "worse"
    g = c.groups.set_index("variant")
    assert g.loc["powerlaw", "speedup"] == 0.0     # never: no median time, the baseline has one
    assert t.loc["exponential", "p"] < 0.01 and t.loc["exponential", "direction"] == "better"
    assert g.loc["exponential", "speedup"] > 1 and g.loc["exponential", "speedup_low"] > 1


@pytest.mark.parametrize("baseline_diverged", [0, 2, 4])
def test_a_variant_100x_worse_on_every_finished_pair_is_worse_whatever_the_baseline_divergence(baseline_diverged):
    groups = {("vae", 0.0, 1e-3, 0.1): lambda s: dict(curve=_falling(1.0, s),
                                                      **({"diverge": 4} if s < baseline_diverged else {})),
              ("powerlaw", 1.0, 1e-3, 0.1): lambda s: dict(curve=[100 * v for v in _falling(1.0, s)])}
    primary = [{"quantity": "final", "variant": "powerlaw", "where": {"gamma": 1.0}}]
    c = compare(_study(groups, meta={"study_config": {"primary": primary}}), n_resamples=200)
    t = c.tests[c.tests.quantity == FINAL].iloc[0]
    assert t["n_both"] == 10 - baseline_diverged and t["direction"] == "worse"
    assert t["p"] == pytest.approx(2 / 2 ** (10 - baseline_diverged))
    assert t["ratio"] == pytest.approx(100, rel=0.01) and t["diff_coverage"] == median_ci_ranks(t["n_both"])[2]
    head = c.headline.set_index("variant")
    assert head.loc["powerlaw", "rel_final"] == pytest.approx(99, rel=0.01)
    verdict = head.loc["powerlaw", "verdict"]
    assert t["significant"] and verdict.startswith("worse") and "better" not in verdict
    if baseline_diverged:   # fewer divergences than the baseline: said beside it, never folded in
        assert head.loc["powerlaw", "direction_diverged"] == "better"
    # ranked by final quality alone: below the baseline, whose divergences are said beside it
    assert head.loc["powerlaw", "rank"] > head.loc["vae", "rank"]


def test_equivalent_groups_get_identical_intervals_and_count_once_in_the_family():
    """powerlaw_clamp whose floor (1e-9) is never reached at latent 8 is powerlaw: ≡, one test."""
    groups = {("vae", 0.0, 1e-3, 0.1): lambda s: dict(curve=_falling(1.0 + 0.02 * s, s)),
              ("powerlaw", 0.5, 1e-3, 0.1): lambda s: dict(curve=_falling(0.97 + 0.05 * (s % 3), s)),
              ("powerlaw_clamp", 0.5, 1e-9, 0.1): lambda s: dict(curve=_falling(0.97 + 0.05 * (s % 3), s))}
    primary = [{"quantity": "final", "variant": v, "where": {"gamma": 0.5}} for v in ("powerlaw", "powerlaw_clamp")]
    c = compare(_study(groups, meta={"study_config": {"primary": primary}}), n_resamples=300)
    g = c.groups.set_index("variant")
    assert g.loc["powerlaw", "equiv"] and g.loc["powerlaw", "equiv"] == g.loc["powerlaw_clamp", "equiv"]
    cols = [c_ for c_ in g.columns if c_.endswith(("_low", "_high"))]
    a, b = g.loc["powerlaw", cols].astype(float), g.loc["powerlaw_clamp", cols].astype(float)
    assert np.allclose(a.to_numpy(), b.to_numpy(), equal_nan=True)
    assert len(c.primary) == 2 and c.primary["p_holm"].nunique() == 1
    # one distinct test in the family: Holm multiplies by 1, not 2
    assert c.primary["p_holm"].iloc[0] == pytest.approx(c.primary["p"].iloc[0])


def _frontier(beta, diverged_seeds=0):
    def point(s):
        rate = 4.0 / beta * (1 + 0.01 * s)
        return dict(curve=_falling(0.5 + 0.001 * s, s), rate=rate, distortion=1 / math.log(math.e + rate),
                    **({"diverge": 3} if s < diverged_seeds else {}))
    return point


@pytest.mark.parametrize("diverged_seeds", [0, 3])
def test_a_frontier_from_survivors_is_never_used_in_a_declared_test(diverged_seeds):
    rate = 4.0 / 0.07
    groups = {("vae", 0.0, 1e-3, b): _frontier(b, diverged_seeds) for b in (0.025, 0.05, 0.1, 0.2, 0.4)}
    groups[("powerlaw_clamp", 1.0, 1e-3, 0.1)] = lambda s: dict(curve=_falling(0.4, s), rate=rate,
                                                                 distortion=0.9 / math.log(math.e + rate))
    primary = [{"quantity": "distortion_gap", "variant": "powerlaw_clamp", "where": {"gamma": 1.0}}]
    c = compare(_study(groups, meta={"study_config": {"primary": primary}}), n_resamples=200)
    t = c.tests[c.tests.quantity == DISTORTION_GAP].iloc[0]
    assert t["direction"] == "better" and t["p"] < 0.05      # measured either way
    survivors = diverged_seeds > 2                           # 7 of 10 finished: < 8 in 10
    assert bool(c.frontier[FROM_SURVIVORS].all()) == survivors and bool(t[FROM_SURVIVORS]) == survivors
    assert (t["family"] == "primary") != survivors
    assert len(c.primary) == (0 if survivors else 1)
    assert any("fall outside the baseline frontier" in n for n in c.notes)
    if survivors:
        assert pd.isna(t["p_holm"]) and any("from survivors" in n for n in c.notes)
