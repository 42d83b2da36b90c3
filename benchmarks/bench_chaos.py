"""Chaos benchmark: trial workers SIGKILLed every ~20 s through a study of a few minutes
(issue 21). Tune retries each killed trial from its last checkpoint (``--max-failures``); the
benchmark counts what happened and what the analysis makes of it:

- kills delivered (a worker PID read from the trial's own result.json, killed only while
  /proc/PID/cmdline names a Tune trial actor: another study's Ray is never hit);
- trials completed, epochs repeated (an epoch recorded twice) and lost (an epoch missing);
- ``analysis.load_study``'s statuses and retries, and ``python -m analysis``'s trials line.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_chaos.py [--trials 8] [--epochs 8]
        [--every 20] [--kills 10] [--n-train 16384] [--json benchmarks/results/chaos.json]

``chaos_study`` is also what tests/test_chaos.py runs (smaller, kills every second).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from plvae import study_files as SF

REPO = Path(__file__).resolve().parents[1]
TRIAL_ACTOR = "ray::ImplicitFunc"   # the process title of a function trainable's actor


def rows(trial_dir: Path) -> list[dict]:
    f = trial_dir / SF.RESULT_FILE
    return SF.read_result_lines(f.read_bytes())[0] if f.exists() else []


def is_trial_worker(pid: int) -> bool:
    try:
        return TRIAL_ACTOR in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def chaos_study(storage: Path, name: str, epochs: int, grid: list, kills: int, every_s: float,
                n_train: int = 2048, timeout_s: float = 600) -> dict:
    """Run a study (``grid``: its sweep options) in a subprocess and SIGKILL up to ``kills`` trial
    workers, at least ``every_s`` apart, each after its trial's first checkpoint and before its
    last epoch. Returns the counts: {"kills": [(trial folder name, epoch reached, pid)], "rc", "output", "seconds"}."""
    argv = [sys.executable, str(REPO / "tune" / "run_study.py"), *grid, "--epochs", str(epochs),
            "--scheduler", "fifo", "--max-failures", str(kills + 2),
            "--num-cpus", "2", "--max-concurrent", "2", "--no-reuse-actors", "--storage-path", str(storage),
            "--study-name", name, "--dataset", "natural_patches", "--image-size", "8", "--set", f"n_train={n_train}",
            "--set", "n_val=64", "--hidden-dims", "8,16", "--enc-out-dim", "32", "--latent-dims", "4",
            "--no-dashboard", "--verbose", "0"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    t0 = time.time()
    log = storage / f"{name}.log"      # a file, not a pipe: the killed workers' tracebacks would fill a pipe
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=storage, env=env, stdout=out, stderr=subprocess.STDOUT)
    exp, killed, last_kill = storage / name, [], 0.0
    try:
        while proc.poll() is None and time.time() - t0 < timeout_s:
            time.sleep(0.2)
            if len(killed) >= kills or time.time() - last_kill < every_s:
                continue
            for d in sorted(p.parent for p in exp.glob(f"*/{SF.PARAMS_FILE}")):
                got = rows(d)
                pid = got[-1].get("pid") if got else None
                if not got or SF.epochs_reported(got) >= epochs - 1 or pid in {k[2] for k in killed}:
                    continue   # no checkpoint yet, or too near its end to be worth a retry, or killed already
                if isinstance(pid, int) and is_trial_worker(pid):
                    os.kill(pid, signal.SIGKILL)
                    killed.append((d.name, SF.epochs_reported(got), pid))
                    last_kill = time.time()
                    break
        proc.wait(timeout=max(1.0, timeout_s - (time.time() - t0)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return {"kills": killed, "rc": proc.returncode, "output": log.read_text(errors="replace"),
            "seconds": time.time() - t0}


def epoch_counts(exp: Path) -> dict:
    """{trial folder name: the training_iterations its result.json records, in file order}."""
    return {p.parent.name: [r[SF.TRAINING_ITERATION] for r in rows(p.parent)]
            for p in exp.glob(f"*/{SF.PARAMS_FILE}")}




def tally(exp: Path, epochs: int) -> dict:
    """Epochs repeated and lost over every trial folder, from the result.json files alone."""
    rec = epoch_counts(exp)
    repeated = sum(n - 1 for its in rec.values() for n in Counter(its).values() if n > 1)
    lost = sum(len(set(range(1, epochs + 1)) - set(its)) for its in rec.values())
    return {"trials": len(rec), "epochs_repeated": repeated, "epochs_lost": lost,
            "trials_all_epochs": sum(set(its) == set(range(1, epochs + 1)) for its in rec.values())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--every", type=float, default=20.0)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--n-train", type=int, default=16384)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    from analysis.__main__ import main as analysis_main
    from analysis.load import load_study

    gammas = ",".join(str(round(0.1 * (i + 1), 2)) for i in range(max(1, args.trials // 2 - 1)))
    grid = ["--variants", "vae,powerlaw_clamp", "--gammas", gammas, "--seeds", "0,1"]   # vae: the baseline
    with tempfile.TemporaryDirectory() as tmp:
        storage = Path(tmp)
        got = chaos_study(storage, "chaos", args.epochs, grid, kills=args.kills, every_s=args.every,
                          n_train=args.n_train, timeout_s=3600)
        exp = storage / "chaos"
        out = {"study_rc": got["rc"], "seconds": round(got["seconds"], 1), "kills_delivered": len(got["kills"]),
               "kills": got["kills"], **tally(exp, args.epochs)}
        study = load_study(exp, warn=False)
        out["analysis_statuses"] = {str(k): int(v) for k, v in study.trials["status"].value_counts().items() if v}
        out["analysis_retries"] = int(study.trials["retries"].sum())
        rc = analysis_main([str(exp), "--out", str(storage / "report"), "--min-seeds", "2", "--no-html",
                            "--no-figures", "--no-data-spectrum"])
        report = (storage / "report" / "report.md").read_text() if rc == 0 else ""
        out["analysis_rc"] = rc
        out["analysis_trials_line"] = next((ln for ln in report.splitlines() if ln.startswith("- trials:")), None)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
