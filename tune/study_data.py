"""The data of a study, loaded once: each distinct dataset built a single time (the driver runs
this as a one-off Ray task, so torch's data stack and Lightning stay out of the driver process;
a dry run calls it directly), and the power law of each training split measured for
--gamma-from-data.
"""
from __future__ import annotations

import os

from plvae.config import ConfigError
from tune.errors import StudyError
from tune.study_config import StudyConfig


def data_key_name(key: tuple) -> str:
    """A plvae.data.data_key as a JSON-able string: 'dataset=natural_patches,image_size=16,...'."""
    return ",".join(f"{k}={v}" for k, v in key)


def check_data_before_ray(cfg: StudyConfig) -> None:
    """What can be checked about the data without loading it (nor importing the data stack)."""
    t = cfg.base_trial()
    if t.dataset == "image_folder" and not os.path.isdir(os.path.expanduser(t.data_dir)):
        raise StudyError(f"data_dir={t.data_dir!r} is invalid for dataset 'image_folder': not a directory; "
                         f"allowed: a folder of images")


def load_study_data(cfg: StudyConfig) -> dict:
    """Each distinct dataset of the study: data_key -> DataSplits. The data fields are fixed for a
    whole study, so this is one dataset; data errors become one StudyError line."""
    from plvae.data import data_key, load_data

    trial = cfg.base_trial()
    try:
        return {data_key(trial): load_data(trial)}
    except (ConfigError, OSError, RuntimeError) as e:   # missing files, no network, unreadable image
        raise StudyError(f"dataset={trial.dataset!r} could not be loaded: {' '.join(str(e).split())}") from None


def measure_alphas(data: dict) -> dict:
    """{data_key_name: alpha}, the power-law exponent of each training split's covariance spectrum."""
    from plvae.spectrum import fit_power_law, split_spectrum

    return {data_key_name(k): float(fit_power_law(split_spectrum(v.train)).alpha) for k, v in data.items()}


def load_and_measure(cfg: StudyConfig, measure: bool) -> tuple[dict, dict]:
    """(data_key -> DataSplits, {data_key_name: alpha} or {}): what a study loads once."""
    data = load_study_data(cfg)
    return data, (measure_alphas(data) if measure else {})

