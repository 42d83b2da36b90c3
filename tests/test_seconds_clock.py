"""Seconds to target read train_time_s (from the trial's first training step) where every trial
reports it, else Tune's time_total_s; the report says which (issue 22: the first trial on a reused
worker paid ~9 s of warm-up on time_total_s, and the grid always starts with the baseline)."""
from __future__ import annotations

import pandas as pd
import pytest

from plvae import metrics as M
from analysis import compare
from analysis.columns import SECONDS_TO_TARGET
from analysis.load import Study
from analysis.report import _study_facts

WARM_UP = 9.0


def _study(with_train_time: bool) -> Study:
    rows, params = [], []
    for variant, loss in (("vae", 0.5), ("powerlaw", 0.45)):
        for s in range(3):
            tid = f"{variant}_{s}"
            params.append({"trial_id": tid, "variant": variant, "gamma": 0.5, "latent_dim": 8, "lr": 1e-3,
                           "seed": s, "dataset": "digits", "max_epochs": 3})
            warm = WARM_UP if variant == "vae" else 0.0     # the baseline ran first on each worker
            for e in range(1, 4):
                row = {"trial_id": tid, "training_iteration": e, M.DIVERGED: 0.0,
                       M.VAL_LOSS: loss * (1 + 1 / e), M.TRAIN_LOSS: 1.0, M.VAL_RATE: 1.0, M.VAL_RECON_MU: 1.0,
                       M.INITIAL_VAL_LOSS: 3.0, "time_total_s": warm + 2.0 * e}
                if with_train_time:
                    row[M.TRAIN_TIME_S] = 2.0 * e
                rows.append(row)
    return Study.from_history(pd.DataFrame(rows), pd.DataFrame(params), meta={"status": "finished"})


@pytest.mark.parametrize("with_train_time", [True, False])
def test_seconds_to_target_use_the_training_clock_and_the_report_says_which(with_train_time):
    study = _study(with_train_time)
    c = compare(study, target=0.7, n_resamples=200)    # vae reaches 0.7 at epoch 3, powerlaw at epoch 2
    sec = c.groups.set_index("variant")[SECONDS_TO_TARGET]
    warm = 0.0 if with_train_time else WARM_UP
    assert sec["vae"] == pytest.approx(6.0 + warm) and sec["powerlaw"] == pytest.approx(4.0)
    assert c.clock == (M.TRAIN_TIME_S if with_train_time else "time_total_s")
    facts = "\n".join(_study_facts(study, c))
    assert f"seconds to target: on `{c.clock}`" in facts
    assert ("first training step" in facts) == with_train_time
