"""Chaos: trial workers SIGKILLed mid-study (issue 21). A small real study runs with
``--max-failures``; the test kills its trial workers, only its own, a few times after their first
checkpoint. Then: every trial completes, every epoch is recorded exactly once, and ``load_study``
and ``python -m analysis`` report every trial completed, with its retries.

Only this study's workers are killed: a PID is read from the ``pid`` key Tune writes into the
trial's own result.json, and killed only while /proc/PID/cmdline still names a Tune trial actor
(``ray::ImplicitFunc``), so a reused PID or another engineer's Ray is never hit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def chaos_study(storage: Path, name: str, epochs: int, gammas: str, kills: int, every_s: float,
                n_train: int = 2048, timeout_s: float = 600) -> dict:
    """Run a study in a subprocess and SIGKILL up to ``kills`` trial workers, at least ``every_s``
    apart, each after its trial's first checkpoint and before its last epoch. Returns the counts:
    {"kills": [(trial folder name, epoch reached, pid)], "rc", "output", "seconds"}."""
    argv = [sys.executable, str(REPO / "tune" / "run_study.py"), "--variants", "powerlaw_clamp", "--gammas", gammas,
            "--seeds", "0", "--epochs", str(epochs), "--scheduler", "fifo", "--max-failures", str(kills + 2),
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


@pytest.mark.timeout(300)
def test_killed_trial_workers_are_retried_recorded_once_and_analysed_as_completed(tmp_path):
    from analysis.__main__ import main as analysis_main
    from analysis.load import load_study

    epochs, gammas = 4, "0.25,0.5,0.75,1"
    got = chaos_study(tmp_path, "chaos", epochs, gammas, kills=3, every_s=1.0)
    assert got["rc"] == 0, got["output"][-3000:]
    assert got["kills"], "no trial worker was killed: the epochs are too fast for the test"
    exp = tmp_path / "chaos"
    recorded = epoch_counts(exp)
    assert len(recorded) == 4
    for name, its in recorded.items():      # every epoch exactly once: none repeated, none lost
        assert its == list(range(1, epochs + 1)), (name, its)
    meta = json.loads((exp / SF.STUDY_FILE).read_text())
    assert meta["status"] == SF.STUDY_FINISHED and set(meta["trial_status"].values()) == {SF.TUNE_TERMINATED}

    study = load_study(exp, warn=False)
    t = study.trials.set_index("trial_dir")
    assert set(t["status"]) == {"completed"}, t[["status", "retries", "error"]]
    killed_per_trial = {}
    for name, _, _ in got["kills"]:
        killed_per_trial[name] = killed_per_trial.get(name, 0) + 1
    retries = {Path(d).name: int(r) for d, r in t["retries"].items()}
    for name, n in killed_per_trial.items():   # each kill is one recorded retry of its trial
        assert retries[name] == n, (got["kills"], retries)
    assert sum(retries.values()) == len(got["kills"])

    out = tmp_path / "report"
    assert analysis_main([str(exp), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "trials: 4 (completed 4)" in report
    assert f"{len(killed_per_trial)} retried from a checkpoint ({len(got['kills'])} retries in all)" in report
