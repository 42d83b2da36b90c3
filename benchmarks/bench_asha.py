"""Study efficiency: ASHA against FIFO on the same grid (the quick preset's, same seeds) - the
share of trial-epochs ASHA needs to find a configuration within 2% of FIFO's best final
validation metric. Goal: <= 0.5.

Both studies run through the study engine (tune.study.config_from_args and tune.study_runner.run,
the code behind ``python tune/run_study.py``), one after the other in one process and one Ray;
only ``--scheduler`` differs. Trial-epochs = the sum over trials of the training_iteration each
reached. Figures:

- ``ratio_total``: ASHA's trial-epochs / FIFO's, counted only when ASHA's best final value (each
  trial's last report, as the study summary ranks them) is within 2% of FIFO's best. The goal.
- ``ratio_to_find``: the trial-epochs ASHA had spent (results in the order the driver received
  them) when a trial first reported a value within 2% of FIFO's best, over FIFO's total - what
  an anytime user would pay.

Trials are seeded and deterministic, so a trial's curve does not depend on the scheduler: FIFO's
curves also let us replay ASHA offline for other grace periods and reduction factors, with Ray's
own ``_Bracket`` (the rung logic ASHAScheduler uses) and two slots filled in grid order, each
epoch taking the time FIFO measured for it. The preset's setting replayed next to its real run
shows how close the replay is; the table of replays is what ``quick.yaml`` should be tuned by.

    .venv/bin/python benchmarks/bench_asha.py [--preset quick] [--json benchmarks/results/asha.json]
        [-- extra run_study options, e.g. --variants vae,powerlaw_clamp --epochs 8]
"""
from __future__ import annotations

import argparse
import datetime as _dt
import heapq
import io
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import ray  # noqa: E402
from ray.tune.schedulers.async_hyperband import _Bracket  # noqa: E402

from plvae import metrics as M  # noqa: E402
from tune import study_runner  # noqa: E402
from tune.study import config_from_args  # noqa: E402
from tune.trainable import STUDY_OBJECTIVE  # noqa: E402

TOLERANCE = 0.02
RESULTS: list = []   # (arrival time, trial_id, iteration, metric, objective, time_this_iter_s, config)


class TimedStatusCallback(study_runner.StudyStatusCallback):
    """The study's own status callback, plus every result in the order the driver received it."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        RESULTS.append((time.time(), trial.trial_id, result.get("training_iteration"), result.get(M.VAL_RECON_MU),
                        result.get(STUDY_OBJECTIVE), result.get("time_this_iter_s"),
                        {k: trial.config.get(k) for k in ("variant", "gamma", "seed")}))


from _common import cpu_model  # noqa: E402  (benchmarks/ is sys.path[0])

def run_study(base: list[str], storage: str, name: str, scheduler: str, grace: int = None, rf: float = None) -> dict:
    argv = [*base, "--scheduler", scheduler, "--storage-path", storage, "--study-name", name, "--no-dashboard",
            "--verbose", "0"]
    if scheduler == "asha":
        argv += (["--grace-period", str(grace)] if grace else []) + (["--reduction-factor", str(rf)] if rf else [])
    cfg, _ = config_from_args(argv)
    RESULTS.clear()
    t0 = time.perf_counter()
    rc = study_runner.run(cfg, out=io.StringIO())
    wall = time.perf_counter() - t0
    curves = {}
    for t, tid, it, value, obj, dt, conf in sorted(RESULTS, key=lambda r: r[0]):
        c = curves.setdefault(tid, {"config": conf, "iters": [], "values": [], "objective": [], "epoch_s": []})
        c["iters"].append(it)
        c["values"].append(value)
        c["objective"].append(obj)
        c["epoch_s"].append(dt)
    order = [(r[1], r[2], r[3]) for r in sorted(RESULTS, key=lambda r: r[0])]
    return {"rc": rc, "wall_s": wall, "curves": curves, "order": order, "max_epochs": cfg.max_epochs,
            "grace_period": cfg.grace_period, "reduction_factor": cfg.reduction_factor,
            "n_trials": len(curves), "n_grid": len(cfg.trial_dicts())}


def final_best(curves: dict) -> tuple[float, str]:
    """The lowest last-reported metric among trials that did not diverge (objective finite)."""
    best = (math.inf, None)
    for tid, c in curves.items():
        v = c["values"][-1]
        if v is not None and math.isfinite(v) and c["objective"][-1] < 1e5:
            best = min(best, (v, tid))
    return best


def trial_epochs(curves: dict) -> int:
    return sum(max(c["iters"]) for c in curves.values())


def epochs_to_find(order: list, target: float) -> int | None:
    """Trial-epochs received (in arrival order) up to and including the first value <= target."""
    for n, (_, _, value) in enumerate(order, start=1):
        if value is not None and math.isfinite(value) and value <= target:
            return n
    return None


class _T:
    def __init__(self, trial_id):
        self.trial_id = trial_id


def replay_asha(fifo: dict, grace: int, rf: float, max_t: int, slots: int) -> dict:
    """ASHA replayed on FIFO's curves: Ray's own rung logic (_Bracket, one bracket, stop at max_t),
    `slots` trials at a time started in grid order, each epoch lasting what FIFO measured."""
    bracket = _Bracket(min_t=grace, max_t=max_t, reduction_factor=rf, s=0, stop_last_trials=True)
    first = {}
    for i, (tid, _, _) in enumerate(fifo["order"]):
        first.setdefault(tid, i)
    ids = sorted(fifo["curves"], key=first.get)   # the order FIFO started them: the grid's
    pending, events, reached, last, order = list(ids), [], {}, {}, []

    def start(tid, now):
        c = fifo["curves"][tid]
        heapq.heappush(events, (now + (c["epoch_s"][0] or 1.0), tid, 1))

    now = 0.0
    for _ in range(min(slots, len(pending))):
        start(pending.pop(0), now)
    while events:
        now, tid, it = heapq.heappop(events)
        c = fifo["curves"][tid]
        value, obj = c["values"][it - 1], c["objective"][it - 1]
        reached[tid], last[tid] = it, value
        order.append((tid, it, value))
        action = bracket.on_result(_T(tid), it, -obj if obj is not None else None)
        if action == "STOP" or it >= max_t:
            if pending:
                start(pending.pop(0), now)
        else:
            heapq.heappush(events, (now + (c["epoch_s"][it] or 1.0), tid, it + 1))
    finite = [v for tid, v in last.items() if v is not None and math.isfinite(v)
              and fifo["curves"][tid]["objective"][reached[tid] - 1] < 1e5]
    return {"trial_epochs": sum(reached.values()), "best": min(finite) if finite else None, "order": order,
            "sim_time_s": now}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--num-cpus", type=int, default=2, help="the local Ray's CPUs = concurrent trials")
    ap.add_argument("--replay", default="1:2,1:3,1:4,2:2,2:3",
                    help="grace:reduction_factor settings to replay on FIFO's curves")
    ap.add_argument("--json", default=None)
    ap.add_argument("study_args", nargs="*", help="extra run_study.py options (after --)")
    args = ap.parse_args(argv)
    base = ["--preset", args.preset, *args.study_args]

    storage = tempfile.mkdtemp(prefix="bench_asha_")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    study_runner.StudyStatusCallback = TimedStatusCallback   # what build_tuner instantiates
    t_all = time.perf_counter()
    try:
        fifo = run_study(base, storage, "fifo", "fifo")
        print(f"fifo: rc {fifo['rc']}, {fifo['n_trials']} trials in {fifo['wall_s']:.0f} s", file=sys.stderr)
        asha = run_study(base, storage, "asha", "asha")
        print(f"asha: rc {asha['rc']}, {asha['n_trials']} trials in {asha['wall_s']:.0f} s", file=sys.stderr)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    total = time.perf_counter() - t_all

    fifo_best, fifo_best_id = final_best(fifo["curves"])
    asha_best, asha_best_id = final_best(asha["curves"])
    target = fifo_best * (1 + TOLERANCE)
    fifo_epochs, asha_epochs = trial_epochs(fifo["curves"]), trial_epochs(asha["curves"])
    found = asha_best <= target
    to_find = epochs_to_find(asha["order"], target)
    ratio_total = asha_epochs / fifo_epochs
    max_t = fifo["max_epochs"]
    replays = {}
    for setting in [s for s in args.replay.split(",") if s]:
        g, rf = setting.split(":")
        g, rf = int(g), float(rf)
        if g > max_t:
            continue
        r = replay_asha(fifo, g, rf, max_t, args.num_cpus)
        replays[f"grace {g}, rf {rf:g}"] = {
            "trial_epochs": r["trial_epochs"], "ratio_total": round(r["trial_epochs"] / fifo_epochs, 3),
            "best": r["best"], "within_2pct": r["best"] is not None and r["best"] <= target,
            "ratio_to_find": (round(epochs_to_find(r["order"], target) / fifo_epochs, 3)
                              if epochs_to_find(r["order"], target) else None)}
    preset_key = f"grace {asha['grace_period']}, rf {asha['reduction_factor']:g}"
    cfg_of = lambda run, tid: run["curves"][tid]["config"] if tid else None  # noqa: E731
    out = {
        "command": "python " + " ".join(["benchmarks/bench_asha.py"] + (argv if argv is not None else sys.argv[1:])),
        "study_options": base,
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs ({cpu_model()}), python {platform.python_version()}, "
                   f"ray {ray.__version__}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "metric": M.VAL_RECON_MU, "tolerance": TOLERANCE,
        "trials": fifo["n_grid"], "max_epochs": max_t,
        "asha_setting": {"grace_period": asha["grace_period"], "reduction_factor": asha["reduction_factor"]},
        "fifo": {"trial_epochs": fifo_epochs, "best": fifo_best, "best_trial": cfg_of(fifo, fifo_best_id),
                 "wall_s": round(fifo["wall_s"], 1), "exit_status": fifo["rc"],
                 "trial_epochs_to_find": epochs_to_find(fifo["order"], target)},
        "asha": {"trial_epochs": asha_epochs, "best": asha_best, "best_trial": cfg_of(asha, asha_best_id),
                 "wall_s": round(asha["wall_s"], 1), "exit_status": asha["rc"], "trial_epochs_to_find": to_find,
                 "trials_per_epochs_reached": {str(k): sum(max(c["iters"]) == k for c in asha["curves"].values())
                                               for k in range(1, max_t + 1)}},
        "asha_best_over_fifo_best": round(asha_best / fifo_best, 4),
        "asha_within_2pct": found,
        "ratio_total": round(ratio_total, 3),   # the goal counts it only when asha_within_2pct
        "ratio_to_find": round(to_find / fifo_epochs, 3) if to_find else None,
        "wall_ratio": round(asha["wall_s"] / fifo["wall_s"], 3),
        "goal": "ratio_total <= 0.5",
        "goal_met": bool(found and ratio_total <= 0.5),
        "replay_on_fifo_curves": replays,
        "replay_of_real_setting_trial_epochs": replays.get(preset_key, {}).get("trial_epochs"),
        "benchmark_wall_s": round(total, 1),
    }
    print("| scheduler | trial-epochs | best final " + M.VAL_RECON_MU + " | epochs to within 2% | wall (s) |")
    print("|---|---|---|---|---|")
    print(f"| fifo | {fifo_epochs} | {fifo_best:.5f} | {out['fifo']['trial_epochs_to_find']} | {fifo['wall_s']:.0f} |")
    print(f"| asha ({preset_key}) | {asha_epochs} | {asha_best:.5f} | {to_find} | {asha['wall_s']:.0f} |")
    print(f"\nratio_total {ratio_total:.3f} (ASHA within 2%: {found}), ratio_to_find {out['ratio_to_find']}, "
          f"wall ratio {out['wall_ratio']}")
    print("\n| replayed ASHA on FIFO's curves | trial-epochs | ratio | best | within 2% | ratio to find |\n|---|---|---|---|---|---|")
    for k, r in replays.items():
        print(f"| {k} | {r['trial_epochs']} | {r['ratio_total']} | {r['best']:.5f} | {r['within_2pct']} | "
              f"{r['ratio_to_find']} |")
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if fifo["rc"] == 0 and asha["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
