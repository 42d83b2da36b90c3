"""GPU throughput (run on a machine with a CUDA GPU; issue: benchmarks, item 5).

1. Packing: aggregate training images/s of the quick study's model when 1, 2 or 4 trials share
   one GPU (1, 0.5, 0.25 GPU each). Ray's fractional GPUs place trials exactly like this: every
   packed trial sees the same device through CUDA_VISIBLE_DEVICES and nothing else is shared, so
   N concurrent training processes on one device are the same workload without needing Ray on
   the GPU machine. Each process trains through plvae.model.train (Lightning), as a trial does.
   Goal: 4 packed >= 2.5x one.
2. The ResNet-18 VAE (Lightning-Bolts' CIFAR-10 one) on CIFAR-shaped data: training images/s in
   fp32, bf16 autocast, channels_last, and both.

    python benchmarks/bench_gpu.py [--json out.json] [--quick]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import torch


from _common import emit  # noqa: E402  (benchmarks/ is sys.path[0])

def _quick_cfg(n_train: int, epochs: int, seed: int):
    from plvae.config import TrialConfig

    return TrialConfig(variant="powerlaw_clamp", gamma=0.5, seed=seed, n_train=n_train, n_val=512,
                       hidden_dims=(16, 32), enc_out_dim=64, max_epochs=epochs, accelerator="gpu",
                       batch_size=64)


def _packed_worker(rank, n_train, epochs, share, barrier, queue):
    torch.set_num_threads(2)
    torch.cuda.set_per_process_memory_fraction(share)
    import pytorch_lightning as pl

    from plvae.data import load_data
    from plvae.model import train

    cfg = _quick_cfg(n_train, epochs, rank)
    data = load_data(cfg)

    class Timer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:  # epoch 0 is warm-up (CUDA context, cuDNN autotune)
                torch.cuda.synchronize()
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, module):
            torch.cuda.synchronize()
            self.t1 = time.perf_counter()

    barrier.wait()
    timer = Timer()
    train(cfg, data=data, callbacks=[timer])
    queue.put((rank, timer.t0, timer.t1, n_train * (epochs - 1)))


def packing(n_trials: int, n_train: int, epochs: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n_trials), ctx.Queue()
    procs = [ctx.Process(target=_packed_worker, args=(r, n_train, epochs, 1.0 / n_trials, barrier, queue))
             for r in range(n_trials)]
    for p in procs:
        p.start()
    rows = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    start, end = min(r[1] for r in rows), max(r[2] for r in rows)
    images = sum(r[3] for r in rows)
    return {"trials": n_trials, "gpu_per_trial": 1.0 / n_trials, "images": images,
            "wall_s": round(end - start, 3), "images_per_s": round(images / (end - start), 1)}


def resnet_throughput(bf16: bool, channels_last: bool, batch: int = 256, steps: int = 30) -> dict:
    from plvae.config import paper_config
    from plvae.model import PowerLawVAE

    torch.backends.cudnn.benchmark = True
    model = PowerLawVAE(paper_config()).cuda()
    x = torch.rand(batch, 3, 32, 32, device="cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss_terms(x, torch.randn(batch, 256, device="cuda"))["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"bf16_autocast": bf16, "channels_last": channels_last, "batch": batch,
            "images_per_s": round(batch * steps / dt, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    n_train, epochs = (2048, 2) if args.quick else (16384, 4)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(["python"] + sys.argv)}
    out["packing"] = [packing(n, n_train, epochs) for n in (1, 2, 4)]
    one = out["packing"][0]["images_per_s"]
    for row in out["packing"]:
        row["speedup_vs_one"] = round(row["images_per_s"] / one, 2)
    out["resnet18_vae"] = [resnet_throughput(b, c, steps=10 if args.quick else 30)
                           for b, c in ((False, False), (True, False), (False, True), (True, True))]
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
