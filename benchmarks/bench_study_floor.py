"""The default study's wall time against its compute floor, and where the rest goes.

Floor: the sum over the study's trials of the bare PyTorch loop's time for the epochs each trial
ran (plus its one initial validation pass), divided by the cores - what the study would take if
every core trained without a pause and without any engine. The bare loop (bench_engine.bare_loop)
is timed here, per variant, on one thread, just before the study runs.

The study runs as a user runs it (``python tune/run_study.py [options]``, its own process, Ray
started by it) with a public Tune callback (benchmarks/_common.py, through RAY_TUNE_CALLBACKS)
writing every trial start, result and completion with the driver's clock; the driver's own
output lines are timed as they arrive. The wall time is split into:

- start-up: process start to the line saying how many trials run (imports, Ray and its
  dashboard starting, the data built once in a Ray task, the plan);
- to the first trial: that line to the first trial's start (Tune's set-up, the first worker);
- trials: first start to last completion, split into the floor's share, the engine inside the
  trials (their start-to-completion time beyond their bare-loop time, summed and divided by the
  cores) and idle slots (a core with no trial: between trials, and at the end when fewer trials
  than cores remain);
- shut-down: the last completion to the process's exit (the closing summary, Ray stopping).

    .venv/bin/python benchmarks/bench_study_floor.py [--json out.json] [-- run_study options]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _common import STUDY_CLOCK, STUDY_CLOCK_FILE, cpu_model, emit  # noqa: E402  (benchmarks/ is sys.path[0])


def bare_times(cfg_dicts: list[dict], epochs: int = 3) -> dict:
    """Per variant: the bare loop's median epoch (train + validation pass) and one validation pass."""
    import torch

    from bench_engine import bare_loop
    from plvae.config import TrialConfig
    from plvae.data import load_data

    torch.set_num_threads(1)
    out, data = {}, {}
    for d in cfg_dicts:
        if d["variant"] in out:
            continue
        cfg = TrialConfig.from_dict({**d, "max_epochs": epochs})
        key = (cfg.dataset, cfg.image_size, cfg.n_train, cfg.n_val, cfg.data_seed)
        data.setdefault(key, load_data(cfg))
        val: list[float] = []
        t = bare_loop(cfg, data[key], val)
        out[d["variant"]] = {"epoch_s": statistics.median(t[1:]), "val_s": statistics.median(val[1:])}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("study_args", nargs="*", help="run_study.py options (after --); none: the default study")
    args = ap.parse_args(argv)
    from tune.cli import config_from_args

    cfg, _ = config_from_args(list(args.study_args))
    bare = bare_times(cfg.trial_dicts())
    cores = cfg.num_cpus or os.cpu_count()

    storage = tempfile.mkdtemp(prefix="bench_floor_")
    clock = Path(storage) / "clock.jsonl"
    env = {**os.environ, "RAY_TUNE_CALLBACKS": STUDY_CLOCK, STUDY_CLOCK_FILE: str(clock),
           "PYTHONPATH": os.pathsep.join([str(REPO / "benchmarks"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(REPO / "tune" / "run_study.py"), "--storage-path", storage, "--study-name", "floor",
           *args.study_args]
    lines = []
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    reader = threading.Thread(target=lambda: lines.extend((time.time(), ln) for ln in proc.stdout), daemon=True)
    reader.start()
    rc = proc.wait()
    t_exit = time.time()
    reader.join(timeout=10)
    events = [json.loads(ln) for ln in clock.read_text().splitlines()] if clock.exists() else []
    shutil.rmtree(storage, ignore_errors=True)
    if rc != 0 or not events:
        print("".join(ln for _, ln in lines)[-3000:], file=sys.stderr)
        print(f"error: the study exited {rc} with {len(events)} clock events", file=sys.stderr)
        return 1

    start = {tid: t for kind, tid, t, _ in events if kind == "start"}
    done = {tid: t for kind, tid, t, _ in events if kind == "complete"}
    reached, variant = {}, {}
    for kind, tid, t, extra in events:
        if kind == "result":
            reached[tid] = max(reached.get(tid, 0), extra["iteration"] or 0)
        variant.setdefault(tid, extra.get("variant"))
    t_plan = next((t for t, ln in lines if " trials -> " in ln), None)
    first, last = min(start.values()), max(done.values())
    trial_s = {tid: done[tid] - start[tid] for tid in done}
    floor_trial = {tid: bare[variant[tid]]["epoch_s"] * reached.get(tid, 0) + bare[variant[tid]]["val_s"]
                   for tid in done}
    floor = sum(floor_trial.values()) / cores
    wall = t_exit - t0
    phase = last - first
    parts = {
        "start_up_s": (t_plan or first) - t0,
        "to_first_trial_s": first - (t_plan or first),
        "trials_floor_share_s": floor,
        "trials_engine_in_trials_s": (sum(trial_s.values()) - sum(floor_trial.values())) / cores,
        "trials_idle_slots_s": (cores * phase - sum(trial_s.values())) / cores,
        "shut_down_s": t_exit - last,
    }
    out = {
        "command": "python benchmarks/bench_study_floor.py" + (" -- " + " ".join(args.study_args) if args.study_args else ""),
        "study": "python tune/run_study.py " + " ".join(args.study_args),
        "machine": f"{os.cpu_count()} CPUs ({cpu_model()})",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "exit_status": rc, "cores": cores, "trials": len(done), "trial_epochs": sum(reached.values()),
        "bare_loop_per_variant": {v: {k: round(x, 4) for k, x in b.items()} for v, b in bare.items()},
        "wall_s": round(wall, 1),
        "floor_s": round(floor, 1),
        "wall_over_floor": round(wall / floor, 2),
        "goal": "wall_over_floor <= 1.5",
        "breakdown_s": {k: round(v, 1) for k, v in parts.items()},
        "trials_phase_s": round(phase, 1),
        "median_trial_s": round(statistics.median(trial_s.values()), 2),
        "median_trial_over_bare": round(statistics.median(trial_s[t] / floor_trial[t] for t in done), 2),
    }
    print(f"wall {wall:.1f} s, floor {floor:.1f} s ({len(done)} trials, {out['trial_epochs']} trial-epochs, "
          f"{cores} cores): {wall / floor:.2f}x")
    for k, v in parts.items():
        print(f"  {k:<28} {v:6.1f} s")
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
