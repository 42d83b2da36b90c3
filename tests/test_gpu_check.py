"""A trial given a GPU trains on it or fails in one line (plvae/device.py): the line names the
driver and CUDA versions found against what the installed PyTorch needs. The CPU fallback exists
only behind --allow-cpu-fallback, and the study's summary says when it was used.

This machine has no GPU and no NVIDIA driver, so a local Ray that declares one logical GPU
(run_study.py --num-gpus 1) gives a trial a GPU id it cannot use: exactly a GPU node whose driver is
missing or too old. nvidia-smi is stubbed at the process boundary (a fake executable on PATH).
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plvae import device
from tune.run_study import main

REPO = Path(__file__).resolve().parents[1]

TINY = ["--image-size", "8", "--set", "n_train=128", "--set", "n_val=32", "--hidden-dims", "8,16",
        "--enc-out-dim", "32", "--latent-dims", "4", "--no-dashboard", "--verbose", "0", "--no-images",
        "--variants", "vae", "--seeds", "0", "--epochs", "1", "--scheduler", "fifo", "--max-failures", "0"]


def fake_nvidia_smi(tmp_path: Path, monkeypatch, out: str, rc: int = 0) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "nvidia-smi"
    exe.write_text(f"#!/bin/sh\nprintf '%s\\n' '{out}'\nexit {rc}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


# ---------------------------------------------------------------------------- the one line
def test_the_pinned_torch_needs_cuda_13_and_driver_580():
    pins = (REPO / "docker" / "constraints.txt").read_text()
    assert "torch==2.14.1" in pins and "nvidia-cudnn-cu13" in pins
    assert device.min_driver("13.0") == 580 and device.min_driver("12.4") == 525 and device.min_driver("x") is None
    if torch.version.cuda:   # the venv runs the pinned build
        assert torch.version.cuda.startswith("13.")


@pytest.mark.parametrize("driver, expected", [
    (None, "needs CUDA 13.0, NVIDIA driver >= 580, found no NVIDIA driver"),
    ("535.183.01", "needs CUDA 13.0, NVIDIA driver >= 580, found driver 535.183.01 (too old)"),
    ("580.65.06", "found driver 580.65.06 (new enough) yet torch.cuda.is_available() is False"),
])
def test_the_line_names_driver_and_cuda_found_against_needed(driver, expected):
    line = device.gpu_problem(driver, cuda="13.0", torch_version="2.14.1+cu130", visible="0")
    assert "\n" not in line and expected in line, line
    assert line.startswith("a GPU was assigned (CUDA_VISIBLE_DEVICES=0) but torch 2.14.1+cu130 cannot use it")
    assert line.endswith("--allow-cpu-fallback to train on the CPU anyway")


def test_a_cpu_only_torch_is_named():
    line = device.gpu_problem("580.65.06", cuda=None, torch_version="2.14.1+cpu", visible="0")
    assert "CPU-only build (torch.version.cuda is None)" in line


def test_driver_version_from_nvidia_smi_or_none(tmp_path, monkeypatch):
    monkeypatch.setattr(device, "PROC_DRIVER_VERSION", str(tmp_path / "no-such-file"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))   # no nvidia-smi at all
    assert device.driver_version() is None
    fake_nvidia_smi(tmp_path, monkeypatch, "535.183.01")
    assert device.driver_version() == "535.183.01"


def test_driver_version_from_the_kernel_module_when_nvidia_smi_fails(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, "NVIDIA-SMI has failed", rc=9)
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 2024\n")
    monkeypatch.setattr(device, "PROC_DRIVER_VERSION", str(proc))
    assert device.driver_version() == "550.54.15"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where PyTorch cannot use CUDA")
def test_training_device(tmp_path, monkeypatch):
    fake_nvidia_smi(tmp_path, monkeypatch, "535.183.01")
    assert device.training_device([]) == "cpu"
    assert device.training_device([0], allow_cpu_fallback=True) == "cpu"
    with pytest.raises(device.GPUUnusableError, match=r"found driver 535\.183\.01 \(too old\)"):
        device.training_device([0])


# ---------------------------------------------------------------------------- a real study
def run_study(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """tune/run_study.py as a user runs it, on a local Ray that declares one GPU (--num-gpus 1) on
    this machine without one: the trial is given GPU id 0 and CUDA_VISIBLE_DEVICES=0."""
    return subprocess.run([sys.executable, "tune/run_study.py", "--num-cpus", "1", "--num-gpus", "1",
                           "--gpus-per-trial", "1", "--storage-path", str(tmp_path), *args, *TINY],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where PyTorch cannot use CUDA")
def test_a_trial_given_an_unusable_gpu_errors_in_one_line_and_the_summary_shows_it(tmp_path):
    done = run_study(tmp_path, "--study-name", "nogpu")
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    record = json.loads((tmp_path / "nogpu" / "study.json").read_text())
    assert set(record["trial_outcome"].values()) == {"errored"} and record["cpu_fallback"] == []
    ((trial_id, line),) = record["trial_error"].items()
    assert "GPUUnusableError: a GPU was assigned (CUDA_VISIBLE_DEVICES=0)" in line and "needs CUDA" in line, line
    assert ("found no NVIDIA driver" in line) or ("found driver" in line), line
    assert f"errored (1 trial: {trial_id}): {line}" in done.stdout.splitlines(), done.stdout
    assert "CPU fallback" not in done.stdout
    # It never trained: no epoch was reported.
    assert all(not p.read_text().strip() for p in (tmp_path / "nogpu").glob("*/result.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where PyTorch cannot use CUDA")
def test_the_fallback_trains_on_the_cpu_and_the_summary_says_so(tmp_path):
    done = run_study(tmp_path, "--study-name", "fallback", "--allow-cpu-fallback")
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    record = json.loads((tmp_path / "fallback" / "study.json").read_text())
    assert record["study_config"]["allow_cpu_fallback"] is True
    assert set(record["trial_outcome"].values()) == {"completed"} and record["trial_error"] == {}
    assert record["cpu_fallback"] == list(record["trial_outcome"])
    assert "CPU fallback (--allow-cpu-fallback): 1 trial(s) were given a GPU that PyTorch could not use and " \
           "trained on the CPU" in done.stdout, done.stdout


def test_the_option_is_printed_and_recorded(capsys):
    assert main(["--print-config", "--allow-cpu-fallback"]) == 0
    assert "allow_cpu_fallback: true" in capsys.readouterr().out
    assert main(["--print-config"]) == 0
    assert "allow_cpu_fallback: false" in capsys.readouterr().out
