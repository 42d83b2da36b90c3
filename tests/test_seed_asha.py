"""Seed-grouped ASHA (tune/seed_asha.py): the decisions without Ray, then one tiny real Tune run."""
from __future__ import annotations

import os

import pytest

from tune.seed_asha import SeedGroupedASHA, SeedGroups, group_key


def groups(n_configs: int, seeds=(0, 1), rf=2, grace=1, max_t=4, size=None) -> SeedGroups:
    g = SeedGroups(grace, max_t, rf, group_size=size)
    for c in range(n_configs):
        for s in seeds:
            g.add(f"c{c}s{s}", group_key({"variant": f"v{c}", "seed": s, "data_seed": 0}))
    return g


def test_configuration_is_the_config_without_its_seeds():
    assert group_key({"a": 1, "seed": 0, "data_seed": 3}) == group_key({"seed": 5, "a": 1, "data_seed": 0})
    assert group_key({"a": 1, "seed": 0}) != group_key({"a": 2, "seed": 0})
    assert SeedGroups(1, 4, 2).rungs == [1, 2] and SeedGroups(1, 16, 4).rungs == [1, 4]
    with pytest.raises(ValueError, match="reduction_factor=1 is invalid"):
        SeedGroups(1, 4, 1)


def test_a_group_is_judged_on_its_median_only_once_every_seed_reached_the_rung():
    g = groups(2)
    # Config 0 is good on both seeds; config 1 is bad on seed 0 but better on seed 1.
    assert not g.result("c0s0", 1, 1.0) and not g.result("c0s1", 1, 1.2)   # group 0: median 1.1
    # Plain ASHA would stop c1s0 here (2.0 is worse than every value recorded so far).
    assert not g.result("c1s0", 1, 2.0), "waits for its sibling"
    assert not g.stopped("c1s0")
    # Its sibling arrives: median 1.5 > group 0's 1.1 -> the whole configuration stops.
    assert g.result("c1s1", 1, 1.0)
    assert g.stopped("c1s0") and g.result("c1s0", 2, 1.9), "the sibling stops at its next result"
    assert not g.stopped("c0s0")


def test_the_median_decides_not_the_worst_seed():
    g = groups(3, seeds=(0, 1, 2))
    for s, v in enumerate((1.0, 1.0, 1.0)):
        g.result(f"c0s{s}", 1, v)
    # Config 1: one terrible seed, two good ones: median 0.9 beats config 0's 1.0.
    for s, v in enumerate((0.9, 9.0, 0.8)):
        assert not g.result(f"c1s{s}", 1, v)
    # Config 2: median 1.5, worse than the cutoff (the 50% quantile of 1.0 and 0.9).
    for s, v in enumerate((0.5, 1.5, 2.0)):
        g.result(f"c2s{s}", 1, v)
    assert g.stopped("c2s0") and not g.stopped("c1s1") and not g.stopped("c0s0")
    assert g.medians[1] == [1.0, 0.9, 1.5]


def test_a_sibling_that_ended_early_counts_with_its_last_value_and_does_not_block():
    g = groups(2, max_t=8)          # rungs 1, 2, 4
    g.result("c0s0", 1, 1.0), g.result("c0s1", 1, 1.0)
    g.result("c0s0", 2, 0.8), g.result("c0s1", 2, 0.8)
    g.result("c1s0", 1, 0.9), g.result("c1s1", 1, 0.9)
    g.result("c1s0", 2, 5.0)
    g.end("c1s1")                   # e.g. diverged and stopped itself after epoch 1 (objective 0.9 kept)
    assert g.stopped("c1s0"), "median of 5.0 and 0.9 = 2.95, worse than 0.8"
    assert g.medians[2] == [0.8, 2.95]


def test_higher_rungs_wait_for_lower_ones_and_group_size_guards_late_siblings():
    g = SeedGroups(1, 4, 2, group_size=2)
    g.add("a0", group_key({"x": 0, "seed": 0}))
    g.result("a0", 1, 1.0)
    assert g.medians[1] == [], "only one of two seeds has been added: not judged yet"
    g.add("a1", group_key({"x": 0, "seed": 1}))
    g.result("a1", 1, 1.0)
    assert g.medians[1] == [1.0]


def test_scheduler_refuses_max_mode():
    with pytest.raises(ValueError, match="mode='max' is invalid"):
        SeedGroupedASHA(metric="m", mode="max")


def test_tiny_tune_run_stops_whole_configurations(tmp_path):
    """A real Tune run: 3 configurations x 2 seeds whose objective is set by the config (config c
    is c + seed/10 at every epoch), run one at a time: each configuration's seeds always end at
    the same epoch, and the worst configuration is stopped at the first rung, both seeds. With one
    slot, a first seed reaching a rung is paused so its sibling can start."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import tune

    import json
    import tempfile

    def trainable(config):   # resumes from its checkpoint after a PAUSE, as the study's trials do
        start = 0
        if tune.get_checkpoint() is not None:
            with tune.get_checkpoint().as_directory() as d:
                start = json.load(open(os.path.join(d, "state.json")))["epoch"]
        for epoch in range(start + 1, 5):
            with tempfile.TemporaryDirectory() as d:
                json.dump({"epoch": epoch}, open(os.path.join(d, "state.json"), "w"))
                tune.report({"obj": config["c"] + config["seed"] / 10}, checkpoint=tune.Checkpoint.from_directory(d))

    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        points = [{"c": c, "seed": s} for c in (0.0, 1.0, 2.0) for s in (0, 1)]
        from ray.tune.search.basic_variant import BasicVariantGenerator

        sched = SeedGroupedASHA(metric="obj", mode="min", max_t=4, grace_period=1, reduction_factor=2, group_size=2)
        tuner = tune.Tuner(trainable, param_space={"c": tune.choice([0.0, 1.0, 2.0]), "seed": tune.choice([0, 1])},
                           tune_config=tune.TuneConfig(search_alg=BasicVariantGenerator(points_to_evaluate=points),
                                                       scheduler=sched, num_samples=len(points)),
                           run_config=tune.RunConfig(storage_path=str(tmp_path), name="seed_asha", verbose=0))
        results = tuner.fit()
    finally:
        ray.shutdown()
    epochs = {}
    for r in results:
        epochs.setdefault(r.config["c"], set()).add(r.metrics["training_iteration"])
    assert all(len(e) == 1 for e in epochs.values()), epochs          # seeds of a config end together
    assert epochs[0.0] == {4} and epochs[2.0] == {1}, epochs
