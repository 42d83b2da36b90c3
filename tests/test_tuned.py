"""Tuned against tuned (analysis.tuned) on constructed studies where the answer is known: picks on
the tuning seeds, evaluation on the others only, a censored time to target that can say "slower",
final quality and divergence apart, the stable learning-rate range and the sensitivity figure."""
import math

import numpy as np
import pandas as pd
import pytest

from analysis.load import Study
from analysis.figure_tuned import plot_lr_sensitivity
from analysis.tuned import Protocol, tuned

TUNING, EVALUATION = (100, 101, 102), tuple(range(10))
LRS = (1e-3, 1e-2, 1e-1)
EPOCHS = 20


def curve(floor, speed, seed, epochs=EPOCHS):
    """val_loss per epoch: floor + 1 * exp(-speed * e), with a little seed noise."""
    rng = np.random.default_rng(seed)
    e = np.arange(1, epochs + 1)
    return floor * (1 + 0.01 * rng.standard_normal()) + np.exp(-speed * e)


def arm_runs(variant, gamma, behaviour, seeds=TUNING + EVALUATION, **extra):
    """History rows of one arm over the lr grid. behaviour(lr) -> (floor, speed) or "diverge"."""
    rows = []
    for lr in LRS:
        for seed in seeds:
            tid = f"{variant}_{gamma}_{lr}_{seed}_{extra}"
            b = behaviour(lr)
            values = [math.nan] * EPOCHS if b == "diverge" else curve(*b, seed=hash((variant, lr, seed)) % 2**32)
            for e, v in enumerate(values, 1):
                rows.append({"trial_id": tid, "training_iteration": e, "val_loss": v, "time_total_s": 0.5 * e,
                             "diverged": float(b == "diverge"), "variant": variant, "gamma": gamma, "lr": lr,
                             "seed": seed, "max_epochs": EPOCHS, "n_train": 2048, "batch_size": 64,
                             "dataset": "natural_patches", **extra})
                if b == "diverge":
                    break
    return rows


def vae(lr):          # best at 1e-2, diverges at 1e-1
    return {1e-3: (1.0, 0.1), 1e-2: (1.0, 0.3), 1e-1: "diverge"}[lr]


def clamp(lr):        # stable at 1e-1 and fastest there
    return {1e-3: (1.0, 0.1), 1e-2: (1.0, 0.3), 1e-1: (0.9, 1.0)}[lr]


def plateau(lr):      # never reaches the baseline's level: a higher floor everywhere
    return {1e-3: (2.0, 0.1), 1e-2: (2.0, 0.3), 1e-1: (2.0, 1.0)}[lr]


def study(*arms):
    return Study.from_history(pd.DataFrame([r for a in arms for r in a]))


@pytest.fixture(scope="module")
def result():
    s = study(arm_runs("vae", 0.0, vae), arm_runs("powerlaw_clamp", 0.5, clamp),
              arm_runs("exponential", 0.0, plateau))
    return tuned(s, Protocol(TUNING, EVALUATION))


def row(table, arm):
    return table[table["arm"].str.startswith(arm)].iloc[0]


def test_each_arm_is_picked_on_the_tuning_seeds(result):
    picks = result.picks.set_index("variant")["pick_lr"]
    assert picks["vae"] == 1e-2 and picks["powerlaw_clamp"] == 1e-1
    assert set(result.picks["tuning_runs"]) == {len(LRS) * len(TUNING)}   # the same budget for every arm


def test_a_faster_arm_comes_out_faster_and_one_that_never_reaches_comes_out_slower(result):
    fast, never = row(result.comparison, "powerlaw_clamp"), row(result.comparison, "exponential")
    assert fast["n_pairs"] == 10 and fast["time_direction"] == 1 and fast["p_time"] < 0.01
    assert fast["speedup"] > 1 and fast["speedup_low"] > 1
    assert never["reached"] == 0 and never["baseline_reached"] >= 8
    assert never["time_direction"] == -1 and never["p_time"] < 0.01 and never["speedup"] == 0
    assert never["final_direction"] == -1 and never["p_final"] < 0.01 and never["final_ratio"] > 1.5
    assert never["p_holm_time"] < 0.05


def test_reported_comparisons_use_evaluation_seeds_only(result):
    for seeds in result.comparison["seeds"]:
        used = {int(s) for s in seeds.split()}
        assert used == set(EVALUATION) and not used & set(TUNING)


def test_a_tuning_seed_in_a_reported_comparison_fails():
    with pytest.raises(ValueError, match=r"evaluation_seeds=.*shared: \[100\]"):
        Protocol(TUNING, (100, *EVALUATION))


def test_tuning_seeds_choose_but_never_count():
    """Make the baseline's tuning seeds favour lr 1e-3: its pick moves there, and the comparison is
    then of evaluation runs at 1e-3 - the tuning runs' values never enter it."""
    def vae_tuned_low(lr):
        return {1e-3: (0.5, 0.3), 1e-2: (1.0, 0.3), 1e-1: "diverge"}[lr]
    s = study(arm_runs("vae", 0.0, vae_tuned_low, seeds=TUNING), arm_runs("vae", 0.0, vae, seeds=EVALUATION),
              arm_runs("powerlaw_clamp", 0.5, clamp))
    r = tuned(s, Protocol(TUNING, EVALUATION))
    assert r.picks.set_index("variant").loc["vae", "pick_lr"] == 1e-3
    c = row(r.comparison, "powerlaw_clamp")
    assert c["baseline_pick_lr"] == 1e-3 and c["time_direction"] == 1   # vae at 1e-3 on fresh seeds is slow


def test_the_stable_range_is_the_largest_lr_with_at_most_one_in_ten_diverged(result):
    stable = result.stable.set_index("arm")
    assert stable.loc["vae", "stable_max_lr"] == 1e-2
    assert row(result.stable, "powerlaw_clamp")["stable_max_lr"] == 1e-1
    assert stable.loc["vae", "runs_at_stable_max"] == len(TUNING) + len(EVALUATION)


def test_stabilisers_are_arms_of_their_own():
    s = study(arm_runs("vae", 0.0, vae), arm_runs("vae", 0.0, clamp, warmup_steps=100))
    r = tuned(s, Protocol(TUNING, EVALUATION))
    assert list(r.comparison["arm"]) == ["vae + warm-up 100"]
    assert r.comparison.iloc[0]["pick_lr"] == 1e-1


def test_the_sensitivity_figure_draws_every_arm(result, tmp_path):
    fig = plot_lr_sensitivity(result)
    ax = fig.axes[0]
    assert len(ax.get_legend().get_texts()) == 3
    fig.savefig(tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 5000


def test_a_study_without_a_protocol_is_one_line():
    s = study(arm_runs("vae", 0.0, vae, seeds=(0,)))
    with pytest.raises(ValueError, match="no tuning protocol"):
        tuned(s)


def test_the_report_of_a_study_with_a_protocol_has_the_tuned_section(tmp_path):
    """write_report on a study whose study.json recorded the protocol (under study_config, as the
    driver writes it): the four CSVs, the sensitivity figure through the registry, the section in
    report.md and report.html; the reported rows hold evaluation seeds only."""
    from analysis.html_report import write_html
    from analysis.report import write_report

    rows = [r for a in (arm_runs("vae", 0.0, vae), arm_runs("powerlaw_clamp", 0.5, clamp),
                        arm_runs("exponential", 0.0, plateau)) for r in a]
    meta = {"study_name": "tuned", "study_config": {"tuning": {"tuning_seeds": list(TUNING),
                                                               "evaluation_seeds": list(EVALUATION), "knobs": ["lr"]}}}
    s = Study.from_history(pd.DataFrame(rows), meta=meta)
    path = write_report(s, out=tmp_path, data_spectrum=False)
    for name in ("tuned_picks.csv", "tuned_comparison.csv", "stable_lr.csv", "lr_sensitivity.csv",
                 "lr_sensitivity.png"):
        assert (tmp_path / name).stat().st_size > 100, name
    comp = pd.read_csv(tmp_path / "tuned_comparison.csv")
    assert set(comp["arm"].str.split(" ").str[0]) == {"powerlaw_clamp", "exponential"}
    assert all(set(map(int, str(seeds).split())) <= set(EVALUATION) for seeds in comp["seeds"])
    assert {"speedup_low", "speedup_seconds_low", "p_holm_time", "p_holm_final", "p_diverged"} <= set(comp.columns)
    text = path.read_text()
    assert "## Tuned against tuned" in text and "![lr_sensitivity](lr_sensitivity.png)" in text
    assert "Tuned against tuned" in write_html(s, tmp_path).read_text()
    plain = Study.from_history(pd.DataFrame(rows), meta={"study_name": "plain"})
    write_report(plain, out=tmp_path / "plain", figures=False)
    assert not (tmp_path / "plain" / "tuned_picks.csv").exists()
    assert "Tuned against tuned" not in (tmp_path / "plain" / "report.md").read_text()


def test_the_tuned_baselines_flattening_is_measured(result):
    """The budget check of issue 18: the change of the tuned baseline's median over the last 20% of
    the budget. Built here: floor + exp(-0.3 e) changes by exp(-4.8) - exp(-6) over epochs 16-20."""
    note = next(n for n in result.notes if "last epochs" in n)
    assert "16-20" in note and "10 finished runs" in note
    want = -(math.exp(-0.3 * 16) - math.exp(-0.3 * 20)) / (1 + math.exp(-0.3 * 20))
    got = float(note.split("val_loss ")[1].split("%")[0]) / 100
    assert got == pytest.approx(want, abs=0.002)
