"""data_seed_from_seed: each replicate redraws the data as well as the weights (issue 18: the CIs
must cover the draw of the data), in the grid, in Optuna's space, through --print-config; a fixed
data_seed beside it is refused in one line."""
from __future__ import annotations

import optuna
import yaml

from tune.cli import config_from_args
from tune.run_study import main
from tune.sweeps import OptunaSpace

BASE = ["--variants", "vae,powerlaw_clamp", "--gammas", "0.25", "--seeds", "0:4:1", "--lrs", "1e-3,1e-2"]


def test_each_trial_draws_the_data_of_its_own_seed():
    cfg, _ = config_from_args(BASE + ["--data-seed-from-seed"])
    trials = cfg.trial_dicts()
    assert len(trials) == 16 and all(t["data_seed"] == t["seed"] for t in trials)
    assert {t["data_seed"] for t in trials} == {0, 1, 2, 3}
    off, _ = config_from_args(BASE)
    assert {t["data_seed"] for t in off.trial_dicts()} == {0}   # the default: one draw of the data


def test_optuna_suggestions_draw_the_data_of_their_seed():
    """Optuna's space fixes the first seed (and its data); SeedRepeater sets both per repeat
    (tests/test_workbench_optuna.py runs each suggestion at every seed)."""
    cfg, _ = config_from_args(BASE + ["--variants", "powerlaw_clamp", "--data-seed-from-seed", "--search", "optuna",
                                      "--num-samples", "6"])
    space = OptunaSpace(cfg.to_dict(), {})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = [space(study.ask()) for _ in range(12)]
    assert all(c["data_seed"] == c["seed"] == 0 for c in configs)


def test_it_round_trips_through_print_config_and_refuses_a_fixed_data_seed(tmp_path, capsys):
    assert main(BASE + ["--data-seed-from-seed", "--storage-path", str(tmp_path), "--print-config"]) == 0
    f = tmp_path / "s.yaml"
    f.write_text(capsys.readouterr().out)
    assert yaml.safe_load(f.read_text())["data_seed_from_seed"] is True
    cfg, _ = config_from_args(["--config", str(f)])
    assert all(t["data_seed"] == t["seed"] for t in cfg.trial_dicts())
    assert main(BASE + ["--data-seed-from-seed", "--data-seed", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: trial.data_seed=3 is invalid; allowed: "), err
