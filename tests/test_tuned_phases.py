"""A tuning protocol run as two studies (issue 18; tune/tuning.py's ``phase``, analysis.tuned_plan,
analysis.phases): the tuning study runs the tuning seeds over every arm's grid, the evaluation study
the evaluation seeds at each arm's pick and above, and the analysis reads the two as one study.
The studies here are Tune's folder layout written by hand (test_analysis.write_trial) with known
curves, so the picks and the answer are known."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from analysis.load import load_studies
from analysis.phases import phase_labels
from analysis.tuned import Protocol, tuned
from analysis.tuned_plan import evaluation_config, main as plan_main
from plvae.config import TrialConfig
from test_analysis import write_trial   # Ray Tune's trial folder layout, written by hand
from tune.cli import config_from_args
from tune.errors import StudyError

TUNING_SEEDS, EVALUATION_SEEDS = [100, 101, 102], list(range(10))
PROTOCOL = {"tuning_seeds": TUNING_SEEDS, "evaluation_seeds": EVALUATION_SEEDS, "knobs": ["lr"]}
LRS = [1e-3, 1e-2, 1e-1]
EPOCHS = 12
TRIAL = dict(dataset="powerlaw_gaussian", image_size=8, channels=1, n_train=256, n_val=64, batch_size=64,
             max_epochs=EPOCHS, latent_dim=8)
# variant -> lr -> (floor, speed) or "diverge": vae is best at 1e-2 and diverges at 1e-1;
# powerlaw_clamp is best (and fast) at 1e-1.
BEHAVIOUR = {"vae": {1e-3: (1.0, 0.1), 1e-2: (1.0, 0.4), 1e-1: "diverge"},
             "powerlaw_clamp": {1e-3: (1.0, 0.1), 1e-2: (1.0, 0.4), 1e-1: (0.9, 1.2)}}


def _curve(floor, speed, seed):
    noise = 1 + 0.01 * np.random.default_rng(seed).standard_normal()
    return [floor * noise + math.exp(-speed * e) for e in range(EPOCHS + 1)]


def write_study(root, name, phase, arms, status="finished"):
    """A finished study folder: ``arms`` = [(variant, lr, seeds)]; study.json records the protocol."""
    d = root / name
    d.mkdir(parents=True)
    n = 0
    for variant, lr, seeds in arms:
        for seed in seeds:
            b = BEHAVIOUR[variant][lr]
            cfg = TrialConfig(**TRIAL, variant=variant, gamma=0.5 if variant != "vae" else 0.0, lr=lr, seed=seed,
                              data_seed=seed)
            curve = _curve(1.0, 0.4, seed) if b == "diverge" else _curve(*b, seed=hash((variant, lr, seed)) % 2**32)
            write_trial(d, f"{name[:3]}{n:05d}", cfg, curve, diverge_at=3 if b == "diverge" else None)
            n += 1
    trial = {k: v for k, v in TRIAL.items() if k != "latent_dim"}
    config = {"tuning": {**PROTOCOL, "phase": phase}, "trial": trial, "latent_dims": [TRIAL["latent_dim"]], "lrs": LRS, "data_seed_from_seed": True,
              "metric": "val_loss", "scheduler": "fifo"}
    (d / "study.json").write_text(json.dumps({"study_name": name, "status": status, "metric": "val_loss",
                                              "max_epochs": EPOCHS, "study_config": config}))
    return d


@pytest.fixture(scope="module")
def tuning_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("phases")
    return write_study(root, "tun", "tuning", [(v, lr, TUNING_SEEDS) for v in BEHAVIOUR for lr in LRS])


@pytest.fixture(scope="module")
def plan(tuning_dir):
    return evaluation_config(tuning_dir)


def test_a_phase_runs_its_own_seeds_and_a_bad_phase_is_one_line(tmp_path):
    def cfg(phase):
        f = tmp_path / f"{phase}.yaml"
        f.write_text(yaml.safe_dump({"tuning": {**PROTOCOL, "phase": phase}}))
        return config_from_args(["--variants", "vae", "--lrs", "1e-3,1e-2", "--config", str(f)])[0]
    assert cfg("tuning").seeds == TUNING_SEEDS
    assert cfg("evaluation").seeds == EVALUATION_SEEDS
    assert cfg("both").seeds == EVALUATION_SEEDS + TUNING_SEEDS
    with pytest.raises(StudyError, match=r"^tuning.phase='tune' is invalid; allowed: one of both, tuning, evaluation$"):
        cfg("tune")


def test_the_evaluation_plan_runs_each_arm_at_its_pick_and_above(plan, tuning_dir):
    cfg, notes = plan
    assert cfg["tuning"]["phase"] == "evaluation" and cfg["tuning"]["evaluation_seeds"] == EVALUATION_SEEDS
    lrs = {g["variants"][0]: g["lrs"] for g in cfg["grids"]}
    assert lrs == {"vae": [1e-2, 1e-1], "powerlaw_clamp": [1e-1]}   # picks 1e-2 and 1e-1, and above
    assert any("pick lr=0.01" in n for n in notes)
    cut, _ = evaluation_config(tuning_dir, above=0)
    assert {g["variants"][0]: g["lrs"] for g in cut["grids"]} == {"vae": [1e-2], "powerlaw_clamp": [1e-1]}
    assert cfg["trial"]["dataset"] == "powerlaw_gaussian" and cfg["latent_dims"] == [8]


def test_the_plan_is_a_config_the_study_driver_accepts(plan, tmp_path):
    f = tmp_path / "evaluation.yaml"
    assert plan_main([str(tmp_path / "nope")]) == 2   # not a study: exit 2, no traceback
    running = write_study(tmp_path, "run", "tuning", [("vae", lr, TUNING_SEEDS) for lr in LRS], status="running")
    with pytest.raises(ValueError, match="status 'running'"):
        evaluation_config(running)
    f.write_text(yaml.safe_dump(plan[0]))
    cfg = config_from_args(["--config", str(f)])[0]
    trials = cfg.trial_dicts()
    assert {t["seed"] for t in trials} == set(EVALUATION_SEEDS)
    assert sorted({(t["variant"], t["lr"]) for t in trials}) == [("powerlaw_clamp", 0.1), ("vae", 0.01), ("vae", 0.1)]
    assert len(trials) == 3 * len(EVALUATION_SEEDS)


def test_the_two_phases_are_one_study_to_the_analysis(tuning_dir, plan):
    root = tuning_dir.parent
    evaluation = write_study(root, "eva", "evaluation",
                             [(g["variants"][0], lr, EVALUATION_SEEDS) for g in plan[0]["grids"] for lr in g["lrs"]])
    s = load_studies([tuning_dir, evaluation])
    assert s.trials["study"].nunique() == 1 and Protocol.from_meta(s.meta).evaluation_seeds == tuple(EVALUATION_SEEDS)
    r = tuned(s)
    c = r.comparison.set_index("arm").iloc[0]
    assert c["baseline_pick_lr"] == 1e-2 and c["pick_lr"] == 1e-1 and c["n_pairs"] == 10
    assert {int(x) for x in c["seeds"].split()} == set(EVALUATION_SEEDS)   # never a tuning seed
    assert c["time_direction"] == 1 and c["p_time"] < 0.01                  # the clamp is faster, as built
    stable = r.stable.set_index("arm")
    assert stable.loc["vae", "stable_max_lr"] == 1e-2 and stable.loc["vae", "runs_at_stable_max"] == 13


def test_studies_of_different_protocols_stay_apart():
    metas = [{"study_config": {"tuning": {**PROTOCOL, "phase": "tuning"}}},
             {"study_config": {"tuning": {**PROTOCOL, "evaluation_seeds": [0, 1], "phase": "evaluation"}}},
             {"study_config": {"tuning": {**PROTOCOL, "phase": "tuning"}}}]
    labels, shared = phase_labels(metas, ["a", "b", "c"])
    assert labels == ["a", "b", "c"] and shared is None   # two tuning phases are not a pair either
    labels, shared = phase_labels(metas[:1] + [{"study_config": {"tuning": {**PROTOCOL, "phase": "evaluation"}}}],
                                  ["a", "b"])
    assert labels == ["a + b", "a + b"] and shared["phase"] == "both"


def test_the_committed_csv_recomputes_the_tuned_tables(tuning_dir, plan, tmp_path):
    """evidence_summary's two steps for the tuned studies: the folders to tuned_trials.csv (tuning and
    evaluation seeds marked), then every table from that CSV alone - the same picks, comparison and
    stable range as the analysis of the folders themselves; a role flipped in the CSV is refused."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import evidence_summary as ev
    import tuned_evidence as te

    root = tuning_dir.parent
    if not (root / "eva").exists():
        write_study(root, "eva", "evaluation",
                    [(g["variants"][0], lr, EVALUATION_SEEDS) for g in plan[0]["grids"] for lr in g["lrs"]])
    out = tmp_path / "out"
    out.mkdir()
    te.write_tuned(str(root), str(out), ev.trial_row)
    csv = (out / te.TUNED_CSV)
    trials = __import__("pandas").read_csv(csv)
    assert set(trials.loc[trials["role"] == "tuning", "seed"]) == set(TUNING_SEEDS)
    assert set(trials.loc[trials["role"] == "evaluation", "seed"]) == set(EVALUATION_SEEDS)
    tables = te.summarise_tuned(*te.read_tuned(str(out)), str(out), ev.rebuild, ev._save)
    direct = tuned(load_studies([root / "tun", root / "eva"]))
    got = tables["tuned_comparison.csv"].iloc[0]
    want = direct.comparison.iloc[0]
    for col in ("pick_lr", "baseline_pick_lr", "n_pairs", "p_time", "speedup", "final_ratio", "p_final"):
        assert got[col] == pytest.approx(want[col], rel=1e-6), col
    assert (out / f"{got['study']}_lr_sensitivity.png").stat().st_size > 10_000
    assert tables["stable_lr.csv"].set_index("arm").loc["vae", "stable_max_lr"] == 1e-2
    md = (out / "tuned.md").read_text()
    assert "One family of 2 tests" in md and "powerlaw_clamp" in md
    flipped = trials.copy()
    flipped.loc[flipped.index[0], "role"] = "evaluation" if flipped.loc[flipped.index[0], "role"] == "tuning" \
        else "tuning"
    with pytest.raises(SystemExit, match="role"):
        te.summarise_tuned(flipped, te.read_tuned(str(out))[1], str(out), ev.rebuild, ev._save)


def test_the_analysis_command_prints_the_tuned_answer(tuning_dir, plan, tmp_path, capsys):
    """`python -m analysis TUNING EVALUATION` on a two-phase protocol prints the tuned comparison
    (each arm at its pick against the tuned vae) and the tuned vae's flattening, not only the
    fixed-lr table."""
    from analysis.__main__ import main as analysis_main

    root = tuning_dir.parent
    if not (root / "eva").exists():
        write_study(root, "eva", "evaluation",
                    [(g["variants"][0], lr, EVALUATION_SEEDS) for g in plan[0]["grids"] for lr in g["lrs"]])
    assert analysis_main([str(tuning_dir), str(root / "eva"), "--out", str(tmp_path / "r"), "--no-html",
                          "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "Tuned against tuned: each arm at its own lr" in out
    line = next(x for x in out.splitlines() if x.startswith("powerlaw_clamp"))
    assert " 0.1 " in line and " 0.01 " in line and "0.00195" in line
    assert "the tuned vae over its last epochs 10-12" in out
