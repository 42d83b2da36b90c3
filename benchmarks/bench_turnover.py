"""Trial turnover: in a study of many short trials, the gap between one trial ending and the next
starting on the slot it freed, with Tune's actor reuse on (the default) and off
(--no-reuse-actors), measured in one process, one Ray, arms interleaved (on, off, on, off, ...).
Goal: median gap <= 1 s.

Each arm is a real study through the study engine (tune.cli.config_from_args, StudyRecord.claim
and study_runner.run, the code behind ``python tune/run_study.py``): FIFO, so every trial runs
all its epochs, tiny data (sklearn's 8x8 digits, latent 4) so the turnover dominates.

How the times are taken, and why not from result.json: result.json's ``timestamp`` has 1 s
resolution, too coarse for a 1 s goal. Instead a public ``ray.tune.Callback`` on the driver, added
through Ray's RAY_TUNE_CALLBACKS variable (benchmarks/_common.py), notes time.time() when each
result arrives; the worker's ``time_this_iter_s`` (a float, measured on the worker from the
moment Tune asked the trainable for its first result) is subtracted from the first result's
arrival to give the moment the trial's function started. Per trial:

- ``end``:            arrival of its last result (its last epoch is done; the slot frees after).
- ``fn_start``:       first result's arrival - its time_this_iter_s: the trial's function starts.
- ``train_start``:    first result's arrival - one steady epoch (the median time_this_iter_s of
                      epochs >= 2 in the arm): when its first epoch could begin, i.e. after the
                      imports inside the trial (Lightning), the data fetch from the object store,
                      model and Trainer construction and the initial validation pass.

Gaps, for each trial that follows another on a slot (slots matched first-freed, first-reused;
with reuse on the pid confirms it): ``to_fn_start`` = fn_start(B) - end(A) (Tune and Ray: stop or
reset, a new actor, its imports) and ``to_training`` = train_start(B) - end(A) (the slot's real
idle time; the goal is judged on this one). The figures include the driver-to-worker latency of
one result (milliseconds) and, for ``to_training``, the initial validation pass (a science
measurement, a fraction of an epoch on this data) - both overstate the gap, never understate it.

    .venv/bin/python benchmarks/bench_turnover.py [--trials 24] [--epochs 2] [--repeats 2]
        [--json benchmarks/results/turnover.json]
    .venv/bin/python benchmarks/bench_turnover.py --trials 4 --repeats 1 --no-profile   # smoke run
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import cpu_model, run_timed_study, study_environment  # noqa: E402  (benchmarks/ is sys.path[0])


def study_args(args, storage: str, name: str, reuse: bool) -> list[str]:
    variants = ["vae", "powerlaw_clamp"]
    seeds = -(-args.trials // len(variants))
    return ["--dataset", "digits", "--image-size", "8", "--channels", "1", "--latent-dims", "4",
            "--net", "conv", "--hidden-dims", "8,16", "--enc-out-dim", "32", "--n-train", str(args.n_train),
            "--n-val", "128", "--batch-size", "64", "--variants", ",".join(variants), "--gammas", "0.5",
            "--seeds", f"0:{seeds}:1", "--epochs", str(args.epochs), "--scheduler", "fifo",
            "--cpus-per-trial", "1", "--storage-path", storage, "--study-name", name, "--no-dashboard",
            "--verbose", "0"] + ([] if reuse else ["--no-reuse-actors"])


def run_arm(args, storage: str, name: str, reuse: bool) -> dict:
    run = run_timed_study(study_args(args, storage, name, reuse))
    trials = {}
    for kind, tid, t, p in run["events"]:
        tr = trials.setdefault(tid, {"results": []})
        if kind == "result":
            r = p["result"]
            tr["results"].append((t, {"iter": r.get("training_iteration"), "time_this_iter_s": r.get("time_this_iter_s"),
                                      "pid": r.get("pid")}))
        else:
            tr[kind] = t
    return {"rc": run["rc"], "wall_s": run["wall_s"], "t_begin": run["t_begin"], "t_end": run["t_end"],
            "trials": trials, "n_trials": len(trials)}


def gaps_of(arm: dict, slots: int) -> dict:
    """Per-trial times and the gaps of every trial that reused a slot (first freed, first reused)."""
    trials = []
    for tid, tr in arm["trials"].items():
        rs = sorted(tr["results"], key=lambda r: r[1]["iter"])
        if not rs:
            continue
        trials.append({"id": tid, "pid": rs[0][1]["pid"], "first": rs[0][0], "end": rs[-1][0],
                       "iter1": rs[0][1]["time_this_iter_s"],
                       "later_iters": [r[1]["time_this_iter_s"] for r in rs[1:]]})
    later = [x for t in trials for x in t["later_iters"]]
    steady = statistics.median(later) if later else 0.0
    for t in trials:
        t["fn_start"] = t["first"] - t["iter1"]
        t["train_start"] = t["first"] - steady
        t["in_trial_startup"] = t["iter1"] - steady
    trials.sort(key=lambda t: t["fn_start"])
    freed, to_fn, to_train, same_pid = [], [], [], 0
    for i, t in enumerate(trials):
        # slots freed before this trial started, earliest first; the first `slots` trials start fresh
        if i >= slots:
            ended = sorted((x for x in trials[:i] if x["end"] <= t["fn_start"] and x["id"] not in freed),
                           key=lambda x: x["end"])
            if ended:
                a = ended[0]
                freed.append(a["id"])
                to_fn.append(t["fn_start"] - a["end"])
                to_train.append(t["train_start"] - a["end"])
                same_pid += a["pid"] == t["pid"]
    startup = [t["in_trial_startup"] for t in trials]
    done = [arm["trials"][t["id"]]["complete"] - t["end"] for t in trials if "complete" in arm["trials"][t["id"]]]
    return {"until_first_trial_s": trials[0]["fn_start"] - arm["t_begin"] if trials else None,
            "after_last_trial_s": arm["t_end"] - max(t["end"] for t in trials) if trials else None,
            "last_result_to_complete_s": done,
            "to_fn_start": to_fn, "to_training": to_train, "pairs_same_pid": same_pid,
            "steady_epoch_s": steady, "in_trial_startup_s": startup,
            "workers": len({t["pid"] for t in trials})}


def q(xs: list, p: float) -> float:
    """The p-quantile (linear interpolation, numpy's default)."""
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def import_profile() -> dict:
    """What a fresh worker process pays before its first epoch, each step timed in a new
    interpreter (median of 3): the cost --no-reuse-actors pays per trial, reuse once per worker."""
    code = ("import time,json;t=time.perf_counter();import torch;a=time.perf_counter();"
            "import ray.tune;b=time.perf_counter();import tune.trainable;c=time.perf_counter();"
            "import pytorch_lightning;d=time.perf_counter();import plvae.model, plvae.data, tune.lightning_callback;"
            "e=time.perf_counter();from plvae.config import TrialConfig;from plvae.model import make_trainer;"
            "cfg=TrialConfig(dataset='digits',image_size=8,channels=1,latent_dim=4,accelerator='cpu');"
            "f=time.perf_counter();make_trainer(cfg);g=time.perf_counter();"
            "print(json.dumps({'import torch':a-t,'import ray.tune':b-a,'import tune.trainable (rest)':c-b,"
            "'import pytorch_lightning':d-c,'import plvae.model/data + callback':e-d,'Trainer()':g-f}))")
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                             env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        if out.returncode == 0:
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]} if runs else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=24, help="trials per study (2 variants x seeds)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per trial (>= 2 to time a steady epoch)")
    ap.add_argument("--n-train", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2, help="studies per arm, arms interleaved")
    ap.add_argument("--num-cpus", type=int, default=2, help="the local Ray's CPUs = concurrent trials")
    ap.add_argument("--no-profile", action="store_true", help="skip the fresh-process import profile")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (a steady epoch is timed from epochs 2..n)")

    for key, value in study_environment().items():   # the entry point's settings, and the clock
        os.environ.setdefault(key, value)
    import ray

    storage = tempfile.mkdtemp(prefix="bench_turnover_")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    arms = {"reuse_actors": [], "no_reuse_actors": []}
    t_all = time.perf_counter()
    try:
        for rep in range(args.repeats):
            for arm, reuse in (("reuse_actors", True), ("no_reuse_actors", False)):
                res = run_arm(args, storage, f"{arm}_{rep}", reuse)
                res.update(gaps_of(res, args.num_cpus))
                arms[arm].append(res)
                print(f"rep {rep} {arm}: rc {res['rc']}, {res['n_trials']} trials in {res['wall_s']:.1f} s, "
                      f"median gap to training {q(res['to_training'], 0.5):.2f} s", file=sys.stderr)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    total = time.perf_counter() - t_all

    summary = {}
    for arm, runs in arms.items():
        fn = [g for r in runs for g in r["to_fn_start"]]
        tr = [g for r in runs for g in r["to_training"]]
        st = [s for r in runs for s in r["in_trial_startup_s"]]
        summary[arm] = {
            "gaps": len(tr),
            "median_gap_to_training_s": round(q(tr, 0.5), 3), "p90_gap_to_training_s": round(q(tr, 0.9), 3),
            "median_gap_to_fn_start_s": round(q(fn, 0.5), 3), "p90_gap_to_fn_start_s": round(q(fn, 0.9), 3),
            "median_in_trial_startup_s": round(q(st, 0.5), 3),
            "median_last_result_to_complete_s": round(q([d for r in runs for d in r["last_result_to_complete_s"]], 0.5), 3),
            "until_first_trial_s": [round(r["until_first_trial_s"], 1) for r in runs],
            "after_last_trial_s": [round(r["after_last_trial_s"], 1) for r in runs],
            "steady_epoch_s": round(statistics.median(r["steady_epoch_s"] for r in runs), 3),
            "study_wall_s": [round(r["wall_s"], 1) for r in runs],
            "workers_per_study": [r["workers"] for r in runs],
            "pairs_same_pid": sum(r["pairs_same_pid"] for r in runs),
            "exit_status": [r["rc"] for r in runs],
            "gaps_to_training_s": [round(g, 3) for g in tr],
        }
    on, off = summary["reuse_actors"], summary["no_reuse_actors"]
    load = os.getloadavg()
    out = {
        "command": "python " + " ".join(["benchmarks/bench_turnover.py"] + (argv if argv is not None else sys.argv[1:])),
        "study_options": study_args(args, "<tmp>", "<arm>_<rep>", True),
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs ({cpu_model()}), python {platform.python_version()}, "
                   f"ray {ray.__version__}",
        "load_average_at_end": [round(x, 2) for x in load],
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "goal": "median gap_to_training <= 1 s (reuse_actors on)",
        "goal_met": on["median_gap_to_training_s"] <= 1.0,
        "no_reuse_over_reuse_median_gap": round(off["median_gap_to_training_s"] / on["median_gap_to_training_s"], 2)
        if on["median_gap_to_training_s"] > 0 else None,
        "no_reuse_over_reuse_study_wall": round(sum(off["study_wall_s"]) / sum(on["study_wall_s"]), 2),
        "arms": summary,
        "fresh_process_profile_s": {} if args.no_profile else import_profile(),
        "benchmark_wall_s": round(total, 1),
    }
    print("| arm | gaps | median gap to training (s) | p90 (s) | median gap to fn start (s) | p90 (s) "
          "| in-trial startup (s) | steady epoch (s) | study wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for arm, s in summary.items():
        print(f"| {arm} | {s['gaps']} | {s['median_gap_to_training_s']:.3f} | {s['p90_gap_to_training_s']:.3f} | "
              f"{s['median_gap_to_fn_start_s']:.3f} | {s['p90_gap_to_fn_start_s']:.3f} | "
              f"{s['median_in_trial_startup_s']:.3f} | {s['steady_epoch_s']:.3f} | "
              f"{' + '.join(f'{w:.0f}' for w in s['study_wall_s'])} |")
    if out["fresh_process_profile_s"]:
        print("\nfresh worker process, before its first epoch (s): " +
              ", ".join(f"{k} {v:.2f}" for k, v in out["fresh_process_profile_s"].items()))
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if all(r["rc"] == 0 for runs in arms.values() for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
