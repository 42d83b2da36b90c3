"""Sizing a tuned-against-tuned study (issue 18, part 3): how long a trial's epoch takes, alone and
two at a time, and how many epochs the baseline needs before its validation loss has flattened.

``epoch`` mode: the quick preset's trial (natural_patches 16x16 grey, the small conv net, n_train
2048, batch 64: 32 Adam steps per epoch) at each latent size, one trial process at a time and then
two at once (one torch thread each, as a study runs them on a 2-core machine). On a shared machine
the absolute seconds drift; the 2-vs-1 ratio of the same run is the number to size with.

``flatten`` mode: the baseline (``vae``) at each learning rate for --epochs epochs, its val_loss
after every epoch; for every budget E the relative change of val_loss over the last 20% of E's
epochs, (v[0.8 E] - v[E]) / v[E]. A budget where that is under 2% (issue 18's criterion) is long
enough for the tuned baseline to have flattened.

    python benchmarks/bench_budget.py epoch [--latents 16,64] [--epochs 6] [--json out.json]
    python benchmarks/bench_budget.py flatten [--lrs 1e-3,3e-3,1e-2] [--latents 16] [--epochs 40]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time

import pytorch_lightning as pl

from plvae import metrics as M
from plvae.config import TrialConfig

QUICK_TRIAL = dict(dataset="natural_patches", image_size=16, channels=1, n_train=2048, n_val=512, net="conv",
                   hidden_dims=(16, 32), enc_out_dim=64, batch_size=64)


class EpochLog(pl.Callback):
    """val_loss and wall time at the end of every training epoch (after its validation)."""

    def __init__(self):
        self.val, self.times = [], []

    def on_train_epoch_end(self, trainer, pl_module):
        self.val.append(float(trainer.callback_metrics.get(M.VAL_LOSS, math.nan)))
        self.times.append(time.perf_counter())


def run_one(latent: int, lr: float, epochs: int, seed: int = 0) -> dict:
    import torch

    from plvae.model import train

    torch.set_num_threads(1)
    cfg = TrialConfig(**QUICK_TRIAL, variant="vae", latent_dim=latent, lr=lr, max_epochs=epochs, seed=seed)
    log = EpochLog()
    t0 = time.perf_counter()
    train(cfg, callbacks=[log])
    gaps = [b - a for a, b in zip([t0] + log.times, log.times)]
    # The first epoch carries the initial validation pass and start-up: left out of the per-epoch time.
    return {"latent": latent, "lr": lr, "val_loss": log.val, "s_per_epoch": sum(gaps[1:]) / max(len(gaps) - 1, 1)}


def epoch_mode(args) -> dict:
    out = {}
    for latent in args.latents:
        child = [sys.executable, __file__, "_one", str(latent), "1e-3", str(args.epochs)]
        timings = {}
        for k in (1, 2):
            procs = [subprocess.Popen(child, stdout=subprocess.PIPE, text=True) for _ in range(k)]
            runs = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
            timings[k] = [r["s_per_epoch"] for r in runs]
        out[f"latent {latent}"] = {"alone_s": timings[1][0], "two_at_once_s": timings[2],
                                   "ratio": sum(timings[2]) / 2 / timings[1][0]}
    return out


def flatten_changes(val: list[float], smooth: bool = False) -> dict:
    """Budget E -> relative change of val_loss over its last 20% of epochs: of the epoch's own value,
    or (``smooth``) of the best value so far, which single-epoch jumps do not move."""
    out = {}
    at = (lambda e: min(val[:e])) if smooth else (lambda e: val[e - 1])
    for e in range(5, len(val) + 1):
        out[e] = (at(int(round(0.8 * e))) - at(e)) / abs(at(e))
    return out


def flatten_mode(args) -> dict:
    out = {}
    for latent in args.latents:
        for lr in args.lrs:
            r = run_one(latent, lr, args.epochs)
            ch = flatten_changes(r["val_loss"])
            first_ok = next((e for e, c in ch.items() if abs(c) < 0.02 and all(abs(ch[f]) < 0.02 for f in ch if f >= e)),
                            None)
            out[f"latent {latent} lr {lr:g}"] = {
                "val_loss": [round(v, 5) for v in r["val_loss"]],
                "change_last_20pct": {e: round(c, 4) for e, c in ch.items() if e % 5 == 0 or e == len(r["val_loss"])},
                "change_last_20pct_best_so_far": {e: round(c, 4) for e, c in flatten_changes(r["val_loss"], True).items()
                                                  if e % 5 == 0 or e == len(r["val_loss"])},
                "first_budget_flat_onward": first_ok, "s_per_epoch": round(r["s_per_epoch"], 3)}
            print(f"latent {latent} lr {lr:g}", json.dumps(out[f"latent {latent} lr {lr:g}"]), flush=True)
    return out


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_one":
        print(json.dumps(run_one(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("epoch", "flatten"))
    p.add_argument("--latents", default="16,64")
    p.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    args.latents = [int(x) for x in args.latents.split(",")]
    args.lrs = [float(x) for x in args.lrs.split(",")]
    args.epochs = args.epochs or (6 if args.mode == "epoch" else 40)
    out = epoch_mode(args) if args.mode == "epoch" else flatten_mode(args)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
