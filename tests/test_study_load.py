"""analysis.load against damage a real study can suffer: a lost trial folder, a bad
training_iteration line, epochs repeated by a restore; and `python -m analysis`'s own options."""
from __future__ import annotations

import json
import warnings

import pytest

from analysis.__main__ import main as analysis_main
from analysis.load import StudyLoadWarning, load_study
from plvae import metrics as M
from plvae.config import TrialConfig


def write_trial(exp, tid, lines, variant="vae"):
    d = exp / f"{variant}_{tid}"
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps(TrialConfig(variant=variant, max_epochs=3).to_dict()))
    (d / "result.json").write_text("".join(
        (line if isinstance(line, str) else json.dumps({"trial_id": tid, **line})) + "\n" for line in lines))
    return d


def epoch(i, loss):
    return {"training_iteration": i, M.VAL_LOSS: loss, M.TRAIN_LOSS: loss, M.DIVERGED: 0.0}


@pytest.fixture
def damaged(tmp_path):
    exp = tmp_path / "study"
    exp.mkdir()
    (exp / "study.json").write_text(json.dumps({
        "study_name": "study", "status": "finished", "metric": M.VAL_LOSS, "max_epochs": 3,
        "trial_status": {"aaaaa_00000": "TERMINATED", "aaaaa_00001": "TERMINATED", "aaaaa_00002": "TERMINATED"}}))
    # a restore re-ran epoch 2 (from the epoch-1 checkpoint): the later row is the one that counts
    write_trial(exp, "aaaaa_00000", [epoch(1, 3.0), epoch(2, 2.5), epoch(2, 2.0), epoch(3, 1.0)])
    # one line with a broken training_iteration among good ones
    write_trial(exp, "aaaaa_00001", [epoch(1, 3.0), {**epoch(2, 2.0), "training_iteration": "two"}, epoch(3, 1.5)])
    # aaaaa_00002's folder was lost
    return exp


def test_lost_folders_bad_lines_and_repeated_epochs_warn_and_load_the_rest(damaged):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(damaged)
    text = " ".join(str(w.message) for w in caught if issubclass(w.category, StudyLoadWarning))
    assert "aaaaa_00002" in text and "no readable folder" in text                       # the lost trial, by name
    assert str(damaged / "vae_aaaaa_00001" / "result.json") in text and "invalid training_iteration" in text
    assert "repeated epoch" in text
    h = study.history.set_index(["trial_id", "training_iteration"])
    assert list(h.loc["aaaaa_00000"].index) == [1, 2, 3]
    assert h.loc[("aaaaa_00000", 2), M.VAL_LOSS] == 2.0                                   # the latest row
    assert list(h.loc["aaaaa_00001"].index) == [1, 3]
    assert set(study.trials["status"]) == {M.COMPLETED}


def test_outcome_names_come_from_plvae():
    from analysis.load import STATUSES

    assert STATUSES == M.OUTCOMES
    assert M.is_diverged({M.TRAIN_LOSS: float("nan")}) and M.is_diverged({M.DIVERGED: 1.0})
    assert not M.is_diverged({M.TRAIN_LOSS: 1.0, M.DIVERGED: 0.0})


@pytest.mark.parametrize("argv,needle", [(["--alpha", "2"], "--alpha=2.0"), (["--min-seeds", "0"], "--min-seeds=0"),
                                         (["--target", "nan"], "--target=nan"), (["--bogus"], "unrecognized")])
def test_analysis_options_are_one_line(damaged, capsys, argv, needle):
    assert analysis_main([str(damaged), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_unwritable_out_is_one_line(damaged, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert analysis_main([str(damaged), "--out", str(tmp_path / "a_file" / "report")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --out=") and "allowed" in err[0], err


def retried_study(tmp_path, with_study_json: bool):
    """Three trials that each failed and were retried from a checkpoint to their last epoch (what a
    killed worker under --max-failures leaves: error.txt beside every epoch), and one that failed
    for good (its last failure after its last result)."""
    exp = tmp_path / ("with" if with_study_json else "without")
    exp.mkdir()
    status = {}
    for i, n_failures in enumerate([1, 2, 3]):
        tid = f"bbbbb_{i:05d}"
        d = write_trial(exp, tid, [{**epoch(e, 3.0 - e / 2), "date": f"2026-01-01_10-00-{10 * e:02d}"}
                                   for e in (1, 2, 3)])
        (d / "error.txt").write_text("".join(f"Failure # {k + 1} (occurred at 2026-01-01_10-00-{5 + 10 * k:02d})\n"
                                             "Traceback ...\nRayActorError: the actor died\n\n"
                                             for k in range(n_failures)))
        status[tid] = "TERMINATED"
    d = write_trial(exp, "bbbbb_00003", [{**epoch(1, 3.0), "date": "2026-01-01_10-00-10"}])
    (d / "error.txt").write_text("Failure # 1 (occurred at 2026-01-01_10-00-15)\nTraceback ...\nValueError: bad\n")
    status["bbbbb_00003"] = "ERROR"
    if with_study_json:
        (exp / "study.json").write_text(json.dumps({"study_name": "retried", "status": "finished",
                                                    "metric": M.VAL_LOSS, "max_epochs": 3, "trial_status": status}))
    return exp


@pytest.mark.parametrize("with_study_json", [True, False])
def test_retried_trials_load_as_completed_with_their_retries(tmp_path, with_study_json):
    study = load_study(retried_study(tmp_path, with_study_json), warn=False)
    t = study.trials.set_index("trial_id")
    assert dict(t["status"]) == {"bbbbb_00000": M.COMPLETED, "bbbbb_00001": M.COMPLETED,
                                 "bbbbb_00002": M.COMPLETED, "bbbbb_00003": M.ERRORED}
    assert dict(t["retries"]) == {"bbbbb_00000": 1, "bbbbb_00001": 2, "bbbbb_00002": 3, "bbbbb_00003": 0}
    assert t["error"].isna().sum() == 3 and "ValueError: bad" in t.loc["bbbbb_00003", "error"]
