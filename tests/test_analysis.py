"""analysis: loading Tune results, comparisons with statistics, figures, the report and the CLI.

Three kinds of input:
- constructed DataFrames whose right answer is known (Study.from_history), for the statistics;
- hand-written Tune-style trial folders (the documented files), for every trial status and
  every kind of damage;
- a real tiny study run by ``tune/run_study.py`` once per session (the slow part), and a
  deliberately damaged copy of it.
"""
from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import (STATUSES, Study, StudyLoadWarning, answer, bootstrap_ci, compare, holm, load_study, mann_whitney,
                      save_figures, trial_config, write_report)
from analysis.__main__ import main as cli_main
from analysis.compare import AUC, DIVERGED, EPOCHS_TO_TARGET, FINAL, trial_quantities
from analysis.stats import fisher, min_mann_whitney_p, proportion_ci, spread_test
from plvae import metrics as M
from plvae.config import TrialConfig

REPO = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 5000):
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > min_bytes, f"{path} is suspiciously small ({len(data)} bytes)"


# =============================================================================== statistics

def test_holm_matches_hand_computation():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06, 0.02])
    # nan is "no test": stays nan and does not count (m = 2)
    out = holm([0.01, math.nan, 0.02])
    assert math.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert (holm([0.5, 0.9]) <= 1).all() and holm([]).size == 0


def test_holm_against_its_definition():
    rng = np.random.default_rng(3)
    p = rng.uniform(0, 0.2, size=9)
    m = len(p)
    order = np.argsort(p)
    expected = np.empty(m)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        expected[j] = running
    np.testing.assert_allclose(holm(p), expected)


def test_bootstrap_ci_degenerate_and_ordinary_samples():
    const = bootstrap_ci([0.3, 0.3, 0.3, 0.3])
    assert (const.value, const.low, const.high) == (0.3, 0.3, 0.3)
    one = bootstrap_ci([1.0])
    assert one.value == 1.0 and math.isnan(one.low) and one.n == 1
    assert math.isnan(bootstrap_ci([]).value)
    x = np.random.default_rng(0).normal(5, 1, size=40)
    e = bootstrap_ci(x)
    assert e.low < np.median(x) < e.high and e.high - e.low < 2
    censored = bootstrap_ci([1.0, 2.0, 2.0, math.inf, math.inf, 3.0])  # never-reached = inf
    assert censored.low <= censored.value <= censored.high
    assert bootstrap_ci([1.0, math.nan, 1.0]).n == 2  # nan is dropped, not counted


def test_two_sample_tests_know_identical_from_shifted():
    a = [0.10, 0.11, 0.12, 0.13, 0.14, 0.15]
    assert mann_whitney(a, a).pvalue == 1.0
    assert mann_whitney([1, 1, 1], [1, 1, 1]).pvalue == 1.0
    assert mann_whitney(a, [v - 0.1 for v in a]).pvalue < 0.01
    assert math.isnan(mann_whitney([], a).pvalue)
    assert fisher(0, 10, 0, 10).pvalue == 1.0 and fisher(10, 10, 0, 10).pvalue < 0.001
    assert spread_test([1, 1, 1], [2, 2, 2]).pvalue == 1.0
    assert min_mann_whitney_p(3, 3) == pytest.approx(0.1)
    e = proportion_ci(0, 5)
    assert e.value == 0 and e.low == 0 and 0 < e.high < 1


def test_trial_quantities_of_a_known_curve():
    x = np.array([0.0, 1, 2, 3])
    y = np.array([1.0, 0.5, 0.6, 0.25])
    q = trial_quantities(x, y, t=x * 10, target=0.55, diverged=False, has_initial=True)
    assert q[EPOCHS_TO_TARGET] == 1 and q["seconds_to_target"] == 10
    assert q[FINAL] == 0.25 and q["first_epoch_ratio"] == 0.5
    assert q["max_increase"] == pytest.approx(0.2)              # 0.5 -> 0.6
    assert q[AUC] == pytest.approx(np.trapezoid(y, x) / 3)    # / (3 epochs x initial 1.0)
    never = trial_quantities(x, y, t=x, target=0.1, diverged=False, has_initial=True)
    assert never[EPOCHS_TO_TARGET] == math.inf
    div = trial_quantities(x, np.array([1.0, 0.5, np.nan, np.nan]), t=x, target=0.55, diverged=True,
                           has_initial=True)
    assert div[FINAL] == div[AUC] == div["max_increase"] == math.inf  # worse than any finished run
    assert div[EPOCHS_TO_TARGET] == 1 and div["best"] == 0.5             # it did reach the target first


# ------------------------------------------------------------------------ constructed studies

def make_study(groups: dict, epochs: int = 5, noise: float = 0.0, seed: int = 0) -> Study:
    """groups: {(variant, gamma[, lr]): dict(n=seeds, scale=curve multiplier, diverge=seeds that
    diverge at epoch 2)}; curves are val_recon_mu = scale * (0.2 + 0.8 * 0.5**epoch) (+ noise)."""
    rng = np.random.default_rng(seed)
    rows, params = [], []
    for key, spec in groups.items():
        variant, gamma, lr = (*key, 1e-3)[:3]
        for s in range(spec.get("n", 5)):
            tid = f"{variant}_{gamma:g}_{lr:g}_{s}"
            params.append({"trial_id": tid, "variant": variant, "gamma": float(gamma), "latent_dim": 8,
                           "min_decay": 1e-3, "lr": lr, "seed": s, "dataset": "digits", "max_epochs": epochs})
            for e in range(1, epochs + 1):
                v = spec.get("scale", 1.0) * (0.2 + 0.8 * 0.5 ** e) + noise * rng.normal()
                div = s in spec.get("diverge", ()) and e >= 2
                rows.append({"trial_id": tid, "training_iteration": e, M.VAL_RECON_MU: math.nan if div else v,
                             M.VAL_LOSS: math.nan if div else 1.5 * v, M.TRAIN_LOSS: math.nan if div else v,
                             M.DIVERGED: float(div), M.INITIAL_VAL_RECON_MU: 1.0, M.INITIAL_VAL_LOSS: 1.5,
                             "time_total_s": 2.0 * e})
                if div:
                    break
    return Study.from_history(pd.DataFrame(rows), pd.DataFrame(params), meta={"status": "finished"})


def test_identical_groups_are_not_significantly_different():
    study = make_study({("vae", 0.0): dict(n=6), ("powerlaw_clamp", 1.0): dict(n=6)}, noise=0.002)
    # the same noise draws would differ; make the variant's curves exactly the baseline's
    h = study.history
    for s in range(6):
        base = h[(h.variant == "vae") & (h.seed == s)][M.VAL_RECON_MU].to_numpy()
        h.loc[(h.variant == "powerlaw_clamp") & (h.seed == s), M.VAL_RECON_MU] = base
        h.loc[(h.variant == "powerlaw_clamp") & (h.seed == s), M.VAL_LOSS] = 1.5 * base
    c = compare(study)
    # No primary family declared: every test is exploratory, with its raw p-value and no correction.
    assert c.n_tests > 0 and not c.tests["significant"].any() and c.tests["p_holm"].isna().all()
    assert set(c.tests["family"]) == {"exploratory"} and c.tests["paired"].any()
    row = c.headline[c.headline.variant == "powerlaw_clamp"].iloc[0]
    assert row["verdict"] == "no difference (exploratory)"
    assert row["rel_final"] == pytest.approx(0.0)
    c = compare(study, holm_family="all")
    row = c.headline[c.headline.variant == "powerlaw_clamp"].iloc[0]
    assert row["verdict"] == "no significant difference"


def test_known_shift_is_detected_and_ranked_first():
    study = make_study({("vae", 0.0): dict(n=8), ("powerlaw_clamp", 1.0): dict(n=8, scale=0.7)},
                       noise=0.005)
    c = compare(study, holm_family="quantity")
    t = c.tests.set_index("quantity")
    assert t.loc[FINAL, "significant"] and t.loc[FINAL, "direction"] == "better"
    assert t.loc[AUC, "significant"] and t.loc[EPOCHS_TO_TARGET, "significant"]
    head = c.headline
    assert list(head["variant"]) == ["powerlaw_clamp", "vae"]
    assert head.iloc[0]["verdict"] == "better"
    assert head.iloc[0]["rel_final"] == pytest.approx(-0.3, abs=0.05)
    assert head.iloc[0][EPOCHS_TO_TARGET] < head.iloc[1][EPOCHS_TO_TARGET]
    text = answer(study, c)
    assert "the best variant is powerlaw_clamp" in text and "The difference is significant" in text
    assert "is better on final" in text and "No variant differs" not in text


def test_significance_level_decides_and_old_alpha_spelling_warns():
    """The level is used (a real shift is significant at 0.05, not at 1e-9) and compare(alpha=...),
    the old spelling, still works for one release with a DeprecationWarning."""
    study = make_study({("vae", 0.0): dict(n=8), ("powerlaw_clamp", 1.0): dict(n=8, scale=0.7)},
                       noise=0.005)
    loose = compare(study, holm_family="quantity", significance=0.05, n_resamples=200)
    strict = compare(study, holm_family="quantity", significance=1e-9, n_resamples=200)
    assert loose.significant()["quantity"].eq(FINAL).any() and strict.significant().empty
    assert strict.significance == 1e-9
    with pytest.warns(DeprecationWarning, match="significance"):
        old = compare(study, holm_family="quantity", alpha=1e-9, n_resamples=200)
    assert old.significance == 1e-9 and old.significant().empty
    with pytest.warns(DeprecationWarning):
        assert old.alpha == 1e-9
    with pytest.raises(ValueError, match="alpha=.*is invalid"):
        compare(study, alpha=0.05, significance=0.05)


def test_divergence_is_counted_and_small_groups_are_flagged_not_tested():
    study = make_study({("vae", 0.0): dict(n=8), ("powerlaw", 1.5): dict(n=8, diverge={0, 3, 5}),
                        ("powerlaw_clamp", 1.0): dict(n=2)})
    t = study.trials
    assert (t[t.variant == "powerlaw"]["status"] == "diverged").sum() == 3
    assert t[t.variant == "vae"]["status"].eq("completed").all()
    c = compare(study)
    g = c.groups.set_index("variant")
    assert g.loc["powerlaw", f"n_{DIVERGED}"] == 3 and g.loc["powerlaw", DIVERGED] == pytest.approx(3 / 8)
    # the final value is over the 5 seeds that finished; divergence is counted apart (issue 19)
    assert g.loc["powerlaw", "final_n"] == 5
    pt = c.per_trial[c.per_trial.variant == "powerlaw"].set_index("seed")
    assert pt.loc[0, FINAL] == math.inf and pt.loc[1, FINAL] < 1 and pt.loc[0, DIVERGED]
    assert g.loc["vae", DIVERGED] == 0
    assert g.loc["powerlaw_clamp", "small"]
    small = c.tests[c.tests.variant == "powerlaw_clamp"]
    assert small["p"].isna().all() and small["note"].str.startswith("not tested").all()
    assert c.headline.set_index("variant").loc["powerlaw_clamp", "verdict"] == "not tested (few seeds)"
    assert any("fewer than 3" in n for n in c.notes)


def test_stable_lr_region_when_lr_is_swept():
    groups = {}
    for lr, div in ((1e-3, set()), (1e-2, set()), (1e-1, {0})):
        groups[("vae", 0.0, lr)] = dict(n=3, diverge=div)
        groups[("powerlaw_clamp", 1.0, lr)] = dict(n=3)
    study = make_study(groups)
    c = compare(study)
    s = c.stable_lr.set_index("variant")
    assert s.loc["vae", "max_stable_lr"] == pytest.approx(1e-2)
    assert s.loc["vae", "first_diverging_lr"] == pytest.approx(1e-1)
    assert s.loc["powerlaw_clamp", "max_stable_lr"] == pytest.approx(1e-1)
    assert math.isnan(s.loc["powerlaw_clamp", "first_diverging_lr"])
    assert len(c.targets) == 3  # one context (and target) per lr


def test_compare_rejects_bad_arguments():
    study = make_study({("vae", 0.0): dict(n=3), ("powerlaw_clamp", 1.0): dict(n=3)})
    with pytest.raises(ValueError, match="metric='nope'"):
        compare(study, metric="nope")
    with pytest.raises(ValueError, match="baseline='linear'"):
        compare(study, baseline="linear")
    with pytest.raises(ValueError, match="holm_family"):
        compare(study, holm_family="some")


def test_figures_and_report_on_constructed_study(tmp_path):
    groups = {("vae", 0.0): dict(n=3)}
    for g in (0.5, 1.0, 1.5):
        groups[("powerlaw_clamp", g)] = dict(n=3, scale=1 - 0.1 * g, diverge={0} if g == 1.5 else set())
    study = make_study(groups)
    # a gamma x min_decay grid and a logged latent spectrum
    h, t = study.history, study.trials
    t.loc[t.gamma == 1.0, "min_decay"] = 1e-2
    extra = t[t.gamma == 1.0].assign(min_decay=1e-3, trial_id=lambda d: d.trial_id + "b")
    study.trials = pd.concat([t, extra], ignore_index=True)
    hb = h[h.trial_id.isin(extra.trial_id.str[:-1])].assign(trial_id=lambda d: d.trial_id + "b")
    study.history = pd.concat([h, hb], ignore_index=True)
    study.trials[f"final_{M.LATENT_ALPHA}"] = 2 * study.trials["gamma"] + 0.1
    c = compare(study)
    written, skipped = save_figures(study, c, tmp_path, data_spectrum=False)
    assert set(written) == {"gamma_vs_final", "learning_curves", "divergence_vs_gamma",
                            "gamma_min_decay_heatmap", "latent_spectrum"}, skipped
    for p in written.values():
        assert_png(p)
    report = write_report(study, c, out=tmp_path, data_spectrum=False).read_text()
    assert report.index("## Answer") < report.index("## Headline") < report.index("## Figures")
    assert "![gamma_min_decay_heatmap](gamma_min_decay_heatmap.png)" in report


# ============================================================ Tune-style folders, by hand

def write_trial(root: Path, tid: str, cfg: TrialConfig, curve, diverge_at=None, stopped=False,
                error=None, progress=True, results=True):
    """A trial folder as Ray Tune writes it: params.json, result.json (JSON lines with Tune's own
    keys and the config), progress.csv, checkpoint_NNNNNN/ and error.txt."""
    d = root / f"{cfg.variant}_g{cfg.gamma:g}_d{cfg.latent_dim}_s{cfg.seed}_{tid}"
    d.mkdir(parents=True)
    params = cfg.to_dict()
    (d / "params.json").write_text(json.dumps(params))
    rows = []
    for e, v in enumerate(curve[1:], 1):
        div = diverge_at is not None and e >= diverge_at
        val = math.nan if div else float(v)
        r = {**{name: val for name in M.EPOCH_METRICS}, M.DIVERGED: float(div), M.LATENT_ALPHA: 2 * cfg.gamma,
             M.INITIAL_VAL_LOSS: 1.5 * curve[0], M.INITIAL_VAL_RECON_MU: float(curve[0]),
             "timestamp": 1_700_000_000 + e, "checkpoint_dir_name": f"checkpoint_{e - 1:06d}",
             "done": bool(stopped and e == len(curve) - 1), "training_iteration": e, "trial_id": tid,
             "date": "2025-01-01_00-00-00", "time_this_iter_s": 1.0, "time_total_s": float(e), "pid": 7,
             "hostname": "h", "node_ip": "10.0.0.1", "config": params}
        rows.append(r)
        (d / f"checkpoint_{e - 1:06d}").mkdir()
        if div:
            break
    if results:
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if progress and rows:
        keys = [k for k in rows[0] if k != "config"]
        with open(d / "progress.csv", "w", newline="") as f:
            w = csv.DictWriter(f, keys)
            w.writeheader()
            w.writerows({k: r[k] for k in keys} for r in rows)
    if error:
        (d / "error.txt").write_text(f"Failure # 1 (occurred at 2025-01-01_00-00-05)\nTraceback ...\n{error}\n")
    return d


@pytest.fixture
def handmade(tmp_path) -> Path:
    """Every status: completed, early_stopped (ASHA's done=True), diverged, errored."""
    root = tmp_path / "handmade"
    curve = [1.0, 0.5, 0.3, 0.2]
    status = {}
    for i, (v, g, s, kw, tune_status) in enumerate([
            ("vae", 0.0, 0, {}, "TERMINATED"), ("vae", 0.0, 1, {}, "TERMINATED"),
            ("vae", 0.0, 2, dict(curve=curve[:2], stopped=True), "TERMINATED"),
            ("powerlaw_clamp", 1.0, 0, dict(diverge_at=2), "TERMINATED"),
            ("powerlaw_clamp", 1.0, 1, {}, "TERMINATED"),
            ("powerlaw_clamp", 1.0, 2, dict(curve=curve[:2], error="RuntimeError: CUDA out of memory"),
             "ERROR")]):
        tid = f"a1b2c_{i:05d}"
        write_trial(root, tid, TrialConfig(variant=v, gamma=g, seed=s, max_epochs=3, dataset="digits"),
                    **{"curve": curve, **kw})
        status[tid] = tune_status
    (root / "study.json").write_text(json.dumps({
        "study_name": "handmade", "metric": M.DEFAULT_STUDY_METRIC, "mode": "min", "scheduler": "asha",
        "search": "grid", "max_epochs": 3, "data_alpha": {"digits": 1.4}, "status": "finished",
        "trial_status": status}))
    return root


def test_load_handmade_study_statuses_and_columns(handmade):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an intact study loads without a warning
        study = load_study(handmade)
    t = study.trials.set_index("trial_id")
    assert dict(t["status"]) == {"a1b2c_00000": "completed", "a1b2c_00001": "completed",
                                 "a1b2c_00002": "early_stopped", "a1b2c_00003": "diverged",
                                 "a1b2c_00004": "completed", "a1b2c_00005": "errored"}
    assert t.loc["a1b2c_00002", "status"] == "early_stopped" and t.loc["a1b2c_00002", "epochs"] == 1
    assert t.loc["a1b2c_00003", "status"] == "diverged" and t.loc["a1b2c_00003", "diverged_epoch"] == 2
    assert t.loc["a1b2c_00005", "status"] == "errored" and "out of memory" in t.loc["a1b2c_00005", "error"]
    assert set(study.trials["status"].cat.categories) == set(STATUSES)
    # typed parameter columns, outcomes, bookkeeping
    assert study.trials["gamma"].dtype == float and study.trials["seed"].dtype == "int64"
    assert study.trials["latent_dim"].dtype == "int64" and study.trials["hidden_dims"].iloc[0] == (32, 64)
    assert t.loc["a1b2c_00000", M.INITIAL_VAL_LOSS] == pytest.approx(1.5)
    assert t.loc["a1b2c_00000", f"final_{M.VAL_RECON_MU}"] == pytest.approx(0.2)
    assert t.loc["a1b2c_00000", f"best_{M.VAL_LOSS}"] == pytest.approx(0.2)
    assert t.loc["a1b2c_00000", "last_checkpoint"].endswith("checkpoint_000002")
    assert t.loc["a1b2c_00000", "node"] == "10.0.0.1" and t.loc["a1b2c_00000", "time_total_s"] == 3.0
    assert study.swept[:2] == ["variant", "gamma"] and "seed" in study.swept
    # history: one row per trial per epoch, swept params carried along
    h = study.history
    assert len(h) == 3 + 3 + 1 + 2 + 3 + 1 and {"variant", "gamma", "seed"} <= set(h.columns)
    assert h.groupby("trial_id")["training_iteration"].apply(lambda s: s.is_monotonic_increasing).all()
    assert trial_config(study, "a1b2c_00004") == TrialConfig(variant="powerlaw_clamp", gamma=1.0, seed=1,
                                                              max_epochs=3, dataset="digits")


def test_damaged_handmade_study_loads_what_is_valid_and_warns_once(handmade):
    d = {p.name[-11:]: p for p in handmade.iterdir() if p.is_dir()}  # trial id -> folder
    torn = d["a1b2c_00000"] / "result.json"
    torn.write_text(torn.read_text()[:-40])                 # last line cut mid-object
    (d["a1b2c_00001"] / "progress.csv").unlink()            # no progress.csv
    (d["a1b2c_00004"] / "result.json").unlink()            # results only in progress.csv ...
    csv_file = d["a1b2c_00004"] / "progress.csv"
    csv_file.write_text(csv_file.read_text()[:-60])         # ... whose last row is torn too
    shutil.copytree(d["a1b2c_00005"], handmade / "zz_restarted_copy_a1b2c_00005")  # one trial id twice
    (handmade / "zz_restarted_copy_a1b2c_00005" / "result.json").write_text("")
    junk = handmade / "not_a_trial"
    junk.mkdir()
    (junk / "params.json").write_text("{broken")            # unreadable params, no results
    with pytest.warns(StudyLoadWarning) as record:
        study = load_study(handmade)
    assert len(record) == 1
    msg = str(record[0].message)
    assert f"{d['a1b2c_00000'].name}: 1 unreadable line(s) in result.json (line 3)" in msg
    assert f"{d['a1b2c_00000'].name}: 1 epoch(s) recovered from progress.csv" in msg
    assert f"{d['a1b2c_00001'].name}: no progress.csv" in msg
    assert f"{d['a1b2c_00004'].name}: 2 epoch(s) recovered from progress.csv" in msg
    assert "not_a_trial" in msg
    assert "duplicate trial ids" in msg and "zz_restarted_copy_a1b2c_00005" in msg
    t = study.trials.set_index("trial_id")
    assert len(t) == 6
    assert t.loc["a1b2c_00000", "epochs"] == 3 and t.loc["a1b2c_00000", "status"] == "completed"
    # the torn csv row is dropped, not read as a row of nan (which would look like divergence)
    assert t.loc["a1b2c_00004", "epochs"] == 2 and t.loc["a1b2c_00004", "status"] == "early_stopped"
    assert t.loc["a1b2c_00004", f"final_{M.VAL_RECON_MU}"] == pytest.approx(0.3)
    assert t.loc["a1b2c_00003", "status"] == "diverged"
    assert len(study.skipped) == 8 and study.path == handmade


def test_running_study_and_inferred_statuses(handmade):
    meta = json.loads((handmade / "study.json").read_text())
    meta.update(status="running", finished=None)
    meta.pop("trial_status")
    (handmade / "study.json").write_text(json.dumps(meta))
    d = next(d for d in handmade.iterdir() if d.name.endswith("a1b2c_00001"))
    lines = (d / "result.json").read_text().splitlines()[:1]
    (d / "result.json").write_text(lines[0] + "\n")         # trial mid-way: 1 of 3 epochs
    with pytest.warns(StudyLoadWarning, match="still running"):
        study = load_study(handmade)
    t = study.trials.set_index("trial_id")
    assert t.loc["a1b2c_00001", "status"] == "running"
    assert t.loc["a1b2c_00002", "status"] == "early_stopped"  # done=True before max_epochs
    assert t.loc["a1b2c_00005", "status"] == "errored"        # error.txt alone says so
    c = compare(study, min_seeds=2)
    assert "a1b2c_00001" not in set(c.per_trial["trial_id"])  # unfinished trials are left out


def test_not_a_study_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such study directory"):
        load_study(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a Ray Tune study directory"):
        load_study(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_study(tmp_path / "file.txt")


def test_storage_path_with_one_study_resolves_to_it(handmade):
    study = load_study(handmade.parent)
    assert study.path == handmade and len(study.trials) == 6


# ================================================================= a real tiny study

TINY = ["--dataset", "digits", "--image-size", "8", "--variants", "vae,powerlaw_clamp", "--gammas", "0,1",
        "--seeds", "0,1,2", "--epochs", "2", "--latent-dims", "4", "--scheduler", "fifo",
        "--study-name", "tiny", "--no-dashboard", "--verbose", "0"]


@pytest.fixture(scope="session")
def real_study(tmp_path_factory) -> Path:
    """``tune/run_study.py`` on 9 tiny trials (2 variants x gamma {0, 1} x 3 seeds, 2 epochs)."""
    storage = tmp_path_factory.mktemp("studies")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, str(REPO / "tune" / "run_study.py"), *TINY, "--storage-path",
                           str(storage)], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage / "tiny"


def test_load_real_study(real_study):
    with warnings.catch_warnings():
        warnings.simplefilter("error", StudyLoadWarning)
        study = load_study(real_study)
    t = study.trials
    meta = json.loads((real_study / "study.json").read_text())
    assert len(t) == 9 and set(t["trial_id"]) == set(meta["trial_status"])
    assert t["status"].eq("completed").all() and t["epochs"].eq(2).all()
    assert study.swept == ["variant", "gamma", "seed"]
    assert t["gamma"].dtype == float and t["latent_dim"].dtype == "int64" and t["seed"].dtype == "int64"
    assert t[M.INITIAL_VAL_LOSS].gt(0).all() and t[f"final_{M.VAL_RECON_MU}"].lt(t[M.INITIAL_VAL_RECON_MU]).all()
    assert all(Path(p).is_dir() for p in t["last_checkpoint"]) and t["node"].notna().all()
    assert len(study.history) == 18 and set(M.EPOCH_METRICS) <= set(study.history.columns)
    assert study.metric == M.DEFAULT_STUDY_METRIC


def test_compare_real_study(real_study):
    study = load_study(real_study)
    c = compare(study)
    assert list(c.headline["variant"].sort_values()) == ["powerlaw_clamp", "vae"]
    assert c.groups["n"].eq(3).all() and len(c.groups) == 3
    assert not c.tests["significant"].any()  # 3 pairs: no Wilcoxon p can be below 0.25
    assert c.metric == M.VAL_LOSS and c.tests[c.tests.quantity != "spread"]["paired"].all()
    # gamma = 0 is exactly the baseline (docs/design.md): the analysis checks it whenever it can
    assert any("powerlaw_clamp at γ = 0 reproduces the baseline" in n for n in c.notes), c.notes


def test_damaged_copy_of_real_study(real_study, tmp_path):
    copy = tmp_path / "tiny"
    shutil.copytree(real_study, copy)
    dirs = sorted(d for d in copy.iterdir() if d.is_dir())
    rj = dirs[0] / "result.json"
    rj.write_text(rj.read_text()[:-100])                     # torn last line
    (dirs[1] / "progress.csv").unlink()
    (dirs[2] / "error.txt").write_text("Failure # 1 (occurred at 2020-01-01_00-00-00)\nTraceback ...\n"
                                       "RuntimeError: worker died\n")   # a retried failure: not an outcome
    meta = json.loads((copy / "study.json").read_text())
    meta["status"] = "running"
    meta["trial_status"][dirs[4].name[-11:]] = "ERROR"                      # Tune's word: errored
    meta["trial_status"][dirs[3].name[-11:]] = "RUNNING"
    (dirs[3] / "result.json").write_text((dirs[3] / "result.json").read_text().splitlines()[0] + "\n")
    (dirs[3] / "progress.csv").unlink()
    (copy / "study.json").write_text(json.dumps(meta))
    with pytest.warns(StudyLoadWarning) as record:
        study = load_study(copy)
    assert len(record) == 1
    msg = str(record[0].message)
    for part in (f"{dirs[0].name}: 1 unreadable line(s)", f"{dirs[1].name}: no progress.csv",
                 "still running: 1 of 9 trials unfinished"):
        assert part in msg, msg
    t = study.trials.set_index("trial_id")
    assert len(t) == 9
    assert t.loc[dirs[2].name[-11:], "status"] == "completed" and t.loc[dirs[2].name[-11:], "retries"] == 1
    assert pd.isna(t.loc[dirs[2].name[-11:], "error"])
    assert t.loc[dirs[4].name[-11:], "status"] == "errored" and t.loc[dirs[4].name[-11:], "retries"] == 0
    assert t.loc[dirs[3].name[-11:], "status"] == "running"
    assert t.loc[dirs[0].name[-11:], "epochs"] == 2        # progress.csv restored the torn epoch
    c = compare(study, min_seeds=2)
    assert len(c.per_trial) == 7


def test_cli_end_to_end_on_real_study(real_study, tmp_path, capsys):
    """``python -m analysis PATH --out DIR`` (its main(), in this process: the same code path
    without paying for a second torch import)."""
    out = tmp_path / "report"
    assert cli_main([str(real_study), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "rank" in stdout and "powerlaw_clamp" in stdout and "vae" in stdout
    # The default metric end to end: the study ranked on val_loss, and the analysis compares on it.
    assert "compared on val_loss" in stdout
    assert "no primary comparisons were declared" in stdout.lower() and "exploratory" in stdout
    report = (out / "report.md").read_text()
    sections = ["## Answer", "## Headline", "## Rate–distortion", "## Speed", "## Stability", "## All tests",
                "## Figures", "## Method"]
    assert [report.index(s) for s in sections] == sorted(report.index(s) for s in sections)
    answer = report.split("## Answer")[1].split("##")[0]
    assert "val_loss, the objective every KL variant shares" in answer and "paired Wilcoxon" in answer
    assert "exact reparameterisation" in report
    for name in ("gamma_vs_final", "learning_curves", "divergence_vs_gamma", "data_spectrum", "rate_distortion"):
        assert f"({name}.png)" in report
        assert_png(out / f"{name}.png")
    # Every CSV the report writes keeps its numbers in numeric columns.
    for name in ("headline.csv", "groups.csv", "tests.csv", "per_trial.csv"):
        df = pd.read_csv(out / name)
        for col in ("final", "final_low", "final_high", "n", "p", "p_holm", "estimate", "rate", "distortion"):
            if col in df.columns:
                assert pd.api.types.is_numeric_dtype(df[col]), (name, col, df[col].head())
    assert not (real_study / "report").exists()  # --out was honoured


def test_python_dash_m_analysis_runs(handmade):
    """The module entry point itself, on the small hand-made study (report into PATH/report)."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "analysis", str(handmade), "--min-seeds", "2",
                           "--no-data-spectrum"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank" in proc.stdout and (handmade / "report" / "report.md").exists()
    assert_png(handmade / "report" / "gamma_vs_final.png")
    # loading and analysing never import Ray (a laptop without a cluster, or without Ray at all)
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")}
    assert "analysis.load" in imported
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}


def test_cli_errors_are_one_line(tmp_path, capsys, handmade):
    assert cli_main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no such study directory" in err and "\n" not in err
    assert cli_main([str(handmade), "--metric", "bogus", "--no-figures"]) == 2
    err = capsys.readouterr().err.strip()
    assert "metric='bogus'" in err and "\n" not in err
    assert cli_main([str(handmade), "--no-figures", "--min-seeds", "2", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").exists()


def test_evidence_is_recomputable_from_the_committed_csv(real_study, tmp_path):
    """benchmarks/evidence_summary.py: export a real study to trials.csv + studies.json, then
    rebuild it from those files alone; the comparison (every test's p and effect) is the same."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import evidence_summary as ev
    finally:
        sys.path.pop(0)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copytree(real_study, root / "tiny")
    out = tmp_path / "docs"
    assert ev.main(["--root", str(root), "--out", str(out), "--no-alpha"]) == 0
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 9 and {"final_val_loss", "final_val_rate", "epochs_to_target", "val_loss@0"} <= set(trials)
    direct = compare(load_study(real_study), n_resamples=200).tests
    rebuilt = compare(ev.rebuild(trials, json.loads((out / "studies.json").read_text()))["tiny"], n_resamples=200).tests
    assert len(direct) == len(rebuilt) > 0
    for col in ("p", "estimate", "baseline_estimate", "n_pairs"):
        a, b = direct[col].astype(float).to_numpy(), rebuilt[col].astype(float).to_numpy()
        bad = ~np.isclose(a, b, rtol=1e-5, equal_nan=True)
        assert not bad.any(), (col, direct[bad][["variant", "quantity", col]], rebuilt[bad][["variant", "quantity", col]])
    for name in ("headline.csv", "groups.csv", "divergence.csv"):
        assert (out / name).exists(), name
    # and from the CSV alone (what docs/results/ commits), without the study folders
    shutil.rmtree(root)
    assert ev.main(["--out", str(out), "--from-csv", "--no-alpha"]) == 0
