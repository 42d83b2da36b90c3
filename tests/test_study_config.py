"""The study's pure side: StudyConfig, presets, the command line, the grid, bad input, dry-run.
No Ray is started here (tests/test_study_ray.py runs real studies)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from plvae import metrics as M
from plvae.config import TrialConfig
from plvae.priors import VARIANT_NAMES, VARIANTS
from tune.cli import config_from_args, load_preset, preset_names
from tune.plan import describe, plan
from tune.run_study import main
from tune.study_config import STUDY_METRICS, StudyConfig, StudyError
from tune.sweeps import SWEEPS, OptunaSpace, parse_values

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def expected_grid_size(cfg: StudyConfig) -> int:
    """Independent count: per variant, the product of the lists of the fields it uses."""
    total = 0
    for name in cfg.variants:
        v = VARIANTS[name]
        n = 1
        for tfield, lst in SWEEPS.items():
            if tfield != "variant" and v.uses(tfield):
                n *= len(getattr(cfg, lst))
        total += n
    return total


# ---------------------------------------------------------------------------- presets and the grid
def test_presets_exist_and_validate():
    assert {"quick", "paper", "full"} <= set(preset_names())
    for name in preset_names():
        cfg = load_preset(name).fill_in().validate()
        if cfg.search == "grid" and not cfg.grids:
            assert len(cfg.trial_dicts()) == expected_grid_size(cfg)
        elif cfg.search == "grid":  # a union of grids: at most their sum, at least the largest
            sizes = [expected_grid_size(cfg._grid(i)) for i in range(len(cfg.grids))]
            assert max(sizes) <= len(cfg.trial_dicts()) <= sum(sizes)
        assert cfg.study_name.startswith(name + "_")
        assert cfg.count() == len(cfg.trial_dicts())   # the linear count is exact


def test_evidence_real_is_the_documented_design():
    """The preset's comment promises 260 + 520 + 100 + 140 = 1020 trials, ten seeds each setting; the
    beta sweep goes three halvings below 0.025 (issue 19)."""
    cfg = load_preset("evidence_real").fill_in().validate()
    p = plan(cfg, {"k": 1.7})
    assert p.extra == {"data_alpha": 1.7, "data_gamma": 0.85}
    trials = p.trials
    assert len(trials) == 1020
    assert {t["latent_dim"] for t in trials} == {16, 64, 256}
    assert {t["min_decay"] for t in trials if t["variant"] == "powerlaw_clamp"} == {0.001, 0.01}
    assert {t["gamma"] for t in trials if t["variant"] == "powerlaw_clamp"} == {0.25, 0.85, 1.7, 2.55}
    assert {t["kl_coeff"] for t in trials if t["variant"] == "vae" and t["latent_dim"] == 64} == \
        {0.003125, 0.00625, 0.0125, 0.025, 0.05, 0.1, 0.2, 0.4}
    assert {t["variant"] for t in trials} == set(VARIANT_NAMES)
    settings = {}
    for t in trials:
        key = json.dumps({k: v for k, v in t.items() if k != "seed"}, sort_keys=True)
        settings.setdefault(key, set()).add(t["seed"])
    assert all(len(seeds) == 10 for seeds in settings.values())


def test_kl_coeffs_is_a_sweep():
    cfg, _ = config_from_args(["--variants", "vae", "--kl-coeffs", "0.05,0.1,0.2", "--seeds", "0,1"])
    assert sorted({t["kl_coeff"] for t in cfg.trial_dicts()}) == [0.05, 0.1, 0.2]
    assert len(cfg.trial_dicts()) == 6
    with pytest.raises(StudyError, match="kl_coeff=-1"):
        config_from_args(["--kl-coeffs", "-1"])


def test_gammas_relative_to_alpha_resolve_with_the_measured_alpha():
    cfg, _ = config_from_args(["--variants", "vae,powerlaw", "--gammas", "0.25,alpha/2,1.5*alpha",
                               "--gamma-from-data"])
    p = plan(cfg, {"natural_patches": 1.7})
    assert p.extra == {"data_alpha": 1.7, "data_gamma": 0.85} and p.gammas == [0.25, 0.85, 2.55]
    assert sorted({t["gamma"] for t in p.trials if t["variant"] == "powerlaw"}) == [0.25, 0.85, 2.55]
    assert cfg.gammas == [0.25, "alpha/2", "1.5*alpha"]   # the plan resolves a copy: the study is unchanged
    # Without a measured alpha there is nothing to be relative to: one line, before Ray.
    with pytest.raises(StudyError, match="gamma='alpha/2' is invalid"):
        config_from_args(["--variants", "powerlaw", "--gammas", "alpha/2"])
    with pytest.raises(StudyError, match="gammas="):
        config_from_args(["--variants", "powerlaw", "--gammas", "alfa/2", "--gamma-from-data"])


def test_grids_run_their_union_and_reject_bad_entries(tmp_path):
    f = tmp_path / "g.yaml"
    f.write_text("variants: [vae, powerlaw]\ngammas: [1.0]\nlatent_dims: [8]\nseeds: [0, 1]\n"
                 "grids:\n  - {}\n  - {variants: [vae], kl_coeffs: [0.1, 0.2]}\n  - {latent_dims: [4]}\n")
    cfg, _ = config_from_args(["--config", str(f)])
    trials = cfg.trial_dicts()
    # grid 0: 2 variants x 2 seeds; grid 1 adds vae at beta 0.2 (beta 0.1 is grid 0's); grid 2: latent 4
    assert len(trials) == 4 + 2 + 4
    assert len({json.dumps(t, sort_keys=True) for t in trials}) == len(trials)
    for text, match in (("grids: [{latent_dim: [4]}]", r"grids\[0\]\.latent_dim"),
                        ("grids: [{latent_dims: [0]}]", r"grids\[0\]\.latent_dim=0"),
                        ("grids: 3", "grids=3"),
                        ("primary: [{quantity: best, variant: vae}]", r"primary\[0\]\.quantity='best'"),
                        ("primary: [{quantity: final, variant: nope}]", r"primary\[0\]\.variant='nope'"),
                        ("primary: [{quantity: final}]", r"primary\[0\]=")):
        f.write_text(text + "\n")
        with pytest.raises(StudyError, match=match):
            config_from_args(["--config", str(f)])


def test_a_study_mixing_w2_with_kl_says_so_in_one_line():
    cfg, _ = config_from_args([])
    note = cfg.objective_note()
    assert note and "\n" not in note and "powerlaw_wae" in note and "rate-distortion" in note
    cfg, _ = config_from_args(["--variants", "vae,powerlaw_clamp"])
    assert cfg.objective_note() is None


def test_quick_is_the_default_and_covers_every_variant():
    cfg, _ = config_from_args([])
    # FIFO and three seeds: every group compared at the last epoch with n = 3 (issue 22)
    assert cfg.preset == "quick" and cfg.search == "grid" and cfg.scheduler == "fifo"
    assert cfg.metric == M.DEFAULT_STUDY_METRIC
    assert set(cfg.variants) == set(VARIANT_NAMES)
    assert cfg.trial["dataset"] == "natural_patches" and cfg.gpus_per_trial is None
    assert len(cfg.seeds) == 3 and len(cfg.gammas) >= 1


def test_paper_preset_is_the_seed_protocol():
    cfg = load_preset("paper").fill_in().validate()
    t = TrialConfig.from_dict(cfg.trial_dicts()[0])
    assert (t.dataset, t.net, t.latent_dim, t.enc_out_dim, t.lr, t.batch_size, t.max_epochs) == \
        ("cifar10", "resnet18", 256, 512, 1e-4, 32, 5)
    assert (t.kl_estimator, t.kl_reduction, t.kl_coeff, t.val_fraction, t.min_decay) == ("mc", "mean", 0.1, 0.2, 1e-3)
    assert cfg.variants == ["vae", "powerlaw_clamp"]
    assert cfg.gammas == [round(0.1 * i, 10) for i in range(20)]
    assert cfg.seeds == [0, 1, 2, 3, 4]
    assert len(cfg.trial_dicts()) == 5 + 20 * 5


def test_grid_deduplicates_fields_a_variant_does_not_use():
    cfg, _ = config_from_args(["--variants", "all", "--gammas", "0.5,1", "--min-decays", "0.001,0.1",
                               "--decay-rates", "0.1,1", "--clip-dims", "2,4", "--seeds", "0,1"])
    trials = cfg.trial_dicts()
    assert len(trials) == expected_grid_size(cfg)
    keys = [json.dumps(d, sort_keys=True) for d in trials]
    assert len(set(keys)) == len(keys)
    defaults = TrialConfig()
    for d in trials:
        assert set(d) == set(TrialConfig.field_names())   # a full, flat TrialConfig dict
        assert TrialConfig.from_dict(d).to_dict() == d
        v = VARIANTS[d["variant"]]
        if not v.uses_gamma:
            assert d["gamma"] == defaults.gamma
        if not v.uses_min_decay:
            assert d["min_decay"] == defaults.min_decay
        if not v.uses_clip_dim:
            assert d["clip_dim"] == defaults.clip_dim
        if not v.uses_decay_rate:
            assert d["decay_rate"] == defaults.decay_rate
    by_variant = {n: sum(d["variant"] == n for d in trials) for n in VARIANT_NAMES}
    assert by_variant["vae"] == 2                      # seeds only
    assert by_variant["powerlaw"] == 2 * 2             # gammas x seeds
    assert by_variant["powerlaw_clamp"] == 2 * 2 * 2   # gammas x min_decays x seeds
    assert by_variant["powerlaw_clip"] == 2 * 2 * 2    # gammas x clip_dims x seeds
    assert by_variant["exponential"] == 2 * 2 * 2      # min_decays x decay_rates x seeds


def test_duplicate_values_are_removed_and_ints_become_floats():
    cfg, _ = config_from_args(["--variants", "vae,vae,powerlaw", "--gammas", "1,1.0,0.5", "--seeds", "3"])
    assert cfg.variants == ["vae", "powerlaw"]
    assert cfg.gammas == [1.0, 0.5] and all(isinstance(g, float) for g in cfg.gammas)
    assert len(cfg.trial_dicts()) == 1 + 2


def test_ranges():
    assert parse_values("gammas", "0:2:0.1") == [round(0.1 * i, 10) for i in range(20)]
    assert parse_values("gammas", "0:1:0.25,1.5") == [0.0, 0.25, 0.5, 0.75, 1.5]
    assert parse_values("seeds", "0:5:1", int) == [0, 1, 2, 3, 4]
    assert parse_values("lrs", "1e-3,1e-2") == [1e-3, 1e-2]


def test_precedence_preset_then_config_file_then_options(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("gammas: [0.25]\nseeds: '0:3:1'\nepochs: 2\ntrial:\n  batch_size: 32\n")
    cfg, _ = config_from_args(["--config", str(f), "--seeds", "7", "--set", "kl_estimator=analytic"])
    assert cfg.gammas == [0.25] and cfg.seeds == [7]
    assert cfg.trial["batch_size"] == 32 and cfg.trial["max_epochs"] == 2
    assert cfg.trial["hidden_dims"] == [16, 32]          # from the quick preset
    assert cfg.trial["kl_estimator"] == "analytic"
    assert cfg.config_file == str(f)


def test_resources_and_storage():
    cfg, _ = config_from_args(["--gpus-per-trial", "0.25", "--cpus-per-trial", "2", "--storage-path", "rel/dir",
                               "--study-name", "s1"])
    assert cfg.resources() == {"cpu": 2, "gpu": 0.25}
    assert cfg.storage_path == os.path.abspath("rel/dir")
    assert cfg.experiment_path == os.path.join(os.path.abspath("rel/dir"), "s1")
    cfg, _ = config_from_args(["--gpus-per-trial", "2", "--storage-path", "s3://bucket/x"])
    assert cfg.gpus_per_trial == 2 and isinstance(cfg.gpus_per_trial, int)
    assert cfg.storage_path == "s3://bucket/x"
    cfg, _ = config_from_args(["--preset", "paper", "--gpus-per-trial", "none"])
    assert load_preset("paper").gpus_per_trial == 0.25 and cfg.gpus_per_trial is None
    assert cfg.resources() == {"cpu": 2, "gpu": 0}


@pytest.mark.parametrize("variant", VARIANT_NAMES)
def test_optuna_space_is_conditional_and_complete(variant):
    """One arm per Optuna study (issue 18): its knobs only, never the variant or the seed."""
    cfg, _ = config_from_args(["--search", "optuna", "--num-samples", "5", "--gammas", "0.2,1.5",
                               "--min-decays", "0.0001,0.1", "--seeds", "0,1", "--variants", variant])
    assert cfg.num_samples == 5 and cfg.optuna_trials() == 10
    space = OptunaSpace(cfg.to_dict(), {"data_alpha": 1.2})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(10):
        trial = study.ask()
        d = space(trial)                  # the full trial dict, sampled values included
        assert set(d) == set(TrialConfig.field_names())
        assert all(d[k] == v for k, v in trial.params.items())
        t = TrialConfig.from_dict(d)   # every suggestion is a valid, full trial
        seen.add(t.variant)
        v = VARIANTS[t.variant]
        if v.uses_gamma:
            assert 0.2 <= t.gamma <= 1.5
        else:
            assert "gamma" not in trial.params and t.gamma == TrialConfig().gamma
        if v.uses_min_decay:
            assert 1e-4 <= t.min_decay <= 0.1
        else:
            assert "min_decay" not in trial.params
        assert t.extra == {"data_alpha": 1.2}
        assert "seed" not in trial.params and "variant" not in trial.params and t.seed == 0
        study.tell(trial, 1.0)
    assert seen == {variant}


def test_dry_run_prints_trials_and_resources(capsys, tmp_path):
    rc = main(["--dry-run", "--variants", "vae,powerlaw_clamp", "--gammas", "0.5,1", "--gpus-per-trial", "0.5",
               "--storage-path", str(tmp_path), "--study-name", "dry"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "9 trials" in out and "1 CPU, 0.5 GPU" in out   # 3 seeds x (1 + 2 gammas)
    assert "variant=powerlaw_clamp, gamma=0.5" in out
    assert not (tmp_path / "dry").exists()   # nothing written, nothing started


def test_dry_run_gamma_from_data_adds_half_alpha(capsys, tmp_path):
    rc = main(["--dry-run", "--gamma-from-data", "--variants", "powerlaw_clamp", "--gammas", "0", "--seeds", "0",
               "--set", "n_train=512", "--set", "n_val=64", "--storage-path", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    alpha = float(out.split("data alpha = ")[1].split(":")[0])
    assert alpha > 0
    assert "2 trials" in out


def test_describe_optuna():
    cfg, _ = config_from_args(["--search", "optuna", "--variants", "vae", "--seeds", "0"])
    text = describe(cfg, [])
    assert "16 trials" in text and "optuna space" in text


# ---------------------------------------------------------------------------- bad input
def _yaml(tmp_path, text: str) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return str(p)


BAD = [
    # (argv, text the one line must contain)
    (["--variants", "vae,bogus"], "variant='bogus'"),
    (["--preset", "nope"], "preset='nope'"),
    (["--gammas", "-1"], "gamma=-1.0"),
    (["--gammas", "0:2"], "gammas='0:2'"),
    (["--gammas", "0:2:0"], "gammas='0:2:0'"),
    (["--gammas", "2:0:0.1"], "gammas='2:0:0.1'"),
    (["--gammas", "a,b"], "gammas='a,b'"),
    (["--min-decays", "0"], "min_decay=0.0"),
    (["--min-decays", "1.5"], "min_decay=1.5"),
    (["--latent-dims", "16.5"], "latent_dims='16.5'"),
    (["--clip-dims", "0"], "clip_dim=0"),
    (["--decay-rates", "-1"], "decay_rate=-1.0"),
    (["--lrs", "0"], "lr=0.0"),
    (["--gpus-per-trial", "1.5"], "gpus_per_trial=1.5"),
    (["--gpus-per-trial", "0"], "gpus_per_trial=0"),
    (["--gpus-per-trial", "-1"], "gpus_per_trial=-1"),
    (["--cpus-per-trial", "0"], "cpus_per_trial=0"),
    (["--cpus-per-trial", "0.5"], "cpus_per_trial=0.5"),
    (["--variants", ""], "variants=''"),
    (["--dataset", "imagenet"], "dataset='imagenet'"),
    (["--net", "vit"], "net='vit'"),
    (["--config", "/nonexistent/study.yaml"], "config='/nonexistent/study.yaml'"),
    (["--epochs", "0"], "max_epochs=0"),
    (["--epochs", "-3"], "max_epochs=-3"),
    (["--epochs", "abc"], "max_epochs='abc'"),
    (["--metric", "val_bogus"], "metric='val_bogus'"),
    (["--metric", M.DIVERGED], f"metric='{M.DIVERGED}'"),
    (["--search", "random"], "search='random'"),
    (["--scheduler", "hyperband"], "scheduler='hyperband'"),
    (["--search", "optuna", "--num-samples", "0"], "num_samples=0"),
    (["--num-samples", "3"], "num_samples=3"),
    (["--max-concurrent", "0"], "max_concurrent=0"),
    (["--scheduler", "asha", "--grace-period", "99"], "grace_period=99"),
    (["--reduction-factor", "1"], "reduction_factor=1"),
    (["--address", "not an address"], "address='not an address'"),
    (["--address", "auto", "--num-cpus", "2"], "num_cpus=2"),
    (["--study-name", "a/b"], "study_name='a/b'"),
    (["--set", "bogus=1"], "bogus='1' is not a trial field"),
    (["--set", "gamma=1"], "gamma='1' is swept"),
    (["--set", "batch_size=0"], "batch_size=0"),
    (["--bogus-option"], "unrecognized arguments: --bogus-option"),
]


@pytest.mark.parametrize("argv,needle", BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
def test_bad_option_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    rc = main(argv + ["--storage-path", str(tmp_path), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "allowed" in lines[0] or "unrecognized" in lines[0]


BAD_YAML = [
    ("foo: 1\n", "foo=1 is not a study field"),
    ("trial:\n  bogus: 1\n", "trial.bogus=1 is not a trial field"),
    ("trial:\n  gamma: 0.5\n", "trial.gamma=0.5 is swept"),
    ("trial:\n  dataset: imagenet\n", "dataset='imagenet'"),
    ("variants: []\n", "variants=[]"),
    ("seeds: []\n", "seeds=[]"),
    ("gammas: [0.5, -0.1]\n", "gamma=-0.1"),
    ("cpus_per_trial: 1.5\n", "cpus_per_trial=1.5"),
    ("gammas: [0.5\n", "valid YAML"),
    ("- just\n- a list\n", "a YAML mapping"),
    ("dashboard: maybe\n", "dashboard='maybe'"),
    ("trial: 3\n", "trial=3"),
]


@pytest.mark.parametrize("text,needle", BAD_YAML, ids=[t.split("\n")[0] for t, _ in BAD_YAML])
def test_bad_yaml_is_one_line_exit_2(text, needle, capsys, tmp_path):
    rc = main(["--config", _yaml(tmp_path, text), "--dry-run", "--storage-path", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    assert needle in lines[0], lines[0]


def test_validation_builds_every_trial():
    # An unused-by-the-grid value is still validated (gamma < 0 with only the baseline).
    with pytest.raises(StudyError, match="gamma=-1.0"):
        StudyConfig(variants=["vae"], gammas=[-1.0]).fill_in().validate()
    # A value valid alone but invalid with the fixed fields (resnet18 needs no hidden_dims; a
    # clip variant without clip_dims) is refused.
    with pytest.raises(StudyError, match="clip_dims"):
        StudyConfig(variants=["powerlaw_clip"], clip_dims=[]).fill_in().validate()
    StudyConfig(variants=["vae"], clip_dims=[]).fill_in().validate()   # not needed, not required


def test_metric_names_come_from_plvae_metrics():
    assert M.DEFAULT_STUDY_METRIC in STUDY_METRICS
    assert M.VAL_LOSS in STUDY_METRICS and M.DIVERGED not in STUDY_METRICS


def test_existing_study_needs_resume_and_resume_needs_a_study(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["--storage-path", str(tmp_path), "--study-name", "taken", "--dry-run"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["--storage-path", str(tmp_path), "--study-name", "other", "--resume", "--dry-run"]) == 2
    assert "study_name='other'" in capsys.readouterr().err
    assert main(["--storage-path", str(tmp_path), "--resume", "--dry-run"]) == 2
    assert "no unfinished study" in capsys.readouterr().err


# ---------------------------------------------------------------------------- the real command line
def test_cli_subprocess_bad_input_exits_2_before_ray(tmp_path):
    """`python tune/run_study.py` itself: exit status 2, one stderr line, no traceback, Ray never imported."""
    code = ("import sys, runpy; sys.argv = ['tune/run_study.py', '--gpus-per-trial', '1.5', '--storage-path', "
            f"{str(tmp_path)!r}]\n"
            "try:\n    runpy.run_path('tune/run_study.py', run_name='__main__')\n"
            "except SystemExit as e:\n    print('ray imported:', 'ray' in sys.modules); sys.exit(e.code)\n")
    p = subprocess.run([PY, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: gpus_per_trial=1.5 is invalid; allowed: a fraction in (0, 1] or an integer >= 1 "
        "(leave it out, or 'none', for CPU-only trials)"]
    assert "ray imported: False" in p.stdout
    assert "Traceback" not in p.stderr


def test_cli_subprocess_dry_run_as_a_script_from_any_directory(tmp_path):
    """The documented entry point, run from another directory: tune/ on sys.path shadows nothing."""
    p = subprocess.run([PY, str(REPO / "tune" / "run_study.py"), "--dry-run", "--study-name", "d"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    cfg = load_preset("quick").fill_in().validate()
    assert f"{len(cfg.trial_dicts())} trials" in p.stdout
    assert str(tmp_path / "results" / "d") in p.stdout   # ./results, made absolute


def test_grace_period_binds_only_asha_and_a_preset_grace_is_clamped(capsys, tmp_path):
    cfg, _ = config_from_args(["--preset", "full", "--epochs", "1", "--scheduler", "fifo"])   # its grace is 2
    assert cfg.max_epochs == 1
    # --epochs 1 with a preset whose ASHA grace is 2: clamped, and the study says so.
    cfg, args = config_from_args(["--preset", "full", "--epochs", "1"])
    assert cfg.grace_period == 1 and cfg.scheduler == "asha"
    assert args.notes == ["note: grace_period 2 (from the preset) clamped to max_epochs=1"]
    assert main(["--preset", "full", "--epochs", "1", "--dry-run", "--storage-path", str(tmp_path)]) == 0
    assert "clamped" in capsys.readouterr().out
    # A grace period the user set is theirs: too large is an error, not silently changed.
    with pytest.raises(StudyError, match=r"^grace_period=3 is invalid"):
        config_from_args(["--epochs", "2", "--scheduler", "asha", "--grace-period", "3"])
