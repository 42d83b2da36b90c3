"""Study efficiency: ASHA against FIFO on the same grid (the quick preset's, same seeds) - the
share of trial-epochs ASHA needs to find a configuration within 2% of FIFO's best final
validation metric (``plvae.metrics.DEFAULT_STUDY_METRIC``, val_loss). Goal: <= 0.5.

Both studies run through the study engine (tune.cli.config_from_args, StudyRecord.open and claim,
study_runner.run, the code behind ``python tune/run_study.py``), one after the other in one
process and one Ray; only ``--scheduler`` differs. A public ``ray.tune.Callback`` (added through
Ray's RAY_TUNE_CALLBACKS variable, benchmarks/_common.py) notes every result in the order the
driver received it. Trial-epochs = the sum over trials of the training_iteration each reached.
The best is taken over the KL variants only: ``powerlaw_wae``'s val_loss is its own (squared W2)
objective and is never ranked against theirs (docs/design.md); its trials still count as epochs spent.
Figures:

- ``ratio_total``: ASHA's trial-epochs / FIFO's, counted only when ASHA's best final value (each
  trial's last report, as the study summary ranks them) is within 2% of FIFO's best. The goal.
- ``ratio_to_find``: the trial-epochs ASHA had spent (results in the order the driver received
  them) when a trial first reported a value within 2% of FIFO's best, over FIFO's total - what
  an anytime user would pay.

Trials are seeded and deterministic, so a trial's curve does not depend on the scheduler: FIFO's
curves also let us replay ASHA offline for other grace periods and reduction factors. The replay
recomputes ASHA's rung cutoffs from the recorded results (``AshaRungs``: asynchronous successive
halving as ``ray.tune.schedulers.ASHAScheduler`` documents it - one bracket, rungs at grace x rf^k,
a trial stops at a rung when its objective is worse than the 1 - 1/rf quantile of the values
recorded there so far) with two slots filled in grid order, each epoch taking the time FIFO
measured for it. The preset's setting replayed next to its real run checks the replay against
Ray's own scheduler (``replay_matches_real_asha``); the table of replays is what ``quick.yaml``
should be tuned by.

    .venv/bin/python benchmarks/bench_asha.py [--preset quick] [--json benchmarks/results/asha.json]
        [-- extra run_study options, e.g. --variants vae,powerlaw_clamp --epochs 8]
    .venv/bin/python benchmarks/bench_asha.py --quick     # a 4-trial, 2-epoch smoke run (minutes)

Seed-grouped ASHA (``--scheduler seed_asha``, tune/seed_asha.py) against ASHA and FIFO, ``--runs N``
times each, on one study (``compare_schedulers``): per run and scheduler, the trial-epochs, whether
FIFO's best configuration (the lowest median over its seeds of the final metric, KL variants) ran
every seed to the last epoch ("kept"), the scheduler's own best configuration among those it ran
to the end with every seed (its answer at full n), and how many configurations end with their
seeds at unequal epochs (what breaks a paired comparison):

    .venv/bin/python benchmarks/bench_asha.py --runs 3 [--json ...] [-- run_study options]

Trials are seeded, so FIFO's curves do not change from run to run: later runs may leave FIFO out
(``--schedulers asha,seed_asha --reference <an earlier run's json>``, its FIFO row as reference).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import heapq
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import cpu_model, run_timed_study, study_environment  # noqa: E402  (benchmarks/ is sys.path[0])
from plvae import metrics as M  # noqa: E402
from plvae.priors import VARIANTS, W2  # noqa: E402
from tune.reporting import STUDY_OBJECTIVE  # noqa: E402

TOLERANCE = 0.02
METRIC = M.DEFAULT_STUDY_METRIC
# --quick: a grid small enough to check the script end to end (not a measurement).
QUICK_STUDY = ["--variants", "vae,powerlaw_clamp", "--gammas", "0.5", "--seeds", "0,1", "--epochs", "2",
               "--n-train", "256", "--n-val", "128", "--grace-period", "1", "--reduction-factor", "2"]


def run_study(base: list[str], storage: str, name: str, scheduler: str) -> dict:
    argv = [*base, "--scheduler", scheduler, "--storage-path", storage, "--study-name", name, "--no-dashboard",
            "--verbose", "0"]
    run = run_timed_study(argv)
    cfg = run["cfg"]
    results = sorted((e for e in run["events"] if e[0] == "result"), key=lambda e: e[2])
    curves = {}
    for _, tid, _, p in results:
        r, conf = p["result"], p["config"]
        c = curves.setdefault(tid, {"config": {k: conf.get(k) for k in ("variant", "gamma", "seed")},
                                    "iters": [], "values": [], "objective": [], "epoch_s": []})
        c["iters"].append(r.get("training_iteration"))
        c["values"].append(r.get(METRIC))
        c["objective"].append(r.get(STUDY_OBJECTIVE))
        c["epoch_s"].append(r.get("time_this_iter_s"))
    order = [(tid, p["result"].get("training_iteration"), p["result"].get(METRIC)) for _, tid, _, p in results]
    return {"rc": run["rc"], "wall_s": run["wall_s"], "curves": curves, "order": order, "max_epochs": cfg.max_epochs,
            "grace_period": cfg.grace_period, "reduction_factor": cfg.reduction_factor, "study_metric": cfg.metric,
            "n_trials": len(curves), "n_grid": len(cfg.trial_dicts())}


def ranked(curves: dict, tid: str) -> bool:
    """Whether a trial's METRIC may be ranked: not a W2 variant (its val_loss is another objective)."""
    variant = curves[tid]["config"]["variant"]
    return variant not in VARIANTS or VARIANTS[variant].divergence != W2


def final_best(curves: dict) -> tuple[float, str]:
    """The lowest last-reported metric among ranked trials that did not diverge (objective finite)."""
    best = (math.inf, None)
    for tid, c in curves.items():
        v = c["values"][-1]
        if ranked(curves, tid) and v is not None and math.isfinite(v) and c["objective"][-1] < 1e5:
            best = min(best, (v, tid))
    return best


def trial_epochs(curves: dict) -> int:
    return sum(max(c["iters"]) for c in curves.values())


def epochs_to_find(order: list, target: float, curves: dict) -> int | None:
    """Trial-epochs received (in arrival order) up to and including the first ranked value <= target."""
    for n, (tid, _, value) in enumerate(order, start=1):
        if ranked(curves, tid) and value is not None and math.isfinite(value) and value <= target:
            return n
    return None


class AshaRungs:
    """Asynchronous successive halving's rungs for one bracket, recomputed from recorded results,
    as ASHAScheduler(time_attr="training_iteration", mode="min", brackets=1) applies them: rungs
    at grace * rf**k up to max_t; the first result of a trial at or past a rung it has not been
    recorded at is compared with the 1 - 1/rf quantile (numpy's linear one) of the rewards
    (-objective) recorded there so far - below it, the trial stops - and is then recorded there.
    A trial stops anyway at max_t."""

    def __init__(self, grace: int, max_t: int, rf: float):
        self.rf, self.max_t = rf, max_t
        n_rungs = int(np.log(max_t / grace) / np.log(rf) + 1)
        self.rungs = [(grace * rf ** k, {}) for k in reversed(range(n_rungs))]   # highest first

    def on_result(self, tid: str, it: int, objective: float | None) -> bool:
        """Whether the trial stops after this result."""
        reward = None if objective is None else -objective
        stop = False
        for milestone, recorded in self.rungs:
            if it < milestone or tid in recorded:
                continue
            if recorded and reward is not None and reward < np.nanpercentile(list(recorded.values()),
                                                                               (1 - 1 / self.rf) * 100):
                stop = True
            if reward is not None:
                recorded[tid] = reward
            break
        return stop or it >= self.max_t


def rank_correlation(fifo: dict) -> dict:
    """Spearman's rho between each epoch's objective and the final one, over FIFO's ranked
    (KL, finite) trials: how well an early rung's order predicts the final order, which is what
    ASHA bets on."""
    from scipy.stats import spearmanr

    curves = [c["objective"] for tid, c in fifo["curves"].items()
              if ranked(fifo["curves"], tid) and len(c["objective"]) == fifo["max_epochs"]
              and all(v is not None and math.isfinite(v) and v < 1e5 for v in c["objective"])]
    out = {}
    for e in range(1, fifo["max_epochs"]):
        rho = spearmanr([c[e - 1] for c in curves], [c[-1] for c in curves]).statistic if len(curves) > 2 else None
        out[str(e)] = None if rho is None or not math.isfinite(rho) else round(float(rho), 3)
    return {"trials": len(curves), "rho_with_final_by_epoch": out}


def replay_asha(fifo: dict, grace: int, rf: float, max_t: int, slots: int) -> dict:
    """ASHA replayed on FIFO's curves: the rung cutoffs recomputed from the results (AshaRungs),
    `slots` trials at a time started in grid order, each epoch lasting what FIFO measured."""
    rungs = AshaRungs(grace, max_t, rf)
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
        if rungs.on_result(tid, it, obj) or it >= len(c["iters"]):
            if pending:
                start(pending.pop(0), now)
        else:
            heapq.heappush(events, (now + (c["epoch_s"][it] or 1.0), tid, it + 1))
    finite = [v for tid, v in last.items() if ranked(fifo["curves"], tid) and v is not None and math.isfinite(v)
              and fifo["curves"][tid]["objective"][reached[tid] - 1] < 1e5]
    return {"trial_epochs": sum(reached.values()), "best": min(finite) if finite else None, "order": order,
            "sim_time_s": now}


def configurations(run: dict) -> dict:
    """{configuration (variant, gamma): {seed: (epochs reached, last METRIC, last objective)}}."""
    out: dict = {}
    for c in run["curves"].values():
        key = (c["config"]["variant"], c["config"]["gamma"])
        out.setdefault(key, {})[c["config"]["seed"]] = (max(c["iters"]), c["values"][-1], c["objective"][-1])
    return out


def best_configuration(run: dict, full_only: bool) -> tuple | None:
    """The ranked configuration with the lowest median final METRIC over its seeds (every seed
    finite); full_only: among those whose every seed reached the last epoch."""
    best = None
    for key, seeds in configurations(run).items():
        if VARIANTS.get(key[0]) is not None and VARIANTS[key[0]].divergence == W2:
            continue
        if full_only and any(e < run["max_epochs"] for e, _, _ in seeds.values()):
            continue
        vals = [v for _, v, o in seeds.values() if v is not None and math.isfinite(v) and o < 1e5]
        if len(vals) == len(seeds):
            best = min(best or (math.inf, None), (float(np.median(vals)), key))
    return best


def scheduler_figures(run: dict, fifo_best_key: tuple) -> dict:
    confs = configurations(run)
    best = best_configuration(run, full_only=True)
    return {"trial_epochs": trial_epochs(run["curves"]), "wall_s": round(run["wall_s"], 1), "exit_status": run["rc"],
            "fifo_best_kept": all(e == run["max_epochs"] for e, _, _ in confs[fifo_best_key].values()),
            "best_at_full_n": list(best[1]) if best else None, "best_median": best[0] if best else None,
            "configs_with_unequal_seed_epochs": sum(len({e for e, _, _ in s.values()}) > 1 for s in confs.values()),
            "configs_with_every_seed_at_the_end": sum(all(e == run["max_epochs"] for e, _, _ in s.values())
                                                      for s in confs.values()),
            "seed_epochs": {f"{k[0]} {k[1]:g}": [s[seed][0] for seed in sorted(s)] for k, s in confs.items()},
            "configs": len(confs)}


def compare_schedulers(args, base: list[str], argv) -> int:
    """fifo, asha and seed_asha, args.runs times each, on one Ray (see the module docstring)."""
    import ray

    storage = tempfile.mkdtemp(prefix="bench_asha_")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    runs, schedulers = [], args.schedulers.split(",")
    ref = None
    if "fifo" not in schedulers:   # FIFO's best configuration and trial-epochs from an earlier run
        ref = next(f for f in json.loads(Path(args.reference).read_text())["runs"] if f["scheduler"] == "fifo")
    try:
        for r in range(args.runs):
            runs.append({s: run_study(base, storage, f"{s}{r}", s) for s in schedulers})
            print(f"run {r + 1}: " + ", ".join(f"{s} {x['wall_s']:.0f} s" for s, x in runs[-1].items()), file=sys.stderr)
    finally:
        ray.shutdown()
        shutil.rmtree(storage, ignore_errors=True)
    table = []
    for r, run in enumerate(runs):
        if ref is None:
            fifo_best = best_configuration(run["fifo"], full_only=True)
            fifo_epochs = trial_epochs(run["fifo"]["curves"])
        else:
            fifo_best, fifo_epochs = (ref["best_median"], tuple(ref["best_at_full_n"])), ref["trial_epochs"]
        for s, x in run.items():
            f = scheduler_figures(x, fifo_best[1])
            f.update(run=r + 1, scheduler=s, ratio=round(f["trial_epochs"] / fifo_epochs, 3),
                     same_answer_as_fifo=f["best_at_full_n"] == list(fifo_best[1]))
            table.append(f)
    print("| run | scheduler | trial-epochs | / FIFO | FIFO's best kept | best at full n | same as FIFO | "
          "configs with unequal seed epochs | configs with every seed at the end | wall (s) |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for f in table:
        print(f"| {f['run']} | {f['scheduler']} | {f['trial_epochs']} | {f['ratio']} | {f['fifo_best_kept']} | "
              f"{f['best_at_full_n']} | {f['same_answer_as_fifo']} | {f['configs_with_unequal_seed_epochs']}"
              f"/{f['configs']} | {f['configs_with_every_seed_at_the_end']}/{f['configs']} | {f['wall_s']:.0f} |")
        print(f"  seed epochs per configuration: {f['seed_epochs']}")
    out = {"command": "python " + " ".join(["benchmarks/bench_asha.py"] + (argv if argv is not None else sys.argv[1:])),
           "study_options": base, "machine": f"{platform.node()}: {os.cpu_count()} CPUs ({cpu_model()})",
           "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
           "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "metric": METRIC, "runs": table,
           "fifo_reference": args.reference}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if all(f["exit_status"] == 0 for f in table) else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--num-cpus", type=int, default=2, help="the local Ray's CPUs = concurrent trials")
    ap.add_argument("--replay", default="1:2,1:3,1:4,2:2,2:3,2:4,3:2,3:3,4:2",
                    help="grace:reduction_factor settings to replay on FIFO's curves")
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true",
                    help="a 4-trial, 2-epoch grid (vae, powerlaw_clamp) to check the script runs; not a measurement")
    ap.add_argument("study_args", nargs="*", help="extra run_study.py options (after --)")
    ap.add_argument("--runs", type=int, default=0,
                    help="compare fifo, asha and seed_asha, this many runs each (compare_schedulers), and stop")
    ap.add_argument("--schedulers", default="fifo,asha,seed_asha", help="with --runs: the schedulers to run")
    ap.add_argument("--reference", default=None,
                    help="with --runs and no fifo in --schedulers: an earlier --json whose fifo row is the reference")
    args = ap.parse_args(argv)
    base = ["--preset", args.preset, *(QUICK_STUDY if args.quick else []), *args.study_args]
    if args.quick:
        args.replay = "1:2,1:3"
    for key, value in study_environment().items():   # the entry point's settings, and the clock
        os.environ.setdefault(key, value)
    if args.runs:
        return compare_schedulers(args, base, argv)
    import ray

    storage = tempfile.mkdtemp(prefix="bench_asha_")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
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
    if fifo_best_id is None:
        print(f"error: no FIFO trial has a finite {METRIC} to rank (KL variants only)", file=sys.stderr)
        return 1
    target = fifo_best * (1 + TOLERANCE)
    fifo_epochs, asha_epochs = trial_epochs(fifo["curves"]), trial_epochs(asha["curves"])
    found = asha_best <= target
    to_find = epochs_to_find(asha["order"], target, asha["curves"])
    ratio_total = asha_epochs / fifo_epochs
    max_t = fifo["max_epochs"]
    replays = {}
    settings = [s for s in args.replay.split(",") if s] + [f"{asha['grace_period']}:{asha['reduction_factor']:g}"]
    for setting in dict.fromkeys(settings):   # the real setting always, to check the replay
        g, rf = setting.split(":")
        g, rf = int(g), float(rf)
        if g > max_t:
            continue
        r = replay_asha(fifo, g, rf, max_t, args.num_cpus)
        found_at = epochs_to_find(r["order"], target, fifo["curves"])
        replays[f"grace {g}, rf {rf:g}"] = {
            "trial_epochs": r["trial_epochs"], "ratio_total": round(r["trial_epochs"] / fifo_epochs, 3),
            "best": r["best"], "within_2pct": r["best"] is not None and r["best"] <= target,
            "ratio_to_find": round(found_at / fifo_epochs, 3) if found_at else None}
    preset_key = f"grace {asha['grace_period']}, rf {asha['reduction_factor']:g}"
    cfg_of = lambda run, tid: run["curves"][tid]["config"] if tid else None  # noqa: E731
    out = {
        "command": "python " + " ".join(["benchmarks/bench_asha.py"] + (argv if argv is not None else sys.argv[1:])),
        "study_options": base,
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs ({cpu_model()}), python {platform.python_version()}, "
                   f"ray {ray.__version__}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "metric": METRIC, "ranked_variants": "KL variants (W2 trials count as epochs, never ranked on " + METRIC + ")",
        "study_metric": asha["study_metric"], "tolerance": TOLERANCE,
        "trials": fifo["n_grid"], "max_epochs": max_t,
        "asha_setting": {"grace_period": asha["grace_period"], "reduction_factor": asha["reduction_factor"]},
        "fifo": {"trial_epochs": fifo_epochs, "best": fifo_best, "best_trial": cfg_of(fifo, fifo_best_id),
                 "wall_s": round(fifo["wall_s"], 1), "exit_status": fifo["rc"],
                 "trial_epochs_to_find": epochs_to_find(fifo["order"], target, fifo["curves"])},
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
        "rank_correlation": rank_correlation(fifo),
        "cheapest_setting_within_2pct": min((k for k, r in replays.items() if r["within_2pct"]),
                                            key=lambda k: replays[k]["trial_epochs"], default=None),
        "replay_of_real_setting_trial_epochs": replays.get(preset_key, {}).get("trial_epochs"),
        "replay_matches_real_asha": replays.get(preset_key, {}).get("trial_epochs") == asha_epochs,
        "benchmark_wall_s": round(total, 1),
    }
    print("| scheduler | trial-epochs | best final " + METRIC + " | epochs to within 2% | wall (s) |")
    print("|---|---|---|---|---|")
    print(f"| fifo | {fifo_epochs} | {fifo_best:.5f} | {out['fifo']['trial_epochs_to_find']} | {fifo['wall_s']:.0f} |")
    print(f"| asha ({preset_key}) | {asha_epochs} | {asha_best:.5f} | {to_find} | {asha['wall_s']:.0f} |")
    print(f"\nratio_total {ratio_total:.3f} (ASHA within 2%: {found}), ratio_to_find {out['ratio_to_find']}, "
          f"wall ratio {out['wall_ratio']}")
    print("\n| replayed ASHA on FIFO's curves | trial-epochs | ratio | best | within 2% | ratio to find |\n|---|---|---|---|---|---|")
    for k, r in replays.items():
        best = "-" if r["best"] is None else f"{r['best']:.5f}"
        print(f"| {k} | {r['trial_epochs']} | {r['ratio_total']} | {best} | {r['within_2pct']} | "
              f"{r['ratio_to_find']} |")
    print(f"cheapest replayed setting within 2%: {out['cheapest_setting_within_2pct']}")
    rc = out["rank_correlation"]
    print(f"\nSpearman rho of epoch e's {METRIC} with the final one ({rc['trials']} FIFO trials): "
          + ", ".join(f"e{e} {r}" for e, r in rc["rho_with_final_by_epoch"].items()))
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0 if fifo["rc"] == 0 and asha["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
