"""Engine overhead: the same model, data, batch size and thread count trained per epoch by
(a) a bare PyTorch loop, (b) Lightning (plvae.model.train), (c) a Ray Tune trial (the study's own
trainable, with its per-epoch report and checkpoint, under the environment tune/run_study.py
sets). Goal: (c)/(a) <= 1.10 per epoch.

Every arm does the same work per epoch: one pass of training, one validation pass with the
latent diagnostics; (b) and (c) also measure the initial validation loss once, before epoch 1,
which the per-epoch figures leave out (first epochs are dropped as warm-up).

    python benchmarks/bench_engine.py [--epochs 5] [--n-train 8192] [--threads 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402

from plvae.config import TrialConfig  # noqa: E402
from plvae.data import VAEDataModule, load_data  # noqa: E402
from plvae.model import PowerLawVAE, train  # noqa: E402


from _common import emit  # noqa: E402  (benchmarks/ is sys.path[0])

def bare_loop(cfg: TrialConfig, data) -> list[float]:
    pl.seed_everything(cfg.seed, verbose=False)
    dm = VAEDataModule(cfg, data)
    dm.setup("fit")
    model = PowerLawVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    times = []
    for _ in range(cfg.max_epochs):
        t0 = time.perf_counter()
        model.train()
        for x in dm.train_dataloader():
            eps = torch.randn(x.shape[0], cfg.latent_dim)
            loss = model.loss_terms(x, eps)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        sums, mus = {}, []
        for i, x in enumerate(dm.val_dataloader()):
            model._accumulate(x, i, sums, mus)
        model._summarise(sums, mus)
        times.append(time.perf_counter() - t0)
    return times


class EpochTimer(pl.Callback):
    def __init__(self):
        self.times, self._t0 = [], None

    def on_train_epoch_start(self, trainer, pl_module):
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.times.append(time.perf_counter() - self._t0)


def lightning(cfg: TrialConfig, data) -> list[float]:
    timer = EpochTimer()
    train(cfg, data=data, callbacks=[timer])
    return timer.times


def tune_trial(cfg: TrialConfig, data, threads: int) -> list[float]:
    import ray
    from ray import tune

    from plvae.data import data_key
    from tune.trainable import train_trial

    ray.init(num_cpus=threads, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        fn = tune.with_resources(tune.with_parameters(train_trial, data={data_key(cfg): data}, cpus=threads),
                                 {"cpu": threads})
        with tempfile.TemporaryDirectory() as tmp:
            tuner = tune.Tuner(fn, param_space=cfg.to_dict(),
                               run_config=tune.RunConfig(storage_path=tmp, name="bench", verbose=0))
            result = tuner.fit()[0]
            return list(result.metrics_dataframe["time_this_iter_s"])
    finally:
        ray.shutdown()


def steady(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n-train", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from tune.run_study import PROCESS_ENV

    for key, value in PROCESS_ENV.items():   # what the study's entry point sets for Ray and Tune
        os.environ.setdefault(key, value)
    torch.set_num_threads(args.threads)
    cfg = TrialConfig(variant="powerlaw_clamp", gamma=0.5, n_train=args.n_train, n_val=1024,
                      hidden_dims=(16, 32), enc_out_dim=64, max_epochs=args.epochs, accelerator="cpu")
    data = load_data(cfg)
    arms = {"bare": bare_loop(cfg, data), "lightning": lightning(cfg, data), "tune": tune_trial(cfg, data, args.threads)}
    med = {k: steady(v) for k, v in arms.items()}
    out = {
        "command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
        "machine": f"{platform.node()} {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "epoch_s": {k: [round(t, 3) for t in v] for k, v in arms.items()},
        "median_epoch_s": {k: round(v, 3) for k, v in med.items()},
        "lightning_over_bare": round(med["lightning"] / med["bare"], 3),
        "tune_over_bare": round(med["tune"] / med["bare"], 3),
    }
    print("| arm | median epoch (s, epochs 2..n) | ratio to bare |\n|---|---|---|")
    for k in arms:
        print(f"| {k} | {med[k]:.3f} | {med[k] / med['bare']:.3f} |")
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
