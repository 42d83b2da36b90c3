"""Issue 22: the default study answers the same way twice, at full n, from one epoch.

One run of a tiny version of the default (`quick`) preset in a fixed order (one trial at a time)
on a local Ray: every group of the answer is compared at the last epoch with every seed (n = 3,
stated), and analysing the same study twice gives the same Answer word for word. (Three whole
default studies in a row were compared by hand: the Answer sections were identical; see
BENCHMARKS.md.)"""
from __future__ import annotations

import os
import re

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from analysis import compare  # noqa: E402
from analysis.load import load_study  # noqa: E402
from analysis.report import answer  # noqa: E402
from tune.run_study import main  # noqa: E402

TINY = ["--image-size", "8", "--set", "n_train=256", "--set", "n_val=64", "--hidden-dims", "8,16",
        "--enc-out-dim", "32", "--latent-dims", "4", "--clip-dims", "2", "--no-dashboard", "--verbose", "1",
        "--max-concurrent", "1", "--epochs", "2"]


def test_default_study_answers_at_full_n_from_one_epoch_and_the_same_twice(tmp_path, capsys):
    assert main(["--storage-path", str(tmp_path), "--study-name", "q", *TINY]) == 0
    out = capsys.readouterr().out
    # Tune's status table names the study's results folder, not Ray's temp folder
    assert "Result logdir:" not in out and f"Results: {tmp_path / 'q'}" in out
    study = load_study(str(tmp_path / "q"))
    assert study.meta["scheduler"] == "fifo" and set(study.trials["seed"]) == {0, 1, 2}
    c = compare(study, n_resamples=200)
    h = c.headline
    assert set(h["epoch"]) == {2.0} and set(c.groups["epoch"]) == {2.0}     # one epoch: the last
    assert (h["n"] == 3).all() and not h["small"].any()                     # full n: tested
    text = answer(study, c)
    assert "at epoch 2 " in text and "n = 3" in text
    assert "not tested" not in text and "too few" not in text
    # the same study analysed again: the same ranking, verdicts and sentences
    c2 = compare(load_study(str(tmp_path / "q")), n_resamples=200)
    assert answer(study, c2) == text
    assert list(c2.headline["variant"]) == list(h["variant"]) and list(c2.headline["verdict"]) == list(h["verdict"])
    assert re.search(r"over n = 3 seeds", text)
