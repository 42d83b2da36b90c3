"""Wall time and peak memory of the default study (`python tune/run_study.py`).

Runs the study as a subprocess (in a fresh session) and samples, every --interval seconds, the
memory of the driver and every process it started - Ray's GCS, raylet, dashboard, and the
workers that run the trials - found as the driver's descendants in /proc plus anything in its
session. Reports the peak of the summed RSS (what the issue asks; shared pages such as torch's
libraries are counted once per process, so it overstates) and of the summed PSS (shared pages
split between the processes sharing them: closer to the real footprint).

    .venv/bin/python benchmarks/bench_default_study.py [--json out.json] [-- extra run_study options]

Results go to a temporary --storage-path (removed afterwards unless --keep).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> tuple[int, int]:
    """(parent pid, session id) from /proc/<pid>/stat (fields after the command name)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def study_processes(root: int) -> set[int]:
    """The root, its descendants, and every process in the root's session."""
    parent, session = {}, {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                parent[int(p.name)], session[int(p.name)] = _stat(int(p.name))
            except (OSError, IndexError, ValueError):
                continue
    children = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in found:
                found.add(c)
                todo.append(c)
    return found | {pid for pid, sid in session.items() if sid == root}


def name(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
    for marker in ("run_study.py", "ray::", "ray-dashboard-", "gcs_server", "raylet", "dashboard.py", "monitor.py",
                   "log_monitor.py", "forkserver"):
        if marker in cmd:
            return cmd[cmd.index(marker):].split()[0][:40]
    return cmd[:40]


def memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes; (0, 0) for a process that has gone."""
    try:
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        pss = 0
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
                break
        return rss, pss
    except (OSError, ValueError, IndexError):
        return 0, 0


def _group(processes) -> dict:
    """{process kind: [count, RSS MB, PSS MB]} at the RSS peak, largest first."""
    out = {}
    for kind, (rss, pss) in processes:
        kind = "ray-dashboard-*" if kind.startswith("ray-dashboard-") else kind
        c = out.setdefault(kind, [0, 0.0, 0.0])
        c[0] += 1
        c[1] += rss / 1e6
        c[2] += pss / 1e6
    return {k: [v[0], round(v[1]), round(v[2])] for k, v in sorted(out.items(), key=lambda kv: -kv[1][1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="keep the study's results")
    ap.add_argument("study_args", nargs="*", help="extra run_study.py options (after --)")
    args = ap.parse_args(argv)

    storage = tempfile.mkdtemp(prefix="bench_study_")
    cmd = [sys.executable, str(REPO / "tune" / "run_study.py"), "--storage-path", storage,
           "--study-name", "bench", *args.study_args]
    samples = []          # (t, n_processes, rss_sum, pss_sum)
    at_peak = {"rss": -1, "processes": []}
    log = Path(storage) / "study.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                pids = sorted(study_processes(proc.pid))
                mem = [memory(p) for p in pids]
                rss = sum(m[0] for m in mem)
                samples.append((time.perf_counter() - t0, len(pids), rss, sum(m[1] for m in mem)))
                if rss > at_peak["rss"]:
                    at_peak.update(rss=rss, processes=[(name(p), m) for p, m in zip(pids, mem)])
                stop.wait(args.interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join()

    study = {}
    try:
        study = json.loads((Path(storage) / "bench" / "study.json").read_text())
    except (OSError, ValueError):
        pass
    peak = max(samples, key=lambda s: s[2]) if samples else (0, 0, 0, 0)
    result = {
        "command": "python tune/run_study.py " + " ".join(args.study_args),
        "exit_status": rc,
        "wall_s": round(wall, 1),
        "peak_rss_sum_gb": round(peak[2] / 1e9, 3),
        "peak_pss_sum_gb": round(max((s[3] for s in samples), default=0) / 1e9, 3),
        "processes_at_rss_peak": peak[1],
        "max_processes": max((s[1] for s in samples), default=0),
        "samples": len(samples),
        "at_rss_peak_mb": _group(at_peak["processes"]),
        "interval_s": args.interval,
        "trials": study.get("num_trials"),
        "outcomes": study.get("summary"),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if rc != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    if args.keep:
        print(f"results kept in {storage}", file=sys.stderr)
    else:
        shutil.rmtree(storage, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
