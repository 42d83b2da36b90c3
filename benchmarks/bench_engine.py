"""Engine overhead: the same model, data, batch size and thread count trained per epoch by
(a) a bare PyTorch loop, (b) Lightning (plvae.model.train), (c) a Ray Tune trial (the study's own
trainable, with its per-epoch report and checkpoint, under the environment tune/run_study.py
sets). Goal: (c)/(a) <= 1.10 per epoch.

Every arm does the same work per epoch: one pass of training, one validation pass with the
latent diagnostics; (b) and (c) also measure the initial validation loss once, before epoch 1,
which the per-epoch figures leave out (first epochs are dropped as warm-up).

The machine's speed drifts by 10-20% over tens of seconds (shared hosts), so the arms run in
rounds - every arm once per round, the order rotated each round - and each round gives its own
ratios to the bare loop. The result is the median of the rounds' ratios, with their min and max.
One Ray serves every round, as one Ray serves a whole study.

    python benchmarks/bench_engine.py [--epochs 5] [--rounds 3] [--arms bare,lightning,tune]
                                      [--n-train 8192] [--threads 1] [--json out.json]
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

from plvae import metrics as M  # noqa: E402
from plvae.config import TrialConfig  # noqa: E402
from plvae.data import VAEDataModule, load_data  # noqa: E402
from plvae.model import PowerLawVAE, train  # noqa: E402


from _common import emit  # noqa: E402  (benchmarks/ is sys.path[0])

def bare_loop(cfg: TrialConfig, data, val_times: list | None = None) -> list[float]:
    """Per-epoch wall times; val_times, when given, gets each epoch's validation pass time."""
    pl.seed_everything(cfg.seed, verbose=False)
    dm = VAEDataModule(cfg, data)
    dm.setup("fit")
    model = PowerLawVAE(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    times = []
    for _ in range(cfg.max_epochs):
        t0 = time.perf_counter()
        model.train()
        sums, n = {}, 0
        for x in dm.train_dataloader():
            eps = torch.randn(x.shape[0], cfg.latent_dim)
            terms = model.loss_terms(x, eps)
            loss = terms[M.LOSS]
            if not torch.isfinite(loss):   # the same divergence check as the LightningModule
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for name in (M.LOSS, M.RECON, M.DIVERGENCE):   # the epoch's train metrics, as Lightning logs them
                term = terms[name].detach() * x.shape[0]
                sums[name] = sums[name] + term if name in sums else term
            n += x.shape[0]
        {name: float(total) / n for name, total in sums.items()}
        t_val = time.perf_counter()
        model.eval()
        model.evaluate(dm.val_dataloader())
        times.append(time.perf_counter() - t0)
        if val_times is not None:
            val_times.append(time.perf_counter() - t_val)
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


def _tune_fit(trainable, cfg: TrialConfig) -> list[float]:
    from ray import tune

    with tempfile.TemporaryDirectory() as tmp:
        tuner = tune.Tuner(trainable, param_space=cfg.to_dict(),
                           run_config=tune.RunConfig(storage_path=tmp, name="bench", verbose=0))
        result = tuner.fit()[0]
        if result.error:
            raise result.error
        return list(result.metrics_dataframe["time_this_iter_s"])


def tune_trial(cfg: TrialConfig, data, threads: int, images: bool = True) -> list[float]:
    """The study's own trainable (per-epoch report with a checkpoint, images unless told not)."""
    from ray import tune

    from plvae.data import data_key
    from tune.trainable import train_trial

    fn = tune.with_parameters(train_trial, data={data_key(cfg): data}, cpus=threads, images=images)
    return _tune_fit(tune.with_resources(fn, {"cpu": threads}), cfg)


def _report_only(config, data=None, threads=1):
    """Diagnostic trainable: the same Lightning run reporting each epoch's metrics to Tune with no
    checkpoint and no images, to split the Tune arm's cost into Tune itself and what a trial adds."""
    import pytorch_lightning as pl
    import torch
    from ray import tune

    from plvae.data import data_key
    from tune.reporting import REPORTED_METRICS

    class Report(pl.Callback):
        def on_train_epoch_end(self, trainer, module):
            m = trainer.callback_metrics
            tune.report({k: float(m[k]) for k in REPORTED_METRICS if k in m})

    torch.set_num_threads(threads)
    cfg = TrialConfig.from_dict(config)
    train(cfg, data=data[data_key(cfg)], callbacks=[Report()])


def tune_report_only(cfg: TrialConfig, data, threads: int) -> list[float]:
    from ray import tune

    from plvae.data import data_key

    fn = tune.with_parameters(_report_only, data={data_key(cfg): data}, threads=threads)
    return _tune_fit(tune.with_resources(fn, {"cpu": threads}), cfg)


ARMS = {
    "bare": lambda cfg, data, threads: bare_loop(cfg, data),
    "lightning": lambda cfg, data, threads: lightning(cfg, data),
    "tune": tune_trial,
    # diagnostics (--arms): where a Tune trial's extra time goes
    "tune_no_images": lambda cfg, data, threads: tune_trial(cfg, data, threads, images=False),
    "tune_report_only": tune_report_only,
}


def steady(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every arm; the arms' order rotates each round")
    ap.add_argument("--warmup", type=int, default=1,
                    help="rounds run first and left out: Ray's daemons start up in its first tens of seconds")
    ap.add_argument("--arms", default="bare,lightning,tune",
                    help=f"comma-separated, from {', '.join(ARMS)}; bare is always run (the ratios' base)")
    ap.add_argument("--n-train", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    arms = ["bare"] + [a for a in args.arms.split(",") if a and a != "bare"]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms {','.join(unknown)} is invalid; allowed: {', '.join(ARMS)}")
    from tune.run_study import PROCESS_ENV

    for key, value in PROCESS_ENV.items():   # what the study's entry point sets for Ray and Tune
        os.environ.setdefault(key, value)
    torch.set_num_threads(args.threads)
    cfg = TrialConfig(variant="powerlaw_clamp", gamma=0.5, n_train=args.n_train, n_val=1024,
                      hidden_dims=(16, 32), enc_out_dim=64, max_epochs=args.epochs, accelerator="cpu")
    data = load_data(cfg)
    uses_ray = any(a.startswith("tune") for a in arms)
    if uses_ray:   # one Ray for every round, as one study keeps one Ray
        import ray

        ray.init(num_cpus=args.threads, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    rounds, warmup = [], []
    try:
        for r in range(args.warmup + args.rounds):
            order = arms[r % len(arms):] + arms[:r % len(arms)]
            times = {a: ARMS[a](cfg, data, args.threads) for a in order}
            med = {a: steady(t) for a, t in times.items()}
            (rounds if r >= args.warmup else warmup).append({"order": order, "epoch_s": {a: [round(x, 3) for x in times[a]] for a in arms},
                           "median_epoch_s": {a: round(med[a], 3) for a in arms},
                           "over_bare": {a: round(med[a] / med["bare"], 3) for a in arms if a != "bare"}})
            print(("warm-up " if r < args.warmup else "") + f"round {r + 1}: " + ", ".join(f"{a} {med[a]:.3f} s" for a in arms), file=sys.stderr)
    finally:
        if uses_ray:
            ray.shutdown()
    ratios = {a: summary([rd["over_bare"][a] for rd in rounds]) for a in arms if a != "bare"}
    out = {
        "command": "python " + " ".join([sys.argv[0]] + (argv or sys.argv[1:])),
        "machine": f"{platform.node()} {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "warmup_rounds": warmup,
        "rounds": rounds,
        "over_bare": ratios,
    }
    print("| arm | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " | median [min, max] |")
    print("|---|" + "---:|" * (len(rounds) + 1))
    for a in arms[1:]:
        cells = " | ".join(f"{rd['over_bare'][a]:.3f}" for rd in rounds)
        q = ratios[a]
        print(f"| {a} / bare | {cells} | **{q['median']:.3f}** [{q['min']:.3f}, {q['max']:.3f}] |")
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
