"""GPU throughput (run on a machine with a CUDA GPU; issue: benchmarks, item 5).

1. Packing: aggregate training images/s of the quick study's model when 1, 2 or 4 trials share
   one GPU (1, 0.5, 0.25 GPU each). Ray's fractional GPUs place trials exactly like this: every
   packed trial sees the same device through CUDA_VISIBLE_DEVICES and nothing else is shared, so
   N concurrent training processes on one device are the same workload without needing Ray on
   the GPU machine. Each process trains through plvae.model.train (Lightning), as a trial does.
   Goal: 4 packed >= 2.5x one.
2. The ResNet-18 VAE (Lightning-Bolts' CIFAR-10 one) on CIFAR-shaped data: training images/s in
   fp32, bf16 autocast, channels_last, and both.
3. The seed's protocol (issue 14): the ResNet-18 VAE at batch 32 (the paper_standin preset's
   trial: 32x32x3 natural patches, 8,192 images, 5 epochs), where kernel launches dominate.
   Trials per GPU-hour with 1, 4 and 8 trials packed on the GPU (each through plvae.model.train,
   as a trial trains), and the training step at batch 32 eager, under torch.compile, and under
   torch.compile with CUDA graphs (mode="reduce-overhead").

    python benchmarks/bench_gpu.py [--json out.json] [--quick] [--sections packing,resnet,paper]
    python benchmarks/bench_gpu.py --device cpu --quick --sections paper   # checks the code runs
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time

import torch


from _common import emit  # noqa: E402  (benchmarks/ is sys.path[0])

def _quick_cfg(n_train: int, epochs: int, seed: int, device: str = "gpu"):
    from plvae.config import TrialConfig

    return TrialConfig(variant="powerlaw_clamp", gamma=0.5, seed=seed, n_train=n_train, n_val=512,
                       hidden_dims=(16, 32), enc_out_dim=64, max_epochs=epochs, accelerator=device,
                       batch_size=64)


def _paper_cfg(n_train: int, epochs: int, seed: int, device: str = "gpu"):
    """The paper_standin preset's trial (tune/presets/paper_standin.yaml): ResNet-18 VAE, batch 32."""
    from plvae.config import paper_config

    return paper_config(dataset="natural_patches", n_train=n_train, n_val=512, seed=seed,
                        max_epochs=epochs, accelerator=device, first_conv=False, maxpool1=False)


CONFIGS = {"quick": _quick_cfg, "paper": _paper_cfg}


def _sync(device: str) -> None:
    if device == "gpu":
        torch.cuda.synchronize()


def _packed_worker(rank, kind, n_train, epochs, share, device, barrier, queue):
    torch.set_num_threads(2)
    if device == "gpu":
        torch.cuda.set_per_process_memory_fraction(share)
    import pytorch_lightning as pl

    from plvae.data import load_data
    from plvae.model import train

    cfg = CONFIGS[kind](n_train, epochs, rank, device)
    data = load_data(cfg)

    class Timer(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            if trainer.current_epoch == 1:  # epoch 0 is warm-up (CUDA context, cuDNN autotune)
                _sync(device)
                self.t0 = time.perf_counter()

        def on_train_end(self, trainer, module):
            _sync(device)
            self.t1 = time.perf_counter()

    barrier.wait()
    timer = Timer()
    train(cfg, data=data, callbacks=[timer])
    queue.put((rank, timer.t0, timer.t1, n_train * (epochs - 1)))


def packing(n_trials: int, n_train: int, epochs: int, kind: str = "quick", device: str = "gpu") -> dict:
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n_trials), ctx.Queue()
    procs = [ctx.Process(target=_packed_worker, args=(r, kind, n_train, epochs, 1.0 / n_trials, device, barrier, queue))
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


def paper_step_throughput(mode: str, device: str, batch: int = 32, steps: int = 50) -> dict:
    """Training steps of the paper's ResNet-18 VAE at batch 32: eager, torch.compile (inductor),
    or torch.compile with CUDA graphs (mode="reduce-overhead"); Adam's fused kernel on the GPU."""
    from plvae.config import paper_config
    from plvae.model import PowerLawVAE

    dev = "cuda" if device == "gpu" else "cpu"
    torch.backends.cudnn.benchmark = dev == "cuda"
    model = PowerLawVAE(paper_config(first_conv=False, maxpool1=False)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=dev == "cuda")
    x = torch.rand(batch, 3, 32, 32, device=dev)

    def loss_fn(x, eps):
        return model.loss_terms(x, eps)["loss"]

    fn = loss_fn if mode == "eager" else torch.compile(loss_fn, mode="reduce-overhead" if mode == "cudagraphs" else None)

    def step():
        loss = fn(x, torch.randn(batch, 256, device=dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t_compile = time.perf_counter()
    for _ in range(5):   # warm-up: compilation and graph capture happen here
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    dt = time.perf_counter() - t0
    return {"mode": mode, "batch": batch, "warmup_s": round(t0 - t_compile, 1), "steps": steps,
            "step_ms": round(1000 * dt / steps, 2), "images_per_s": round(batch * steps / dt, 1)}


def paper(out: dict, device: str, quick: bool) -> None:
    """Section 3: trials per GPU-hour at the seed's protocol, packed; the step at batch 32."""
    n_train, epochs = (256, 2) if quick else (8192, 5)
    trial_images = 8192 * 5   # one paper_standin trial: 8,192 images x 5 epochs
    rows = []
    for n in ((1, 2) if quick else (1, 4, 8)):
        row = packing(n, n_train, epochs, kind="paper", device=device)
        row["trials_per_gpu_hour"] = round(row["images_per_s"] * 3600 / trial_images, 1)
        rows.append(row)
    for row in rows:
        row["speedup_vs_one"] = round(row["images_per_s"] / rows[0]["images_per_s"], 2)
    steps = 3 if quick else 50
    out["paper_protocol"] = {"trial_images": trial_images, "packing": rows,
                             "step_at_batch_32": [paper_step_throughput(m, device, steps=steps)
                                                  for m in ("eager", "compile", "cudagraphs")]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--sections", default="packing,resnet,paper", help="which of packing, resnet, paper to run")
    ap.add_argument("--device", choices=("gpu", "cpu"), default="gpu",
                    help="cpu: only to check the code runs on a machine without CUDA (no figures)")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    if args.device == "gpu" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU (--device cpu --quick only checks the code runs)",
              file=sys.stderr)
        return 2
    n_train, epochs = (2048, 2) if args.quick else (16384, 4)
    out = {"device": torch.cuda.get_device_name(0) if args.device == "gpu" else "cpu (code check, not a figure)",
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M"),
           "command": " ".join(["python"] + sys.argv)}
    if "packing" in sections:
        out["packing"] = [packing(n, n_train, epochs, device=args.device) for n in (1, 2, 4)]
        one = out["packing"][0]["images_per_s"]
        for row in out["packing"]:
            row["speedup_vs_one"] = round(row["images_per_s"] / one, 2)
    if "resnet" in sections and args.device == "gpu":
        out["resnet18_vae"] = [resnet_throughput(b, c, steps=10 if args.quick else 30)
                               for b, c in ((False, False), (True, False), (False, True), (True, True))]
    if "paper" in sections:
        paper(out, args.device, args.quick)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
