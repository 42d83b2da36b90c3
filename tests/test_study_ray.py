"""Real studies on a real local Ray, with tiny data (8x8 natural patches, latent 4, 1-3 epochs).

- TestSharedRay: one Ray for several studies (4 logical CPUs and 1 logical GPU on this CPU
  machine): a grid study, ASHA stopping the trials built to lose, divergence as an outcome,
  Optuna, fractional-GPU packing.
- A study whose driver is SIGKILLed, then finished with --resume.
- A two-node cluster (ray.cluster_utils.Cluster): local storage refused, then trials on both nodes.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import ray  # noqa: E402

from plvae import metrics as M  # noqa: E402
from plvae.config import TrialConfig  # noqa: E402
from tune.cli import config_from_args  # noqa: E402
from tune.reporting import ACCELERATOR, ASSIGNED_GPUS, DIVERGED_OBJECTIVE, NODE_ID, STUDY_OBJECTIVE  # noqa: E402
from tune.run_study import main  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TINY = ["--image-size", "8", "--set", "n_train=256", "--set", "n_val=64", "--hidden-dims", "8,16",
        "--enc-out-dim", "32", "--latent-dims", "4", "--clip-dims", "2", "--no-dashboard", "--verbose", "1"]
REPORTED = set(M.EPOCH_METRICS) | {M.INITIAL_VAL_LOSS, M.INITIAL_VAL_RECON_MU, STUDY_OBJECTIVE, NODE_ID,
                                   ACCELERATOR, "training_iteration", "time_total_s", "trial_id", "node_ip"}


# ---------------------------------------------------------------------------- reading results
def trial_dirs(exp: Path) -> list[Path]:
    return sorted(p.parent for p in exp.glob("*/params.json"))


def rows(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def params(trial_dir: Path) -> dict:
    return json.loads((trial_dir / "params.json").read_text())


def study_json(exp: Path) -> dict:
    return json.loads((exp / "study.json").read_text())


def key(d: dict) -> str:
    return json.dumps(d, sort_keys=True)


def run_cli(argv: list[str]) -> int:
    return main(argv)


# ---------------------------------------------------------------------------- one Ray, several studies
@pytest.fixture(scope="class")
def shared_ray():
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.mark.usefixtures("shared_ray")
class TestSharedRay:
    def test_grid_study_runs_the_deduplicated_grid_with_a_data_matched_gamma(self, tmp_path):
        argv = ["--variants", "vae,powerlaw,powerlaw_clamp,exponential", "--gammas", "0.5,1", "--seeds", "0",
                "--decay-rates", "0.5", "--epochs", "2", "--scheduler", "fifo", "--gamma-from-data",
                "--max-concurrent", "2", "--storage-path", str(tmp_path), "--study-name", "grid", *TINY]
        assert run_cli(argv) == 0
        exp = tmp_path / "grid"
        s = study_json(exp)
        (data_key, alpha), = s["data_alpha"].items()
        assert "natural_patches" in data_key and alpha > 0
        gamma = round(alpha / 2, 2)
        # The grid of the command line plus gamma = alpha/2 for the variants that use gamma.
        cfg, _ = config_from_args(argv + ["--gammas", ",".join(map(str, sorted({0.5, 1.0, gamma})))])
        grid = cfg.trial_dicts({"data_alpha": alpha, "data_gamma": gamma})
        assert len(grid) == 1 + 2 * len({0.5, 1.0, gamma}) + 1
        dirs = trial_dirs(exp)
        assert sorted(key(params(d)) for d in dirs) == sorted(key(g) for g in grid)   # each once, flat, full
        for d in dirs:
            r = rows(d)
            assert [x["training_iteration"] for x in r] == [1, 2]
            assert REPORTED <= set(r[0]), REPORTED - set(r[0])
            assert r[-1][STUDY_OBJECTIVE] == r[-1][cfg.metric]
            assert r[0][ACCELERATOR] == "cpu"
            assert params(d)["extra"]["data_alpha"] == alpha
            assert (d / "progress.csv").exists()
            assert list(d.glob("events.out.tfevents.*")), "TensorBoard events"
            assert 1 <= len(list(d.glob("checkpoint_*"))) <= cfg.keep_checkpoints
        assert s["status"] == "finished" and s["finished"] and s["metric"] == M.DEFAULT_STUDY_METRIC
        assert s["mode"] == "min" and s["max_epochs"] == 2 and s["search"] == "grid" and s["scheduler"] == "fifo"
        assert sorted(s["trial_status"].values()) == ["TERMINATED"] * len(grid)
        assert set(s["trial_outcome"].values()) == {"completed"}
        assert set(s["best_per_variant"]) == {"vae", "powerlaw", "powerlaw_clamp", "exponential"}

    def test_asha_stops_the_losers_and_divergence_is_an_outcome(self, tmp_path):
        # Sequential trials in grid order: lr 1e-2 (seeds 0, 1), then lr 1e-7 (barely moves), then
        # lr 1e6 (diverges). The first trial always passes its rung; the two lr 1e-7 trials are
        # far worse than the median of those before them, so ASHA stops them after epoch 1.
        argv = ["--variants", "powerlaw_clamp", "--gammas", "0.5", "--lrs", "0.01,1e-7,1e6", "--seeds", "0,1",
                "--epochs", "3", "--scheduler", "asha", "--grace-period", "1", "--reduction-factor", "2",
                "--max-concurrent", "1", "--storage-path", str(tmp_path), "--study-name", "asha", *TINY,
                "--set", "n_train=4096"]
        assert run_cli(argv) == 0
        exp = tmp_path / "asha"
        by = {}
        for d in trial_dirs(exp):
            p = params(d)
            by[(p["lr"], p["seed"])] = rows(d)
        assert sorted(by) == sorted((lr, s) for lr in (0.01, 1e-7, 1e6) for s in (0, 1))
        assert by[(0.01, 0)][-1]["training_iteration"] == 3            # the first trial runs to the end
        for seed in (0, 1):
            assert by[(1e-7, seed)][-1]["training_iteration"] == 1, "ASHA stops it at the first rung"
            last = by[(1e6, seed)][-1]
            assert last[M.DIVERGED] == 1.0
            assert last[STUDY_OBJECTIVE] == DIVERGED_OBJECTIVE
            raw = last[M.VAL_RECON_MU]
            assert not math.isfinite(raw) or raw > 1.0                   # the raw metric, honestly
        s = study_json(exp)
        assert s["status"] == "finished"
        assert set(s["trial_status"].values()) == {"TERMINATED"}        # never an errored trial
        assert s["summary"]["diverged"] == 2 and s["summary"]["early_stopped"] >= 2
        assert s["summary"]["completed"] >= 1 and s["summary"]["errored"] == 0
        assert list(s["best_per_variant"]) == ["powerlaw_clamp"]
        assert s["best_per_variant"]["powerlaw_clamp"]["lr"] == 0.01    # diverged trials never "best"

    def test_optuna_search(self, tmp_path):
        argv = ["--search", "optuna", "--num-samples", "2", "--max-concurrent", "2", "--variants",
                "powerlaw_clamp", "--gammas", "0.1,1.5", "--min-decays", "0.0001,0.1",
                "--seeds", "0,1", "--epochs", "1", "--scheduler", "fifo", "--storage-path", str(tmp_path),
                "--study-name", "opt", *TINY]
        assert run_cli(argv) == 0
        exp = tmp_path / "opt"
        dirs = trial_dirs(exp)
        assert len(dirs) == 4
        for d in dirs:
            assert set(params(d)) == set(TrialConfig.field_names())   # a full, flat TrialConfig dict
            t = TrialConfig.from_dict(params(d))
            assert t.variant == "powerlaw_clamp" and 0.1 <= t.gamma <= 1.5 and 1e-4 <= t.min_decay <= 0.1
            assert rows(d)[-1]["training_iteration"] == 1
        # two suggestions, each run at both seeds (Repeater): one arm, seeds never searched
        by_config = {}
        for d in dirs:
            p = params(d)
            by_config.setdefault((p["gamma"], p["min_decay"]), set()).add(p["seed"])
        assert len(by_config) == 2 and all(seeds == {0, 1} for seeds in by_config.values())
        s = study_json(exp)
        assert s["search"] == "optuna" and s["status"] == "finished" and len(s["trial_status"]) == 4

    def test_four_quarter_gpu_trials_share_one_gpu(self, tmp_path):
        assert ray.cluster_resources().get("GPU") == 1
        samples = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                samples.append(ray.available_resources())
                time.sleep(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        argv = ["--variants", "powerlaw_clamp", "--gammas", "0.25,0.5,0.75,1", "--seeds", "0", "--epochs", "3",
                "--set", "n_train=1024", "--scheduler", "fifo", "--gpus-per-trial", "0.25", "--allow-cpu-fallback",
                "--storage-path", str(tmp_path), "--study-name", "pack", *TINY]
        try:
            assert run_cli(argv) == 0
        finally:
            stop.set()
            watcher.join()
        # Ray's own view: at some moment the whole GPU was handed out in quarters, one per trial.
        assert min(s.get("GPU", 0.0) for s in samples) == 0.0
        exp = tmp_path / "pack"
        dirs = trial_dirs(exp)
        assert len(dirs) == 4
        spans = []
        for d in dirs:
            r = rows(d)
            assert r[0][ASSIGNED_GPUS] == 0.25
            assert r[0][ACCELERATOR] == "cpu"           # no CUDA here: never asked for it
            spans.append((r[0]["timestamp"] - r[0]["time_this_iter_s"], r[-1]["timestamp"]))
        assert max(a for a, _ in spans) <= min(b for _, b in spans) + 1   # all four ran at once (1 s stamps)


# ---------------------------------------------------------------------------- kill the driver, resume
def _descendants(pid: int) -> set[int]:
    children = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(p.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def test_killed_driver_resumes_without_losing_or_repeating_trials(tmp_path, capsys, monkeypatch):
    # 30 trials: on a quiet machine a smaller study can finish in the seconds between the second
    # completed trial and the kill.
    argv = ["--variants", "vae,powerlaw_clamp", "--gammas", "0.25,0.5,0.75,1", "--seeds", "0:6:1", "--epochs", "3",
            "--scheduler", "fifo", "--num-cpus", "2", "--storage-path", str(tmp_path), "--study-name", "crash", *TINY,
            "--set", "n_train=4096"]
    cfg, _ = config_from_args(argv)
    grid = cfg.trial_dicts()
    assert len(grid) == 30
    exp = tmp_path / "crash"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "tune" / "run_study.py"), *argv], cwd=tmp_path, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    done_before, in_flight = set(), {}
    tree: set[int] = set()
    deadline = time.time() + 240
    try:
        # Kill once two trials have finished and another has a checkpoint but has not finished:
        # the resume must keep the first untouched and continue the other from its checkpoint.
        while time.time() < deadline and proc.poll() is None:
            tree |= _descendants(proc.pid)
            epochs = {d.name: len(rows(d)) for d in trial_dirs(exp)}
            done_before = {n for n, e in epochs.items() if e >= 3}
            # In flight: a checkpoint (written by the worker straight to storage) but not the last
            # one; its result lines reach storage later, with Tune's copy every few seconds.
            in_flight = {n: e for n, e in epochs.items()
                         if e < 3 and list((exp / n).glob("checkpoint_*")) and not (exp / n / "checkpoint_000002").exists()}
            if len(done_before) >= 2 and in_flight:
                break
            time.sleep(0.3)
        assert proc.poll() is None, "the study finished before it could be killed"
        assert len(done_before) >= 2 and in_flight
        time.sleep(3.5)   # past one experiment-state snapshot period (TUNE_GLOBAL_CHECKPOINT_S=3)
        tree |= _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        log.close()
        for pid in tree:   # Ray processes this driver started (only those), should any outlive it
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert study_json(exp)["status"] == "running"          # what a crash leaves behind
    completed_rows = {name: rows(exp / name) for name in done_before}
    # What a kill in the middle of Tune's copy from its staging folder leaves (seen about once in
    # seven runs of this test): a finished trial's record truncated to 0 bytes in the storage path.
    torn = sorted(done_before)[0]
    for name in ("params.json", "result.json", "progress.csv"):
        (exp / torn / name).write_bytes(b"")
    # Without Ray's staging folder (another machine, a cleaned /tmp) the dry run names what stays torn
    empty = tempfile.mkdtemp(prefix="raytmp", dir="/tmp")
    try:
        monkeypatch.setenv("RAY_TMPDIR", empty)
        assert run_cli(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "crash"]) == 0
        out = capsys.readouterr().out
        assert "trial record(s) are torn" in out and torn in out, out   # with any the kill itself tore
    finally:
        monkeypatch.delenv("RAY_TMPDIR")
        os.rmdir(empty)
    # ... and with it (this machine), that the resume copies the record back.
    assert run_cli(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "crash"]) == 0
    out = capsys.readouterr().out
    assert "resume: would copy" in out and torn in out and "are torn" not in out, out
    assert (exp / torn / "result.json").read_bytes() == b""       # a dry run changes nothing
    # A bare --resume while the killed driver's heartbeat is fresh: its pid is dead on this host,
    # so the study is a candidate at once.

    p = subprocess.run([sys.executable, str(REPO / "tune" / "run_study.py"), "--resume",
                        "--storage-path", str(tmp_path), "--no-dashboard", "--num-cpus", "2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "resume: copied" in p.stdout and torn in p.stdout, p.stdout[-3000:]
    assert "Checkpoint successfully created" not in p.stdout + p.stderr   # Ray's per-epoch line, quieted
    dirs = trial_dirs(exp)
    assert sorted(key(params(d)) for d in dirs) == sorted(key(g) for g in grid)   # each trial exactly once
    for d in dirs:
        iters = [r["training_iteration"] for r in rows(d)]
        assert iters[-1] == 3 and set(iters) == {1, 2, 3}, (d.name, iters)
        assert iters.count(1) == 1, f"{d.name} started over: {iters}"     # no trial ran from scratch twice
    for name, before in completed_rows.items():
        assert rows(exp / name) == before, f"{name} was run again"       # finished: not one line added
    for name, n in in_flight.items():
        iters = [r["training_iteration"] for r in rows(exp / name)]
        assert iters[:n] == list(range(1, n + 1)) and iters.count(1) == 1, f"{name} did not continue: {iters}"
    s = study_json(exp)
    assert s["status"] == "finished" and len(s["resumed"]) == 1
    assert sorted(s["trial_status"].values()) == ["TERMINATED"] * len(grid)
    assert "python -m analysis" in p.stdout


# ---------------------------------------------------------------------------- two nodes
def test_two_node_cluster(tmp_path, capsys):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        # One CPU per node, two trials placed at once: while one holds the head's CPU, the
        # other can only be placed on the second node.
        base = ["--variants", "powerlaw_clamp", "--gammas", "0.5,1", "--seeds", "0", "--epochs", "2",
                "--set", "n_train=512", "--scheduler", "fifo", "--address", cluster.address, "--no-reuse-actors",
                "--storage-path", str(tmp_path), *TINY]
        # A local results path on a multi-node cluster is refused before any trial runs.
        assert run_cli(base + ["--study-name", "refused"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: storage_path=") and "--shared-storage" in err[0]
        assert not trial_dirs(tmp_path / "refused")
        # Marked as shared (it is: both nodes are on this machine), the study runs on both nodes.
        assert run_cli(base + ["--study-name", "two", "--shared-storage"]) == 0
        node_ids = {rows(d)[0][NODE_ID] for d in trial_dirs(tmp_path / "two")}
        assert node_ids == {node.node_id for node in cluster.list_all_nodes()}
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_driver_process_stays_light():
    """The driver imports Ray and the study code, not Lightning or the data stack (trials and the
    one-off data task do): about 0.35 GB less resident memory for every study."""
    code = ("import sys, tune.study_runner, tune.trainable; "
            "print(sorted(m for m in ('pytorch_lightning', 'lightning', 'torchvision', 'plvae.data', 'plvae.model') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_gpus_per_trial_without_a_gpu_is_refused_before_any_trial(tmp_path, capsys):
    """A local Ray never grows: asking for GPUs it does not have is bad input (exit 2, one line),
    found once Ray is up and before any trial or result directory exists."""
    rc = run_cli(["--gpus-per-trial", "0.5", "--num-cpus", "1", "--num-gpus", "0", "--storage-path", str(tmp_path),
                  "--study-name", "nogpu", *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: gpus_per_trial=0.5 is invalid with 0 GPUs"), err
    assert not (tmp_path / "nogpu").exists()
    assert not ray.is_initialized()


def test_trial_worker_keeps_freed_memory_on_glibc():
    """Set in every trial (tune/trainable.py): glibc's fixed malloc thresholds, without which a
    trial's thread arena can map and unmap each step's tensors (BENCHMARKS.md, engine)."""
    import platform

    from tune.trainable import keep_freed_memory

    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is on_glibc
