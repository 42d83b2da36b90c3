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
    cfg, _ = config_from_args(["--search", "optuna", "--num-samples", "12", "--variants", "vae,powerlaw_clamp",
                               "--gammas", "0.5,1.5", "--storage-path", str(tmp_path), "--study-name", "opt", *more])
    (tmp_path / "opt").mkdir()   # the study folder, claimed before Ray starts
    return cfg


def test_optuna_study_lives_in_a_journal_beside_the_results_and_survives_a_resume(tmp_path):
    cfg = optuna_cfg(tmp_path)
    search = optuna_search(cfg, {})
    assert search.max_concurrent == OPTUNA_DEFAULT_CONCURRENCY == max_concurrent(cfg)
    for i in range(3):
        config = search.suggest(f"t{i}")
        assert config["variant"] in ("vae", "powerlaw_clamp")
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
    cfg, _ = config_from_args(["--search", "optuna", "--num-samples", "2", "--storage-path", str(tmp_path)])
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
