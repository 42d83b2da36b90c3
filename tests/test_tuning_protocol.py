"""The tuning protocol as a study option (issue 18; tune/tuning.py): a preset's `tuning:` section
sets the study's seeds, is validated in one line before Ray, survives --print-config and --resume,
and is what study.json records for analysis.tuned.Protocol. No Ray is started here."""
from __future__ import annotations

import json
import pickle

import pytest
import yaml

from analysis.tune_files import read_study_json
from plvae.study_files import TUNER_FILE
from analysis.tuned import Protocol
from tune.cli import config_from_args, load_preset
from tune.plan import describe
from tune.run_study import main
from tune.study_record import claim, new_record, read_record

BASE = ["--variants", "vae,powerlaw_clamp", "--gammas", "0.25", "--lrs", "1e-3,1e-2", "--epochs", "2"]
TUNING = {"tuning_seeds": [100, 101], "evaluation_seeds": [0, 1, 2], "knobs": ["lr"]}


def config_file(tmp_path, **extra):
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump({"tuning": TUNING, **extra}))
    return ["--config", str(f)]


@pytest.mark.parametrize("name", ["tuned_real", "tuned_synthetic"])
def test_the_tuned_presets_declare_their_protocol(name):
    cfg = load_preset(name).fill_in().validate()
    assert cfg.tuning["tuning_seeds"] == [100, 101, 102] and cfg.tuning["evaluation_seeds"] == list(range(10))
    assert cfg.tuning["phase"] == "tuning"
    assert cfg.seeds == [100, 101, 102]   # derived: the tuning phase runs the tuning seeds (then analysis.tuned_plan)
    assert cfg.data_seed_from_seed is True
    assert {t["seed"] for t in cfg.trial_dicts()} == set(cfg.seeds)
    p = Protocol.from_meta(new_record(cfg))    # what study.json records
    assert p.tuning_seeds == (100, 101, 102) and p.evaluation_seeds == tuple(range(10)) and p.knobs == ("lr",)


def test_seeds_are_derived_and_a_disagreeing_seeds_list_is_refused(tmp_path, capsys):
    cfg, _ = config_from_args(BASE + config_file(tmp_path))
    assert cfg.seeds == [0, 1, 2, 100, 101] and cfg.tuning["knobs"] == ["lr"]
    assert "tuning protocol: lr picked on seeds [100, 101], reported on seeds [0, 1, 2] only" in describe(cfg, [])
    same, _ = config_from_args(BASE + config_file(tmp_path) + ["--seeds", "100,101,0,1,2"])
    assert sorted(same.seeds) == [0, 1, 2, 100, 101]
    for argv, needle in (
            (["--seeds", "0:5:1"], "error: seeds=[0, 1, 2, 3, 4] is invalid; allowed: the tuning section's seeds"),
            (["--lrs", "1e-3"], "error: tuning.knobs=['lr'] is invalid; allowed: knobs the study sweeps"),
    ):
        assert main(BASE + config_file(tmp_path) + argv + ["--dry-run"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(needle), err


@pytest.mark.parametrize("tuning, needle", [
    ({"tuning_seeds": [100, 1], "evaluation_seeds": [0, 1]},
     "tuning.evaluation_seeds=[0, 1] is invalid; allowed: seeds disjoint from tuning_seeds (shared: [1])"),
    ({"tuning_seeds": [], "evaluation_seeds": [0]}, "tuning.tuning_seeds=[] is invalid"),
    ({"evaluation_seeds": [0]}, "allowed: a mapping with tuning_seeds"),
    ({"tuning_seeds": [9], "evaluation_seeds": [0], "knobs": ["seed"]}, "tuning.knobs=['seed'] is invalid"),
    ({"tuning_seeds": [9], "evaluation_seeds": [0], "target_reach": 2}, "tuning.target_reach=2 is invalid"),
    ({"tuning_seeds": [9], "evaluation_seeds": [0], "budget": 3}, "tuning.budget=3 is invalid"),
])
def test_a_bad_tuning_section_is_one_line_before_ray(tuning, needle, tmp_path, capsys):
    f = tmp_path / "t.yaml"
    f.write_text(yaml.safe_dump({"tuning": tuning}))
    assert main(BASE + ["--config", str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err


def test_a_grid_may_not_set_its_own_seeds(tmp_path, capsys):
    argv = BASE + config_file(tmp_path, grids=[{"variants": ["vae"], "seeds": [5]}]) + ["--dry-run"]
    assert main(argv) == 2
    assert "grids[0].seeds=[5] is invalid" in capsys.readouterr().err


def test_it_round_trips_through_print_config_and_is_kept_on_resume(tmp_path, capsys):
    assert main(BASE + config_file(tmp_path) + ["--storage-path", str(tmp_path), "--print-config"]) == 0
    f = tmp_path / "printed.yaml"
    f.write_text(capsys.readouterr().out)
    printed = yaml.safe_load(f.read_text())
    assert printed["tuning"] == {**TUNING} and sorted(printed["seeds"]) == [0, 1, 2, 100, 101]
    cfg, _ = config_from_args(["--config", str(f), "--storage-path", str(tmp_path), "--study-name", "s"])
    rec = new_record(cfg)
    rec["heartbeat"] = "2020-01-01T00:00:00+00:00"   # an interrupted driver's record
    claim(cfg, rec)
    (tmp_path / "s" / TUNER_FILE).write_bytes(pickle.dumps({"stands for": "Tune's Tuner"}))   # intact Tune state
    (tmp_path / "s" / "experiment_state-2020-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [], "runner_data": {}}))
    rec = read_record(str(tmp_path / "s"))
    assert rec["study_config"]["tuning"] == TUNING
    # what load_study puts in meta (tests/test_tuned_pilot.py loads a whole study)
    assert Protocol.from_meta(read_study_json(tmp_path / "s", [])) == Protocol((100, 101), (0, 1, 2))
    assert main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s"]) == 0
    assert main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s",
                 "--seeds", "0,1"]) == 2   # a resume cannot change the seeds (nor the protocol behind them)
