"""Every trial of a study gets its TensorBoard images in its own folder under the storage path,
whichever reused worker ran it (issue 22: with actor reuse only the first trial per worker had
them), and TensorBoard HParams (the swept fields, variant first, and the study objective as the
metric: none for a grid study before). A real local Ray with 2 CPUs: 6 one-epoch trials, one CPU
each, on 2 reused workers."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, TENSORS, EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from plvae.callbacks import RECONSTRUCTIONS, SAMPLES
from tune.hparams import TUNE_SCALAR_PREFIX
from tune.reporting import STUDY_OBJECTIVE

REPO = Path(__file__).resolve().parents[1]

TINY = ["--image-size", "8", "--set", "n_train=128", "--set", "n_val=32", "--hidden-dims", "8,16",
        "--enc-out-dim", "32", "--latent-dims", "4", "--clip-dims", "2", "--no-dashboard", "--verbose", "0"]


def image_events(trial_dir: Path) -> dict[str, int]:
    """{tag: number of image events} over every TensorBoard event file in the trial's folder."""
    counts: dict[str, int] = {}
    for path in trial_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={IMAGES: 0})
        acc.Reload()
        for tag in acc.Tags()[IMAGES]:
            counts[tag] = counts.get(tag, 0) + len(acc.Images(tag))
    return counts


def hparams(trial_dir: Path) -> tuple[list, dict, set]:
    """(the experiment's hparam names, in order; this session's hparams; every scalar tag)."""
    names, values, scalars = [], {}, set()
    for path in trial_dir.glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path))
        acc.Reload()
        scalars |= set(acc.Tags()[SCALARS])
        for tag in acc.Tags()[TENSORS]:
            data = plugin_data_pb2.HParamsPluginData.FromString(acc.SummaryMetadata(tag).plugin_data.content)
            if data.HasField("experiment"):
                names = [h.name for h in data.experiment.hparam_infos]
                assert [m.name.tag for m in data.experiment.metric_infos] == [TUNE_SCALAR_PREFIX + STUDY_OBJECTIVE]
            if data.HasField("session_start_info"):
                values = {k: v.string_value or v.number_value for k, v in data.session_start_info.hparams.items()}
    return names, values, scalars


def test_every_trial_of_a_reused_worker_study_has_its_images(tmp_path):
    # The study in a process of its own, as a user runs it: an in-process Ray keeps the streams of
    # an earlier test's capture (Ray's tqdm writes to a closed file).
    argv = ["--variants", "vae,powerlaw,powerlaw_clamp", "--gammas", "0.5", "--seeds", "0,1", "--epochs", "1",
            "--scheduler", "fifo", "--max-concurrent", "2", "--storage-path", str(tmp_path),
            "--study-name", "images", "--num-cpus", "2", *TINY]
    proc = subprocess.run([sys.executable, str(REPO / "tune" / "run_study.py"), *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = sorted(p.parent for p in (tmp_path / "images").glob("*/params.json"))
    assert len(trials) == 6
    counts = {t.name: image_events(t) for t in trials}
    missing = [name for name, c in counts.items() if c.get(RECONSTRUCTIONS) != 1 or c.get(SAMPLES) != 1]
    assert not missing, f"trials without exactly one image of each kind per epoch: {missing} ({counts})"
    for t in trials:
        names, values, scalars = hparams(t)
        assert names[0] == "variant" and {"gamma", "seed"} <= set(names), (t.name, names)
        assert values["variant"] in ("vae", "powerlaw", "powerlaw_clamp") and values["seed"] in (0, 1), values
        assert TUNE_SCALAR_PREFIX + STUDY_OBJECTIVE in scalars   # the metric the HParams table shows
