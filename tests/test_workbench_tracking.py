"""The researcher's workbench, watching and tracking: reconstructions and prior samples in
TensorBoard each epoch (plvae.callbacks), the best trials' reconstructions drawn by analysis from
their checkpoints, and --mlflow through Ray Tune's own MLflowLoggerCallback (a local file store)."""
from __future__ import annotations

import importlib.util

import os
from pathlib import Path

import pytest

from plvae.callbacks import RECONSTRUCTIONS, SAMPLES, ReconstructionImages
from plvae.config import TrialConfig
from plvae.model import train
from tune.cli import config_from_args, print_config
from tune.run_study import main

TINY_TRIAL = dict(dataset="natural_patches", image_size=8, channels=1, n_train=128, n_val=32, net="conv",
                  hidden_dims=[8, 16], enc_out_dim=32, batch_size=32, latent_dim=4, max_epochs=2)
TINY = ["--image-size", "8", "--set", "n_train=256", "--set", "n_val=64", "--hidden-dims", "8,16",
        "--enc-out-dim", "32", "--latent-dims", "4", "--no-dashboard", "--verbose", "0"]


def images_in(folder) -> dict:
    """{tag: [(step, (height, width)), ...]} of the images in a folder's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0})
    acc.Reload()
    return {tag: [(e.step, (e.height, e.width)) for e in acc.Images(tag)] for tag in acc.Tags()["images"]}


def test_images_each_epoch_from_a_fixed_batch_and_fixed_noise(tmp_path):
    cfg = TrialConfig.from_dict(TINY_TRIAL)
    train(cfg, callbacks=[ReconstructionImages(log_dir=str(tmp_path), n=4)])
    found = images_in(tmp_path)
    # 4 images of 8x8 in a row with 1-pixel padding: 37 wide; originals over reconstructions: 19 high
    assert found[RECONSTRUCTIONS] == [(1, (19, 37)), (2, (19, 37))]
    assert found[SAMPLES] == [(1, (10, 37)), (2, (10, 37))]


def test_in_a_notebook_the_trainers_tensorboard_logger_gets_the_images(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(str(tmp_path), name="nb", version=0)
    train(TrialConfig.from_dict({**TINY_TRIAL, "max_epochs": 1}), callbacks=[ReconstructionImages()], logger=logger)
    assert set(images_in(tmp_path / "nb" / "version_0")) == {RECONSTRUCTIONS, SAMPLES}


def test_a_store_mlflow_refuses_is_one_line_before_ray(tmp_path, capsys, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -e '.[dev]' installs it)")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "false")   # MLflow 3's default: file stores refused
    rc = main(["--storage-path", str(tmp_path), "--study-name", "x", "--mlflow", f"file://{tmp_path}/mlruns"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: mlflow=") and "sqlite:///" in err[0], err
    assert not (tmp_path / "x").exists()   # the claim is released: the name is free again


def test_flags_reach_the_config_and_resume_applies_images_but_refuses_mlflow(tmp_path, capsys):
    from plvae.study_files import TUNER_FILE as TUNER_STATE
    from tune.study_record import claim, new_record, prepare_resume

    base = ["--variants", "vae", "--gammas", "0.5", "--epochs", "2", "--storage-path", str(tmp_path), "--study-name", "s"]
    old, _ = config_from_args(base)
    rec = new_record(old)
    rec.update(status="running", heartbeat="2020-01-01T00:00:00+00:00")   # an interrupted study, driver gone
    claim(old, rec)
    (tmp_path / "s" / TUNER_STATE).write_bytes(b"state")

    cfg, _ = config_from_args(["--no-images", "--mlflow", "file:///tmp/x"])
    assert cfg.images is False and cfg.mlflow == "file:///tmp/x"
    assert "images: false" in print_config(cfg, False) and "mlflow: file:///tmp/x" in print_config(cfg, False)
    again, args = config_from_args(base + ["--no-images"])
    resumed, _, notes = prepare_resume(again, args.given)
    assert resumed.images is False and "--no-images True -> False" in notes[0]
    rc = main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s",
               "--mlflow", "file:///tmp/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--mlflow (None -> file:///tmp/x)" in err[0], err


WANDB = importlib.util.find_spec("wandb") is not None


@pytest.mark.timeout(180)
def test_tiny_study_logs_images_to_tensorboard_trials_to_mlflow_and_analysis_draws_reconstructions(tmp_path):
    """One real study (2 trials, 2 epochs): TensorBoard images in each trial folder beside Tune's
    own events, one MLflow run per trial with its params and metrics, and the report's
    reconstructions of each variant's best trial from its last checkpoint."""
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -e '.[dev]' installs it)")
    import shutil

    from analysis import compare, load_study, plot_reconstructions, write_report

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"   # a local store, no server (MLflow 3 refuses file:// stores)
    rc = main(TINY + ["--variants", "vae,powerlaw_clamp", "--gammas", "1", "--seeds", "0", "--epochs", "2",
                      "--scheduler", "fifo", "--num-cpus", "2", "--storage-path", str(tmp_path / "results"),
                      "--study-name", "wb", "--mlflow", store] + (["--wandb", "offline"] if WANDB else []))
    assert rc == 0
    exp = tmp_path / "results" / "wb"
    trials = sorted(p.parent for p in exp.glob("*/params.json"))
    assert len(trials) == 2
    for d in trials:
        found = images_in(d)
        assert [s for s, _ in found[RECONSTRUCTIONS]] == [1, 2] and [s for s, _ in found[SAMPLES]] == [1, 2]
        assert len(list(d.glob("events.out.tfevents*"))) >= 2   # Tune's own events and the images'

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["wb"])
    assert len(runs) == 2
    assert sorted(runs["params.variant"]) == ["powerlaw_clamp", "vae"]
    assert runs["metrics.val_loss"].notna().all() and (runs["metrics.training_iteration"] == 2).all()
    # The configuration as params, never as metrics; the outcome and the epochs run as tags.
    assert not [c for c in runs.columns if c.startswith("metrics.config")], list(runs.columns)
    assert (runs["params.lr"] == "0.001").all()
    assert (runs["tags.outcome"] == "completed").all() and (runs["tags.epochs"] == "2").all()

    if WANDB:   # W&B, offline: one run per trial, written beside the results, with the trial's metrics
        runs = sorted((exp / "wandb").glob("offline-run-*"))
        assert len(runs) == 2, list((exp / "wandb").glob("*"))
        assert all(list(r.glob("*.wandb")) for r in runs)

    study = load_study(exp)
    c = compare(study)
    fig, reason = plot_reconstructions(study, c, n=4)
    assert reason is None and len(fig.axes) == 3   # the originals, then one row per variant
    report = write_report(study, c, out=tmp_path / "report", data_spectrum=False)
    assert (tmp_path / "report" / "reconstructions.png").exists()
    assert "reconstructions.png" in report.read_text()

    for d in trials:   # no checkpoints: nothing to draw, and the reason why
        for ckpt in d.glob("checkpoint_*"):
            shutil.rmtree(ckpt)
    fig, reason = plot_reconstructions(load_study(exp, warn=False), c, n=4)
    assert fig is None and "no checkpoint" in reason


def test_wandb_mode_is_checked_before_ray(capsys):
    rc = main(["--wandb", "sometimes", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "wandb='sometimes'" in err[0] and "offline" in err[0], err
