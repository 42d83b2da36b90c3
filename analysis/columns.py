"""Every column and quantity name of the analysis tables, defined once, with their suffix helpers.

A group's estimate of quantity ``q`` sits in column ``q`` with its CI in ``low(q)`` / ``high(q)``,
the number of values it used in ``n_used(q)``; a rate's event count in ``n_of(q)``; the test of
``q`` against the baseline in ``p(q)`` (raw) and ``p_holm(q)`` (Holm-corrected, where the test is
in the corrected family). Nothing else spells those suffixes.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd

from plvae import metrics as M
# ------------------------------------------------------------------------------ trials table

# The column naming each trial's study when several are loaded together (load_studies).
STUDY = "study"
# Swept parameters first, in this order, when present.
KEY_PARAMS = (STUDY, "variant", "gamma", "latent_dim", "min_decay", "clip_dim", "decay_rate", "lr",
              "seed", "dataset", "net", "kl_coeff", "batch_size", "data_seed")
# Validation losses whose best (minimum) over epochs is kept per trial.
LOSS_METRICS = (M.VAL_LOSS, M.VAL_RECON, M.VAL_RECON_MU, M.TRAIN_LOSS)


def final(name: str) -> str:
    """Column of the trials table holding a metric's last reported value."""
    return f"final_{name}"


def best(name: str) -> str:
    """Column of the trials table holding a loss's minimum over epochs."""
    return f"best_{name}"


def initial(name: str) -> str:
    """Pre-training value of a metric (``initial_val_loss``), as the model logs it."""
    return M.INITIAL_PREFIX + name


# ------------------------------------------------------------------------------ grouping keys

REPLICATE_PARAMS = ("seed", "data_seed")
# Fields that do not change what is learned (or are bookkeeping): never split groups.
NON_EXPERIMENTAL = ("data_dir", "num_workers", "accelerator", "extra", "download", "max_epochs")
CONTEXT_FIRST = ("dataset", "latent_dim", "lr", "kl_coeff")
BETA = "kl_coeff"
TOTAL_LOSSES = (M.VAL_LOSS, M.TRAIN_LOSS)
# How a parameter is written in labels ("γ=0.5", "β=0.1").
SYMBOLS = {"gamma": "γ", BETA: "β"}

# ------------------------------------------------------------------------------ per-trial quantities

FINAL = M.FINAL_VALUE
BEST = "best"
EPOCHS_TO_TARGET = M.EPOCHS_TO_TARGET
SECONDS_TO_TARGET = "seconds_to_target"
AUC = "auc"
FIRST_EPOCH_RATIO = "first_epoch_ratio"
MAX_INCREASE = "max_increase"
SPREAD = "spread"               # std of the final value across seeds (a group statistic)
DIVERGED = M.DIVERGED        # the group's divergence rate; the per-epoch flag's name
ASHA_STOPPED = "early_stopped"
TOTAL_LOSS = "total_loss"       # final val_loss, shown beside
RATE = "rate"                   # final val_rate: KL summed over latent dims, nats per example
DISTORTION = "distortion"       # final val_recon_mu
DISTORTION_GAP = M.DISTORTION_GAP  # distortion minus the baseline frontier's at the same rate
EPOCH = "epoch"                 # the epoch a comparison is made at
CLOCK = "seconds_at_epoch"      # Tune's time_total_s at the comparison epoch: where seconds to target censor
N_BOTH = "n_both"               # pairs where both runs finished: the n of a final-value comparison
SPEEDUP = "speedup"             # KM median epochs of the baseline / of the group (> 1: faster)
COVERAGE = "diff_coverage"      # exact coverage of the order-statistic CI of the median paired difference
FROM_SURVIVORS = "from_survivors"  # a frontier (point) traced from the seeds that did not diverge
# A frontier point is traced only where at least this share of the baseline's seeds finished (8 in 10);
# elsewhere it is "from survivors": reported, never used for a declared test.
FRONTIER_MIN_FINISHED = 0.8

SPEED = (EPOCHS_TO_TARGET, SECONDS_TO_TARGET, AUC, FIRST_EPOCH_RATIO)
STABILITY = (DIVERGED, SPREAD, MAX_INCREASE, ASHA_STOPPED)
PER_TRIAL = (FINAL, EPOCHS_TO_TARGET, SECONDS_TO_TARGET, AUC, FIRST_EPOCH_RATIO, MAX_INCREASE)
RATES = (DIVERGED, ASHA_STOPPED)
TESTED = (FINAL, *SPEED, *STABILITY, DISTORTION_GAP)
TIMES = (EPOCHS_TO_TARGET, SECONDS_TO_TARGET)   # censored: tested with Gehan / log-rank
# Quantities of the metric's own curve: not comparable across objectives (W2 against KL).
ON_OBJECTIVE = (FINAL, *SPEED, SPREAD, MAX_INCREASE)
LABELS = {
    FINAL: "final", BEST: "best", EPOCHS_TO_TARGET: "epochs to target",
    SECONDS_TO_TARGET: "seconds to target", AUC: "normalised AUC",
    FIRST_EPOCH_RATIO: "epoch-1 / initial", MAX_INCREASE: "largest rise",
    SPREAD: "std across seeds", DIVERGED: "divergence rate", ASHA_STOPPED: "ASHA-stopped share",
    TOTAL_LOSS: "total loss", RATE: "rate (nats)", DISTORTION: "distortion (recon_mu)",
    DISTORTION_GAP: "distortion gap at equal rate",
}
# A preset's `primary` entries name these quantities (plvae.metrics, which tune validates against).
PRIMARY_QUANTITIES = dict(zip(M.PRIMARY_QUANTITIES, (FINAL, EPOCHS_TO_TARGET, DIVERGED, DISTORTION_GAP)))
PRIMARY, EXPLORATORY = "primary", "exploratory"
HOLM_FAMILIES = ("primary", "all", "quantity")

# How a quantity is summarised across a group's seeds.
median = np.median
std = functools.partial(np.std, ddof=1)
# Times to target are censored (inf = never) and, at the default target, half the baseline reaches
# it by construction: the lower median keeps a group where half the trials got there finite.
median_low = functools.partial(np.quantile, q=0.5, method="lower")
STATISTIC = {EPOCHS_TO_TARGET: median_low, SECONDS_TO_TARGET: median_low}


def statistic(q: str):
    """The summary of quantity q across a group's seeds (the median unless STATISTIC says)."""
    return STATISTIC.get(q, median)


# ------------------------------------------------------------------------------ suffixes

def low(q: str) -> str:
    """Lower bound of q's 95% CI."""
    return f"{q}_low"


def high(q: str) -> str:
    """Upper bound of q's 95% CI."""
    return f"{q}_high"


def n_used(q: str) -> str:
    """How many values q's estimate used."""
    return f"{q}_n"


def n_of(q: str) -> str:
    """How many of a group's trials had event q (a rate's count, e.g. ``n_diverged``)."""
    return f"n_{q}"


def p(q: str) -> str:
    """Raw p-value of q's test against the baseline."""
    return f"p_{q}"


def p_holm(q: str) -> str:
    """Holm-corrected p-value of q's test (nan outside the corrected family)."""
    return f"p_holm_{q}"


def ci(q: str) -> list:
    """q with its CI bounds: [q, low(q), high(q)]."""
    return [q, low(q), high(q)]


# ------------------------------------------------------------------------------ cell values

def missing(v) -> bool:
    """None, NaN or pandas' NA (a string is never missing)."""
    return v is None or (not isinstance(v, str) and bool(pd.isna(v)))


def num(x, default: float = math.nan) -> float:
    """x as a float; ``default`` when it is not a number or is NaN."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(x) else x

