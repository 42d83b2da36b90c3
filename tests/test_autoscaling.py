"""Autoscaling rehearsed by Ray's own autoscaler on this machine (`make cluster-up AUTOSCALING=1`).

scripts/local_cluster.sh `autoscale` starts a head alone with Ray's fake multi-node provider:
Ray's real autoscaler reads a config derived from cluster.yaml's node types
(scripts/rehearsal_config.py) and launches each `gpu_worker` as a real raylet here, with
cluster.yaml's resources (4 CPUs, 1 GPU - logical: trials train on the CPU). A tiny study with
--gpus-per-trial 0.5 then shows what a researcher sees on `ray up cluster.yaml`: the study starts
with no worker and says so, workers are launched up to max_workers and no further, every trial
runs on them and finishes, and after the idle timeout the workers are gone.

The rehearsal caps max_workers at 2 (cluster.yaml: 4) so that 6 trials at half a GPU each ask
for more than the cap on a 2-core machine; the derivation itself is checked against cluster.yaml
without overrides. The cluster gets its own state dir, ports and token, and is stopped by its
recorded pid and session (never `ray stop`). PLVAE_SKIP_AUTOSCALING_TEST=1 skips the slow test.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import validate_config

from tune.reporting import ACCELERATOR, ASSIGNED_GPUS, NODE_ID

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "local_cluster.sh"
GPU_WORKER = "gpu_worker"
IDLE_TIMEOUT_MINUTES = 0.25     # cluster.yaml: 10; the autoscaler checks every second here
MAX_WORKERS = 2
TRIALS = 6                      # x 0.5 GPU = 3 GPUs wanted, MAX_WORKERS GPUs allowed
NO_GPU_NOTE = "note: the cluster has 0 GPUs now; trials wait until a GPU node joins"


def load_rehearsal_module():
    spec = importlib.util.spec_from_file_location("rehearsal_config", REPO / "scripts" / "rehearsal_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the rehearsal's config ---------------------------------------------------------------------

def test_rehearsal_config_is_cluster_yamls_node_types():
    cluster = yaml.safe_load((REPO / "cluster.yaml").read_text())
    rehearsal = load_rehearsal_module()
    config = rehearsal.rehearsal_config(cluster, "127.0.0.1:1234")
    validate_config(config)   # what the autoscaler itself runs on the file it is given
    assert config["provider"]["type"] == "fake_multinode"
    assert config["provider"]["gcs_address"] == "127.0.0.1:1234"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == cluster["available_node_types"][cluster["head_node_type"]]["resources"]
    assert head["resources"]["CPU"] == 0 and head["max_workers"] == 0
    for name, node_type in cluster["available_node_types"].items():
        if name == cluster["head_node_type"]:
            continue
        derived = config["available_node_types"][name]
        for key in ("resources", "min_workers", "max_workers"):
            assert derived[key] == node_type[key], (name, key)
        assert derived["node_config"] == {}   # instance types and spot are the cloud's
    assert config["available_node_types"][GPU_WORKER]["resources"]["GPU"] == 1
    assert config["max_workers"] == cluster["max_workers"]
    assert config["idle_timeout_minutes"] == cluster["idle_timeout_minutes"]

    shorter = rehearsal.rehearsal_config(cluster, "127.0.0.1:1234", idle_timeout_minutes=0.25,
                                         object_store_bytes=10**8, max_workers=2)
    validate_config(shorter)
    assert shorter["idle_timeout_minutes"] == 0.25 and shorter["max_workers"] == 2
    gpu = shorter["available_node_types"][GPU_WORKER]
    assert gpu["max_workers"] == 2 and gpu["resources"]["object_store_memory"] == 10**8
    assert {k: v for k, v in gpu["resources"].items() if k != "object_store_memory"} == \
        cluster["available_node_types"][GPU_WORKER]["resources"]


def test_rehearsal_config_cli_refuses_bad_overrides():
    for bad in (["--idle-timeout-minutes", "0"], ["--max-workers", "0"]):
        result = subprocess.run([sys.executable, "scripts/rehearsal_config.py", "--gcs-address", "127.0.0.1:1",
                                 *bad], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and "is invalid; allowed" in result.stderr, result.stderr


# --- the rehearsal ------------------------------------------------------------------------------

class Dashboard:
    def __init__(self, url: str, token: str):
        self.url, self.token = url, token

    def nodes(self) -> list[dict]:
        """Every node the GCS knows, dead ones included (the state API keeps them)."""
        request = urllib.request.Request(self.url + "/api/v0/nodes?detail=1&limit=10000")
        request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=20) as response:
            body = json.loads(response.read())
        return body["data"]["result"]["result"]


def workers(nodes: list[dict]) -> list[dict]:
    return [n for n in nodes if not n["is_head_node"]]


def alive(nodes: list[dict]) -> list[dict]:
    return [n for n in nodes if n["state"] == "ALIVE"]


def most_at_once(nodes: list[dict]) -> int:
    """The most worker nodes alive at the same moment, from their start and end times."""
    events = []
    for n in workers(nodes):
        events.append((n["start_time_ms"], 1))
        if n["state"] != "ALIVE":
            events.append((n["end_time_ms"], -1))
    most = running = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):   # an end before a start at one instant
        running += step
        most = max(most, running)
    return most


def session_members(sid: int) -> list[str]:
    """Live processes of the session (zombies are dead already: only their exit status is left,
    for a parent, or an init that reaps slowly in a container)."""
    found = subprocess.run(["ps", "-s", str(sid), "-o", "pid=,stat=,args="], capture_output=True, text=True)
    return [line for line in found.stdout.splitlines() if line.split()[1:2] and not line.split()[1].startswith("Z")]


@pytest.mark.skipif(os.environ.get("PLVAE_SKIP_AUTOSCALING_TEST") == "1",
                    reason="PLVAE_SKIP_AUTOSCALING_TEST=1")
@pytest.mark.timeout(420)
def test_autoscaler_launches_workers_for_a_study_and_removes_them_when_idle(tmp_path):
    started_at = time.monotonic()
    state_dir = Path(tempfile.mkdtemp(prefix="pas-", dir="/tmp"))   # short: Ray's socket paths
    token_file = tmp_path / "token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    gcs, dashboard_port = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PLVAE_CLUSTER_DIR": str(state_dir),
        "PLVAE_CLUSTER_PORT": str(gcs),
        "PLVAE_DASHBOARD_PORT": str(dashboard_port),
        "PLVAE_CLIENT_PORT": str(free_port()),
        "PLVAE_OBJECT_STORE_BYTES": str(200 * 1024**2),
        "PLVAE_IDLE_TIMEOUT_MINUTES": str(IDLE_TIMEOUT_MINUTES),
        "PLVAE_MAX_WORKERS": str(MAX_WORKERS),
        "AUTOSCALER_METRIC_PORT": str(free_port()),
        "DASHBOARD_METRIC_PORT": str(free_port()),
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    run = lambda command, timeout: subprocess.run(["bash", str(SCRIPT), command], env=env, cwd=REPO,  # noqa: E731
                                                  text=True, capture_output=True, timeout=timeout)
    head_pid = None
    try:
        up = run("autoscale", 180)
        assert up.returncode == 0, up.stdout + up.stderr
        head_pid = int((state_dir / "head.pid").read_text())
        dashboard = Dashboard(f"http://127.0.0.1:{dashboard_port}", token_file.read_text())
        config = json.loads((state_dir / "autoscaling.json").read_text())
        assert config["available_node_types"][GPU_WORKER]["max_workers"] == MAX_WORKERS

        # The study starts while the cluster is the head alone (0 CPUs, 0 GPUs).
        assert len(alive(dashboard.nodes())) == 1
        study_fields = tmp_path / "study.yaml"
        study_fields.write_text("reuse_actors: false\n")
        storage = tmp_path / "results"
        command = [sys.executable, "tune/run_study.py", "--address", f"127.0.0.1:{gcs}",
                   "--config", str(study_fields), "--variants", "vae,powerlaw_clamp,powerlaw",
                   "--gammas", "0.5", "--seeds", "0,1", "--epochs", "2", "--n-train", "256", "--n-val", "128",
                   "--scheduler", "fifo", "--cpus-per-trial", "1", "--gpus-per-trial", "0.5", "--allow-cpu-fallback",
                   "--storage-path", str(storage), "--study-name", "autoscaled", "--shared-storage"]
        study_start_ms = time.time() * 1000
        study = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        study_end = time.monotonic()
        output = study.stdout + study.stderr
        assert study.returncode == 0, output[-4000:]
        assert NO_GPU_NOTE in output, output[:2000]
        assert "CPU fallback (--allow-cpu-fallback)" in study.stdout, study.stdout[-2000:]   # logical GPUs

        # The autoscaler launched gpu_worker nodes after the study began, never more than the cap.
        nodes = dashboard.nodes()
        launched = workers(nodes)
        assert launched, "the autoscaler launched no node"
        assert all(n["start_time_ms"] >= study_start_ms for n in launched)
        assert all(n["resources_total"].get("GPU") == 1 and n["resources_total"].get("CPU") == 4
                   for n in launched), launched
        assert most_at_once(nodes) == MAX_WORKERS, [(n["start_time_ms"], n["end_time_ms"]) for n in launched]

        # Every trial ran on a launched worker, with half a (logical) GPU, and finished.
        study_dir = storage / "autoscaled"
        assert json.loads((study_dir / "study.json").read_text())["status"] == "finished"
        finals = []
        for path in glob.glob(str(study_dir / "*" / "result.json")):
            rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
            assert len(rows) == 2, path
            finals.append(rows[-1])
        assert len(finals) == TRIALS
        worker_ids = {n["node_id"] for n in launched}
        assert {r[NODE_ID] for r in finals} <= worker_ids
        assert len({r[NODE_ID] for r in finals}) >= 2, "the trials used one node only"
        assert {r[ASSIGNED_GPUS] for r in finals} == {0.5} and {r[ACCELERATOR] for r in finals} == {"cpu"}

        # After the idle timeout the workers are gone, and the head stays.
        deadline = time.monotonic() + IDLE_TIMEOUT_MINUTES * 60 + 60
        while workers(alive(dashboard.nodes())) and time.monotonic() < deadline:
            time.sleep(1)
        nodes = dashboard.nodes()
        assert not workers(alive(nodes)), "workers outlived the idle timeout"
        assert len(alive(nodes)) == 1 and alive(nodes)[0]["is_head_node"]
        print(f"\nautoscaling rehearsal: {len(launched)} workers launched, at most {most_at_once(nodes)} "
              f"at once; study {study_end - started_at:.0f} s after start; workers gone "
              f"{time.monotonic() - study_end:.0f} s after it ended; total {time.monotonic() - started_at:.0f} s")
    finally:
        stopped = run("stop", 120)
        left = session_members(head_pid) if head_pid else []
        shutil.rmtree(state_dir, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not left, f"processes of the rehearsal outlived `stop`: {left}"
