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
