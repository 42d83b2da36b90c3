"""Cost of the TensorBoard images (plvae.callbacks.ReconstructionImages) on the quick preset's
trial size: one trial (the baseline variant, the preset's fixed trial fields, 1 torch thread as in a
study) trained with and without the callback, alternating, ``--runs`` times each; reports each
pair's wall-clock ratio (with / without) and the median. The budget for engine overhead is a few
percent. The callback writes into a temporary folder, as into a Tune trial's folder.

    .venv/bin/python benchmarks/bench_images.py [--runs 3] [--epochs 4]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from plvae.callbacks import ReconstructionImages
from plvae.config import TrialConfig
from plvae.data import load_data
from plvae.model import train
from tune.cli import load_preset


class TimedImages(ReconstructionImages):
    """The callback, with the time spent in it summed (the direct cost, free of run-to-run noise)."""

    spent = 0.0

    def on_validation_epoch_end(self, trainer, pl_module):
        t0 = time.perf_counter()
        super().on_validation_epoch_end(trainer, pl_module)
        TimedImages.spent += time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's max_epochs")
    args = ap.parse_args()
    torch.set_num_threads(1)
    preset = load_preset("quick")
    fields = {**preset.trial, "variant": "vae", "latent_dim": preset.latent_dims[0], "lr": preset.lrs[0]}
    if args.epochs:
        fields["max_epochs"] = args.epochs
    cfg = TrialConfig.from_dict(fields)
    data = load_data(cfg)

    def once(images: bool) -> float:
        with tempfile.TemporaryDirectory() as d:
            callbacks = [TimedImages(log_dir=d)] if images else []
            t0 = time.perf_counter()
            train(cfg, data=data, callbacks=callbacks)
            return time.perf_counter() - t0

    once(True)   # warm-up: imports, first allocations
    ratios = []
    for i in range(args.runs):
        TimedImages.spent = 0.0
        without, with_ = once(False), once(True)
        ratios.append(with_ / without)
        print(f"run {i + 1}: without {without:.2f} s, with {with_:.2f} s, ratio {ratios[-1]:.3f}; in the callback "
              f"{TimedImages.spent * 1e3:.0f} ms ({TimedImages.spent / without:.1%} of the run)")
    print(f"median ratio (with / without images), {cfg.max_epochs} epochs of {cfg.n_train} images: "
          f"{statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
