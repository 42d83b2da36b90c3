"""Metric names, defined once.

The trainer logs these, the Tune trainable reports them and the analysis reads them; nothing
else spells a metric name as a string literal. Per-stage metrics are ``f"{stage}_{name}"``.
"""
from __future__ import annotations

TRAIN = "train"
VAL = "val"

# Per-stage quantities (combine with a stage through `metric`).
LOSS = "loss"                # recon + kl_coeff * divergence, against the variant's own prior
RECON = "recon"              # reconstruction error (MSE, mean) at the sampled z
DIVERGENCE = "divergence"    # KL (closed form or Monte Carlo) or squared W2, before kl_coeff
RECON_MU = "recon_mu"        # distortion: reconstruction error at z = mu
RATE = "rate"                # rate: closed-form KL(q || p) summed over latent dims, nats per example


def metric(stage: str, name: str) -> str:
    """``metric("val", "recon_mu") == "val_recon_mu"``."""
    return f"{stage}_{name}"


TRAIN_LOSS = metric(TRAIN, LOSS)
TRAIN_RECON = metric(TRAIN, RECON)
TRAIN_DIVERGENCE = metric(TRAIN, DIVERGENCE)
VAL_LOSS = metric(VAL, LOSS)
VAL_RECON = metric(VAL, RECON)
VAL_DIVERGENCE = metric(VAL, DIVERGENCE)
VAL_RECON_MU = metric(VAL, RECON_MU)
VAL_RATE = metric(VAL, RATE)

# Validation metrics measured once before the first optimiser step (the seed's "initial" loss).
INITIAL_PREFIX = "initial_"
INITIAL_VAL_LOSS = INITIAL_PREFIX + VAL_LOSS
INITIAL_VAL_RECON_MU = INITIAL_PREFIX + VAL_RECON_MU

# Latent diagnostics, measured on the validation set at each validation end.
ACTIVE_UNITS = "active_units"                    # Burda et al. 2015: Var_x(E[z|x]) > 0.01
ACTIVE_UNITS_WHITENED = "active_units_whitened"  # the same on mu / s (the prior-whitened code)
LATENT_ALPHA = "latent_alpha"                    # power-law exponent of the spectrum of mu
ACTIVE_UNIT_THRESHOLD = 0.01

# Seconds from the trial's first training step to the end of each epoch's validation (summed over
# the runs of a resumed trial). Unlike Tune's time_total_s it leaves out what a trial pays before
# it trains - a fresh worker's imports, data and model set-up, the initial validation - so the
# first trial on each reused worker is not slower by its warm-up (issue 22: 9 s of 10).
TRAIN_TIME_S = "train_time_s"

# 1.0 once a non-finite loss has been seen; the trial then stops cleanly (an outcome, not a crash).
DIVERGED = "diverged"

# What a study compares on by default. Every KL variant is an exact reparameterisation of the
# same beta-VAE (docs/design.md, "Comparing variants fairly"), so val_loss is one objective for all of
# them; recon_mu alone rewards moving along the rate-distortion curve. (powerlaw_wae optimises a
# squared-W2 objective: its val_loss is its own, compared in the rate-distortion plane only.)
DEFAULT_STUDY_METRIC = VAL_LOSS

EPOCH_METRICS = (
    TRAIN_LOSS, TRAIN_RECON, TRAIN_DIVERGENCE,
    VAL_LOSS, VAL_RECON, VAL_DIVERGENCE, VAL_RECON_MU, VAL_RATE,
    ACTIVE_UNITS, ACTIVE_UNITS_WHITENED, LATENT_ALPHA, DIVERGED, TRAIN_TIME_S,
)

# The per-trial quantities a preset's `primary:` comparisons may name: tune validates presets
# against this tuple and the analysis computes them (analysis.columns), so neither spells its own.
FINAL_VALUE = "final"                  # the metric at the comparison epoch
EPOCHS_TO_TARGET = "epochs_to_target"  # epochs to the target (censored where never reached)
DISTORTION_GAP = "distortion_gap"      # distortion minus the baseline frontier's at the same rate
PRIMARY_QUANTITIES = (FINAL_VALUE, EPOCHS_TO_TARGET, DIVERGED, DISTORTION_GAP)

# Trial outcomes, defined once: the study runner's study.json and the analysis both classify a
# trial into exactly one of these.
COMPLETED = "completed"          # ran every planned epoch
EARLY_STOPPED = "early_stopped"  # the scheduler (ASHA) stopped it early, without divergence or error
DIVERGED_OUTCOME = DIVERGED      # reported diverged = 1, or a non-finite loss (an outcome, not a crash)
ERRORED = "errored"              # raised (Tune status ERROR)
RUNNING = "running"              # unfinished: still running, or interrupted before the trial ended
OUTCOMES = (COMPLETED, EARLY_STOPPED, DIVERGED_OUTCOME, ERRORED, RUNNING)

# Losses whose non-finite value means the trial diverged (even without the model's flag).
DIVERGENCE_LOSSES = (TRAIN_LOSS, VAL_LOSS)


def is_diverged(result: dict) -> bool:
    """The one definition of divergence for a reported result (one epoch's metrics): the model's
    ``diverged`` flag, or a non-finite training or validation loss actually reported."""
    import math

    flag = result.get(DIVERGED)
    try:
        if flag is not None and float(flag) >= 0.5:
            return True
    except (TypeError, ValueError):
        pass
    for name in DIVERGENCE_LOSSES:
        v = result.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
            return True
    return False
