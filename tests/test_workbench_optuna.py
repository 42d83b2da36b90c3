"""Optuna searches keep their study in a journal file beside the results (optuna-dashboard opens it;
a resumed study keeps the sampler's history) and run a few trials at a time by default.
No Ray cluster is started: the searcher is driven by hand, as Tune drives it."""
from __future__ import annotations

import pickle

import pytest

optuna = pytest.importorskip("optuna")
from tune.cli import config_from_args  # noqa: E402
from tune.plan import OPTUNA_DEFAULT_CONCURRENCY, describe, max_concurrent  # noqa: E402
from tune.reporting import STUDY_OBJECTIVE  # noqa: E402
from tune.study_runner import OPTUNA_JOURNAL, optuna_search  # noqa: E402


def optuna_cfg(tmp_path, *more):
    cfg, _ = config_from_args(["--search", "optuna", "--num-samples", "12", "--variants", "powerlaw_clamp",
                               "--gammas", "0.5,1.5", "--seeds", "0", "--storage-path", str(tmp_path), "--study-name", "opt", *more])
    (tmp_path / "opt").mkdir()   # the study folder, claimed before Ray starts
    return cfg


def test_optuna_study_lives_in_a_journal_beside_the_results_and_survives_a_resume(tmp_path):
    cfg = optuna_cfg(tmp_path)
    search = optuna_search(cfg, {})
    assert search.max_concurrent == OPTUNA_DEFAULT_CONCURRENCY == max_concurrent(cfg)
    for i in range(3):
        config = search.suggest(f"t{i}")
        assert config["variant"] == "powerlaw_clamp"
        search.on_trial_complete(f"t{i}", {STUDY_OBJECTIVE: 1.0 - 0.1 * i, "training_iteration": cfg.max_epochs})
    journal = tmp_path / "opt" / OPTUNA_JOURNAL
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="opt", storage=storage)   # what optuna-dashboard reads
    assert [t.value for t in study.trials] == pytest.approx([1.0, 0.9, 0.8])
    # --resume: Tune restores the pickled searcher, which writes on into the same journal
    again = pickle.loads(pickle.dumps(search))
    again.suggest("t3")
    again.on_trial_complete("t3", {STUDY_OBJECTIVE: 0.5, "training_iteration": cfg.max_epochs})
    assert len(optuna.load_study(study_name="opt", storage=storage).trials) == 4


def test_concurrency_default_is_capped_by_the_samples_and_the_user_wins(tmp_path):
    cfg = optuna_cfg(tmp_path, "--max-concurrent", "7")
    assert optuna_search(cfg, {}).max_concurrent == 7
    cfg, _ = config_from_args(["--search", "optuna", "--num-samples", "2", "--variants", "vae", "--seeds", "0",
                               "--storage-path", str(tmp_path)])
    assert max_concurrent(cfg) == 2 and "max concurrent: 2" in describe(cfg, [])
    grid, _ = config_from_args(["--storage-path", str(tmp_path)])
    assert max_concurrent(grid) is None    # a grid runs as resources allow


def test_early_stopped_trials_are_pruned_the_objective_named_and_tune_ids_kept(tmp_path):
    """A trial ASHA stopped after epoch 1 of 4 is PRUNED (its value: the last intermediate one);
    one that ran all 4 epochs, or diverged early, is COMPLETE; the objective is named; every Optuna
    trial names its Tune trial."""
    from tune.optuna_study import TUNE_TRIAL_ID
    from tune.reporting import DIVERGED_OBJECTIVE

    cfg = optuna_cfg(tmp_path, "--epochs", "4")
    search = optuna_search(cfg, {})
    ends = {"full": (4, 0.5, 0.0), "stopped": (1, 0.9, 0.0), "diverged": (2, DIVERGED_OBJECTIVE, 1.0)}
    for tid, (epochs, value, diverged) in ends.items():
        search.suggest(tid)
        for it in range(1, epochs + 1):
            result = {STUDY_OBJECTIVE: value, "training_iteration": it, "diverged": diverged}
            search.on_trial_result(tid, result)
        search.on_trial_complete(tid, result)
    journal = tmp_path / "opt" / OPTUNA_JOURNAL
    study = optuna.load_study(study_name="opt", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    by = {t.user_attrs[TUNE_TRIAL_ID]: t for t in study.trials}
    assert set(by) == set(ends)
    assert by["stopped"].state == optuna.trial.TrialState.PRUNED
    assert by["full"].state == by["diverged"].state == optuna.trial.TrialState.COMPLETE
    assert by["full"].value == 0.5 and by["diverged"].value == DIVERGED_OBJECTIVE
    assert study.metric_names == [STUDY_OBJECTIVE]


def test_optuna_searches_one_arm_and_runs_each_suggestion_at_every_seed(tmp_path):
    """Issue 18: a seed is a replicate, not a knob. Three seeds: Ray's Repeater (SeedRepeater) runs
    each Optuna suggestion at all three, Optuna never sees `seed` as a parameter, and it is told the
    group's mean; under a tuning protocol only the tuning seeds' values reach it. Several variants
    (arms) in one Optuna study are refused in one line."""
    from tune.errors import StudyError

    cfg = optuna_cfg(tmp_path, "--seeds", "4,5,6", "--data-seed-from-seed", "--lrs", "1e-3,1e-2,1e-1")
    assert cfg.optuna_trials() == 36 and "each run at every seed [4, 5, 6]" in describe(cfg, [])
    search = optuna_search(cfg, {})
    configs = {}
    for i in range(6):   # two suggestions x three seeds, in order (at most 4 run at once)
        c = configs[f"t{i}"] = search.suggest(f"t{i}")
        assert c["seed"] == c["data_seed"] == (4, 5, 6)[i % 3]
        search.on_trial_complete(f"t{i}", {STUDY_OBJECTIVE: float(i), "training_iteration": cfg.max_epochs})
    groups = [list(configs.values())[:3], list(configs.values())[3:]]
    for g in groups:   # the same configuration at every seed
        assert all({k: v for k, v in c.items() if k not in ("seed", "data_seed")} ==
                   {k: v for k, v in g[0].items() if k not in ("seed", "data_seed")} for c in g)
    study = optuna.load_study(study_name="opt", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "opt" / OPTUNA_JOURNAL))))
    assert len(study.trials) == 2
    assert all("seed" not in t.params and "variant" not in t.params for t in study.trials)
    assert {"lr", "gamma"} <= set(study.trials[0].params)
    assert [t.value for t in study.trials] == pytest.approx([1.0, 4.0])   # mean of 0,1,2 and of 3,4,5
    with pytest.raises(StudyError, match=r"^variants=\['vae', 'powerlaw_clamp'\] is invalid; allowed: one variant"):
        config_from_args(["--search", "optuna", "--variants", "vae,powerlaw_clamp", "--storage-path", str(tmp_path)])


def test_under_a_protocol_only_the_tuning_seeds_steer_optuna(tmp_path):
    import yaml

    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"tuning": {"tuning_seeds": [7, 8], "evaluation_seeds": [0]}}))
    cfg, _ = config_from_args(["--search", "optuna", "--num-samples", "3", "--variants", "vae",
                               "--lrs", "1e-3,1e-2", "--config", str(f), "--storage-path", str(tmp_path),
                               "--study-name", "opt"])
    (tmp_path / "opt").mkdir()
    assert cfg.seeds == [0, 7, 8]
    search = optuna_search(cfg, {})
    values = {0: 100.0, 7: 1.0, 8: 3.0}   # the evaluation seed's value must not reach Optuna
    for i in range(3):
        c = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", {STUDY_OBJECTIVE: values[c["seed"]], "training_iteration": cfg.max_epochs})
    study = optuna.load_study(study_name="opt", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "opt" / OPTUNA_JOURNAL))))
    assert [t.value for t in study.trials] == pytest.approx([2.0])
