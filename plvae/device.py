"""Can a trial use the GPU it was given? Train on it, or fail in one line that names the driver
and CUDA versions found against what the installed PyTorch needs.

A GPU node whose NVIDIA driver is older than the CUDA build of PyTorch needs (docker/constraints.txt
pins a CUDA 13 build: driver >= 580) makes ``torch.cuda.is_available()`` False, and a trial that
only asked that question trained on the CPU without a word. ``training_device`` refuses that
unless the study allows it (``--allow-cpu-fallback``: the rehearsals, whose GPUs are logical).
No Ray here: the caller passes the GPU ids Ray assigned.
"""
from __future__ import annotations

import os
import subprocess
from typing import Optional, Sequence

import torch

# The oldest Linux driver (major version) each CUDA major release runs on: NVIDIA's CUDA toolkit
# release notes, "CUDA Toolkit and Minimum Required Driver Version" (minor-version compatibility).
MIN_DRIVER_FOR_CUDA = {11: 450, 12: 525, 13: 580}
PROC_DRIVER_VERSION = "/proc/driver/nvidia/version"   # the loaded kernel module, on Linux
FALLBACK_OPTION = "--allow-cpu-fallback"


class GPUUnusableError(RuntimeError):
    """A trial was given a GPU that PyTorch cannot use (and the study does not allow the CPU)."""


def driver_version() -> Optional[str]:
    """The NVIDIA driver version of this machine (e.g. '580.65.06'), or None when there is none:
    nvidia-smi first, then the loaded kernel module's own line (a container without nvidia-smi)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        with open(PROC_DRIVER_VERSION) as f:
            words = f.readline().split()
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 ..."
        return next((w for w in words if w[:1].isdigit() and "." in w), None)
    except OSError:
        return None


def min_driver(cuda: Optional[str]) -> Optional[int]:
    """The oldest driver major version that runs CUDA ``cuda`` (e.g. '13.0' -> 580)."""
    try:
        return MIN_DRIVER_FOR_CUDA.get(int(str(cuda).split(".")[0]))
    except ValueError:
        return None


def gpu_problem(driver: Optional[str] = None, cuda: Optional[str] = None, torch_version: Optional[str] = None,
                visible: Optional[str] = None) -> str:
    """The one line: what was found against what this PyTorch needs, and what to do."""
    cuda = torch.version.cuda if cuda is None and torch_version is None else cuda
    torch_version = torch_version or torch.__version__
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset") if visible is None else visible
    head = f"a GPU was assigned (CUDA_VISIBLE_DEVICES={visible}) but torch {torch_version} cannot use it: "
    tail = f"; or {FALLBACK_OPTION} to train on the CPU anyway"
    if cuda is None:
        return head + "it is a CPU-only build (torch.version.cuda is None); install the CUDA build " \
                      "(docker/constraints.txt)" + tail
    need = min_driver(cuda)
    needs = f"it needs CUDA {cuda}, NVIDIA driver >= {need}" if need else f"it needs CUDA {cuda}"
    if driver is None:
        return (head + needs + ", found no NVIDIA driver (no nvidia-smi, no " + PROC_DRIVER_VERSION + "); "
                "run on a GPU image with the driver (a Deep Learning Base GPU AMI) and give the container "
                "the GPU (docker --gpus all)" + tail)
    try:
        old = need is not None and int(driver.split(".")[0]) < need
    except ValueError:
        old = False
    if old:
        return (head + needs + f", found driver {driver} (too old); use an AMI whose driver is >= {need} "
                "(nvidia-smi shows it; cluster.yaml, ImageId)" + tail)
    return (head + needs + f", found driver {driver} (new enough) yet torch.cuda.is_available() is False; "
            "check that the container sees the device (docker --gpus all, nvidia-smi inside it)" + tail)


def training_device(gpu_ids: Sequence, allow_cpu_fallback: bool = False) -> str:
    """'gpu' or 'cpu' for a trial that Ray gave ``gpu_ids``: no GPU given is the CPU; a GPU given
    is the GPU when PyTorch can use it, else GPUUnusableError (one line), or the CPU when allowed."""
    if not gpu_ids:
        return "cpu"
    if torch.cuda.is_available():
        return "gpu"
    if allow_cpu_fallback:
        return "cpu"
    raise GPUUnusableError(gpu_problem(driver_version()))
