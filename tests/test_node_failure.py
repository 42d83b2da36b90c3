"""A worker node dies mid-trial on a real two-node Ray cluster (ray.cluster_utils.Cluster, both
nodes on this machine): its trial continues from its last checkpoint on the surviving node, and no
trial is lost or starts over (issue 11, "stronger fault tests")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from tune.reporting import NODE_ID  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 6


def _rows(trial_dir: Path) -> list[dict]:
    f = trial_dir / "result.json"
    if not f.exists():
        return []
    out = []
    for line in f.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return out


@pytest.mark.timeout(420)
def test_a_dead_worker_node_costs_at_most_an_epoch(tmp_path):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    proc = None
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        # Two trials, one CPU per node: one runs on each. Epochs of about a second, so the kill
        # lands mid-trial; retries allowed, checkpoints every epoch (the study's default).
        argv = [sys.executable, str(REPO / "tune" / "run_study.py"), "--address", cluster.address,
                "--shared-storage", "--storage-path", str(tmp_path), "--study-name", "nodes",
                "--variants", "powerlaw_clamp", "--gammas", "0.5,1", "--seeds", "0", "--epochs", str(EPOCHS),
                "--scheduler", "fifo", "--no-reuse-actors", "--max-failures", "3", "--image-size", "8",
                "--set", "n_train=8192", "--set", "n_val=256", "--hidden-dims", "8,16", "--enc-out-dim", "32",
                "--latent-dims", "4", "--no-dashboard", "--verbose", "0"]
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
        exp = tmp_path / "nodes"
        deadline, victim = time.time() + 240, None
        while time.time() < deadline and victim is None and proc.poll() is None:
            for d in exp.glob("*/params.json"):
                rows = _rows(d.parent)
                if rows and rows[-1].get(NODE_ID) == worker.node_id and len(rows) < EPOCHS - 2:
                    victim = (d.parent, len(rows))
                    break
            time.sleep(0.2)
        assert victim is not None, "no trial reported an epoch on the worker node in time"
        cluster.remove_node(worker, allow_graceful=False)   # the node dies: raylet and its workers
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:]
        trials = sorted(p.parent for p in exp.glob("*/params.json"))
        assert len(trials) == 2, trials
        for d in trials:
            epochs = [r["training_iteration"] for r in _rows(d)]
            assert epochs[-1] == EPOCHS, (d.name, epochs)
            # never started over: the epochs only go up (a restore may repeat the epoch it resumed at)
            assert all(b >= a for a, b in zip(epochs, epochs[1:])), (d.name, epochs)
            assert epochs.count(1) == 1, (d.name, epochs)
        killed_dir, done_before = victim
        rows = _rows(killed_dir)
        nodes = [r[NODE_ID] for r in rows]
        assert nodes[0] == worker.node_id and nodes[-1] != worker.node_id   # finished on the survivor
        first_after = next(r["training_iteration"] for r in rows if r[NODE_ID] != worker.node_id)
        assert first_after >= done_before, (done_before, [r["training_iteration"] for r in rows])
        record = json.loads((exp / "study.json").read_text())
        assert record["status"] == "finished"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        cluster.shutdown()
