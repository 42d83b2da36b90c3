"""TensorBoard HParams for a study's trials, written from each trial (issue 22: 0 of 36 trials of a
grid study had them, because the grid reaches Tune as points_to_evaluate and Tune's TensorBoard
logger only writes the hparams of a searched space). Each trial writes, into its own folder
(tune.trainable.trial_artifact_dir, beside Tune's own events), TensorBoard's public hparams
summaries (``tensorboard.plugins.hparams.summary_v2``, what its api module exports): the swept fields, ``variant`` first, and the
study objective as the metric - the scalar Tune's logger writes in the same folder."""
from __future__ import annotations

from tune.reporting import STUDY_OBJECTIVE
from tune.sweeps import SWEEPS

TUNE_SCALAR_PREFIX = "ray/tune/"   # how Ray Tune's TensorBoard logger names a reported metric


def trial_hparams(config: dict) -> dict:
    """The swept fields of a flat TrialConfig dict, variant first (SWEEPS' order), as TensorBoard
    takes them (bool, int, float, str); a field the variant does not use (None) is left out."""
    out = {}
    for name in SWEEPS:
        value = config.get(name)
        if isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def write_hparams(log_dir: str, config: dict) -> None:
    """The experiment's hparams and metric, and this trial's values, as one TensorBoard run."""
    from tensorboard.plugins.hparams import summary_v2 as hp   # api.py would import TensorFlow
    from torch.utils.tensorboard import SummaryWriter

    values = trial_hparams(config)
    writer = SummaryWriter(log_dir)
    try:
        metric = hp.Metric(TUNE_SCALAR_PREFIX + STUDY_OBJECTIVE, display_name=STUDY_OBJECTIVE)
        writer.file_writer.add_summary(hp.hparams_config_pb(hparams=[hp.HParam(k) for k in values],
                                                            metrics=[metric]))
        writer.file_writer.add_summary(hp.hparams_pb(values))
    finally:
        writer.close()
