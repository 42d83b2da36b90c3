"""Issue 22: no headline, rank, Answer or closing summary sets one epoch's value against another's.
A study where one seed ran longer (vae seed 0: 4 epochs, every other trial 1, as ASHA leaves it)
must be compared at epoch 1 everywhere; the longer run's epoch-4 value never appears."""
from __future__ import annotations

import re

import pandas as pd
import pytest

from plvae import metrics as M
from analysis import compare
from analysis.load import Study
from analysis.report import answer
from tune.cli import config_from_args
from tune.summary import best_per_variant, outcomes, summary_text

SEEDS = (0, 1, 2)
# epoch e's val_loss is LOSS[variant] * (1 + 1/e): vae's epoch-4 value (0.625) is below every
# epoch-1 value, so comparing it with the others' epoch 1 would rank vae first
LOSS = {"vae": 0.5, "powerlaw": 0.45, "exponential": 0.48}


def _value(variant, seed, epoch):
    return LOSS[variant] * (1 + 1 / epoch) + 0.001 * seed


def _study(longer=(("vae", 0),)) -> Study:
    """Every trial stopped after epoch 1 (ASHA) but those in `longer`, which ran 4."""
    rows, params = [], []
    for variant in LOSS:
        for s in SEEDS:
            tid = f"{variant}_{s}"
            last = 4 if (variant, s) in longer else 1
            params.append({"trial_id": tid, "variant": variant, "gamma": 0.5, "latent_dim": 8, "lr": 1e-3,
                           "seed": s, "dataset": "digits", "max_epochs": 4,
                           "status": M.COMPLETED if last == 4 else M.EARLY_STOPPED})
            for e in range(1, last + 1):
                rows.append({"trial_id": tid, "training_iteration": e, M.DIVERGED: 0.0,
                             M.VAL_LOSS: _value(variant, s, e), M.TRAIN_LOSS: 1.0, M.VAL_RATE: 1.0,
                             M.VAL_RECON_MU: 1.0, M.INITIAL_VAL_LOSS: 3.0, "time_total_s": float(e)})
    return Study.from_history(pd.DataFrame(rows), pd.DataFrame(params), meta={"status": "finished"})


@pytest.mark.parametrize("longer", [(("vae", 0),), tuple(("vae", s) for s in SEEDS)],
                         ids=["vae-seed-0-longer", "every-vae-seed-longer"])
def test_headline_rank_and_answer_compare_at_one_epoch(longer):
    study = _study(longer)
    c = compare(study, n_resamples=200)
    assert set(c.per_trial["epoch"]) == {1.0} and set(c.groups["epoch"]) == {1.0}
    h = c.headline.set_index("variant")
    assert set(h["epoch"]) == {1.0}
    assert list(c.headline.sort_values("rank")["variant"]) == ["powerlaw", "exponential", "vae"]
    # the baseline's median is its epoch-1 value over all three seeds, not seed 0's epoch 4
    assert h.loc["vae", "final"] == _value("vae", 1, 1)
    assert h.loc["powerlaw", "rel_final"] == _value("powerlaw", 1, 1) / _value("vae", 1, 1) - 1
    text = answer(study, c)
    assert "at epoch 1 " in text and "n = 3" in text
    epoch4 = f"{_value('vae', 0, 4):.4g}"
    assert epoch4 not in text
    assert f"{_value('vae', 1, 1):.4g}" in text


def test_closing_summary_ranks_only_trials_of_one_length():
    study = _study()
    final = {}
    for r in study.trials.to_dict("records"):
        h = study.history[study.history["trial_id"] == r["trial_id"]]
        last = h.iloc[-1]
        final[r["trial_id"]] = {"status": "TERMINATED", "config": {"variant": r["variant"], "gamma": 0.5,
                                                                   "seed": r["seed"]},
                                "last_result": {M.VAL_LOSS: last[M.VAL_LOSS], "training_iteration":
                                                int(last["training_iteration"]), "done": True}}
    out = outcomes(final, 4)
    best = best_per_variant(final, M.VAL_LOSS, out)
    cfg, _ = config_from_args(["--variants", "vae,powerlaw,exponential", "--storage-path", "/tmp/x"])
    record = {"summary": {k: 0 for k in M.OUTCOMES}, "best_per_variant": best, "status": "finished"}
    text = summary_text(cfg, record, 1.0)
    values = {ln.split()[0]: ln.split()[1] for ln in text.splitlines() if ln.startswith("  ")}
    epochs = set(re.findall(r"; (\d+) epochs?;", text))
    assert epochs == {"4"} and "at epoch 4" in text, text      # every value shown is from one epoch
    assert values == {"vae": f"{_value('vae', 0, 4):.5f}", "powerlaw": "not", "exponential": "not"}, text
    assert best["powerlaw"]["ranked"] is False and best["vae"]["ranked"] is True
