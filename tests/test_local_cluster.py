"""The cluster rehearsal: a real two-node Ray cluster on this machine (scripts/local_cluster.sh,
`make cluster-up`), a tiny study submitted to it with --address, and the dashboard's HTTP API
watched while the study runs - what a researcher does on `ray up cluster.yaml`, minus the cloud.

The cluster gets its own state dir and free ports, and is stopped by its own pids (never
`ray stop`, which would kill every Ray on the machine), so it coexists with other Ray instances.
"""
from __future__ import annotations

import glob
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
from dataclasses import dataclass
from pathlib import Path

import pytest

from tune.trainable import NODE_ID

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "local_cluster.sh"
TRIAL_ACTOR = "ImplicitFunc"  # the actor class Ray Tune runs a function trainable in


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    address: str      # HOST:PORT for drivers
    dashboard: str    # http://127.0.0.1:PORT
    token: str
    env: dict         # what a driver of this cluster runs with
    state_dir: Path

    def get(self, path: str, token: str | None = "default") -> tuple[int, dict | str]:
        """GET a dashboard path; (status, JSON or text)."""
        request = urllib.request.Request(self.dashboard + path)
        token = self.token if token == "default" else token
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def state(self, resource: str) -> list[dict]:
        """The state API's listing (what `ray list nodes/actors` shows), all entries."""
        status, body = self.get(f"/api/v0/{resource}?detail=1&limit=10000")
        assert status == 200, body
        return body["data"]["result"]["result"]


def run_script(command: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=timeout)


def our_processes(state_dir: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-f", "-a", f"{state_dir}/(head|worker)"],
                           capture_output=True, text=True)
    return found.stdout.splitlines()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # A short state dir: Ray's unix sockets live under it (paths are capped at 107 bytes).
    state_dir = Path(tempfile.mkdtemp(prefix="plc-", dir="/tmp"))
    token_file = tmp_path_factory.mktemp("auth") / "token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    gcs, dashboard = free_port(), free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PLVAE_CLUSTER_DIR": str(state_dir),
        "PLVAE_CLUSTER_PORT": str(gcs),
        "PLVAE_DASHBOARD_PORT": str(dashboard),
        "PLVAE_CLIENT_PORT": str(free_port()),
        "PLVAE_OBJECT_STORE_BYTES": str(300 * 1024**2),
        # Metrics servers elsewhere on this machine may hold Ray's fixed default ports.
        "AUTOSCALER_METRIC_PORT": str(free_port()),
        "DASHBOARD_METRIC_PORT": str(free_port()),
        "RAY_AUTH_TOKEN_PATH": str(token_file),  # not ~/.ray/auth_token: this test's own token
        "RAY_AUTH_MODE": "token",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    try:
        started = run_script("start", env, timeout=240)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"127.0.0.1:{gcs}" in started.stdout and f"http://127.0.0.1:{dashboard}" in started.stdout
        yield Cluster(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", token_file.read_text(),
                      env, state_dir)
    finally:
        stopped = run_script("stop", env, timeout=120)
        left = our_processes(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not left, f"processes of the cluster outlived `stop`: {left}"


def alive_nodes(cluster: Cluster) -> list[dict]:
    return [n for n in cluster.state("nodes") if n["state"] == "ALIVE"]


def test_dashboard_lists_both_nodes_with_the_token_only(cluster):
    nodes = alive_nodes(cluster)
    assert len(nodes) == 2 and sum(n["is_head_node"] for n in nodes) == 1, nodes
    assert all(n["resources_total"].get("CPU") == 1 for n in nodes)
    # The endpoint behind the dashboard's Cluster page agrees.
    status, summary = cluster.get("/nodes?view=summary")
    assert status == 200
    assert {n["raylet"]["nodeId"] for n in summary["data"]["summary"]} == {n["node_id"] for n in nodes}

    # Token authentication is on: no token -> 401, a wrong one -> 403.
    assert cluster.get("/api/v0/nodes", token=None)[0] == 401
    assert cluster.get("/api/v0/nodes", token=secrets.token_hex(32))[0] == 403
    # The dashboard listens on loopback only: not on the address the nodes use for each other.
    routable = nodes[0]["node_ip"]
    if routable != "127.0.0.1":
        port = int(cluster.dashboard.rsplit(":", 1)[1])
        with pytest.raises(OSError), socket.create_connection((routable, port), timeout=5):
            pass

    # `status` reports both nodes (through `ray status`, which needs the token too).
    status = run_script("status", cluster.env, timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "head: running" in status.stdout and "worker: running" in status.stdout
    assert "Autoscaler status" in status.stdout, status.stdout
    # From a fresh shell (README writes `bash scripts/local_cluster.sh status` with no venv active):
    # no ray on PATH, the script finds the project's venv itself (PLVAE_VENV; default .venv beside
    # scripts/, which `make setup` makes; here the venv running these tests).
    fresh = {**cluster.env, "PATH": "/usr/bin:/bin", "PLVAE_VENV": str(Path(sys.executable).parent.parent)}
    assert not shutil.which("ray", path=fresh["PATH"]), "the fresh shell must lack ray for this check"
    status = run_script("status", fresh, timeout=120)
    assert status.returncode == 0 and "Autoscaler status" in status.stdout, status.stdout + status.stderr
    missing = run_script("status", {**fresh, "PLVAE_VENV": "/nonexistent"}, timeout=60)
    assert missing.returncode != 0 and "make setup" in missing.stderr, missing.stdout + missing.stderr
    # A second `start` refuses instead of clobbering the running cluster.
    again = run_script("start", cluster.env, timeout=60)
    assert again.returncode != 0 and "already running" in again.stderr


@pytest.mark.timeout(300)
def test_study_runs_trials_on_both_nodes_and_the_dashboard_shows_them(cluster, tmp_path):
    storage = tmp_path / "results"
    # One actor per trial (no actor reuse), so the two trials start together, one per node
    # (each node offers one CPU): a placement the test can rely on.
    study_fields = tmp_path / "study.yaml"
    study_fields.write_text("reuse_actors: false\n")
    command = [sys.executable, "tune/run_study.py", "--address", cluster.address,
               "--config", str(study_fields), "--variants", "vae,powerlaw_clamp", "--gammas", "0.5",
               "--seeds", "0", "--epochs", "3", "--n-train", "256", "--n-val", "128",
               "--scheduler", "fifo", "--cpus-per-trial", "1",
               "--storage-path", str(storage), "--study-name", "rehearsal",
               "--shared-storage"]  # a local path both nodes of this one machine share
    log = tmp_path / "study.log"
    seen_alive: dict[str, dict] = {}  # actor id -> the trial actor, as listed while it ran
    with open(log, "w") as out:
        study = subprocess.Popen(command, cwd=REPO, env=cluster.env, stdout=out,
                                 stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while study.poll() is None and time.monotonic() < deadline:
                for actor in cluster.state("actors"):
                    if actor["class_name"] == TRIAL_ACTOR and actor["state"] == "ALIVE":
                        seen_alive[actor["actor_id"]] = actor
                time.sleep(0.25)
        finally:
            if study.poll() is None:
                study.kill()
            study.wait(timeout=30)
    output = log.read_text()
    assert study.returncode == 0, output[-4000:]

    # While the study ran, the dashboard listed its trial actors, on both nodes.
    node_ids = {n["node_id"] for n in alive_nodes(cluster)}
    assert seen_alive, f"no running {TRIAL_ACTOR} actor was ever listed"
    assert {a["node_id"] for a in seen_alive.values()} <= node_ids

    # The results: every trial finished, and the trials ran on two different nodes.
    study_dir = storage / "rehearsal"
    assert json.loads((study_dir / "study.json").read_text())["status"] == "finished"
    results = {}
    for path in glob.glob(str(study_dir / "*" / "result.json")):
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
        assert len(rows) == 3, path  # one report per epoch
        results[path] = rows[-1]
    assert len(results) == 2
    trial_nodes = {r[NODE_ID] for r in results.values()}
    assert len(trial_nodes) == 2 and trial_nodes <= node_ids, trial_nodes
    # ... and the actors the dashboard showed are the ones that produced those results.
    assert {r["pid"] for r in results.values()} <= {a["pid"] for a in seen_alive.values()}


# --- stop and the state dir: no Ray needed ------------------------------------------------------

def script_env(state_dir, **extra) -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PLVAE_CLUSTER_DIR": str(state_dir), **extra}


@pytest.mark.parametrize("bad, why", [
    ("relative/dir", "absolute path"), ("/", "absolute path"), ("/tmp", "two levels"),
    ("/tmp/a/../b", "without . or .."), ("/tmp/" + "x" * 40, "at most 36 characters"),
    ("/tmp/a b", "absolute path"),
])
def test_a_bad_state_dir_is_refused_before_anything_is_removed(bad, why):
    for command in ("start", "autoscale", "stop"):
        result = run_script(command, script_env(bad), timeout=60)
        assert result.returncode != 0 and why in result.stderr, (command, result.stderr)


def test_a_foreign_or_linked_state_dir_is_left_untouched(tmp_path):
    foreign = Path(tempfile.mkdtemp(prefix="plf-", dir="/tmp"))
    link = Path(f"/tmp/pll-{secrets.token_hex(3)}")
    try:
        (foreign / "head").mkdir()
        (foreign / "head" / "precious").write_text("not the script's")
        (foreign / "notes.log").write_text("mine")
        for command in ("start", "autoscale"):
            result = run_script(command, script_env(foreign), timeout=60)
            assert result.returncode != 0 and "did not make" in result.stderr, result.stderr
        assert (foreign / "head" / "precious").exists() and (foreign / "notes.log").exists()
        link.symlink_to(foreign)
        result = run_script("start", script_env(link), timeout=60)
        assert result.returncode != 0 and "symbolic link" in result.stderr, result.stderr
        assert (foreign / "head" / "precious").exists()
    finally:
        link.unlink(missing_ok=True)
        shutil.rmtree(foreign, ignore_errors=True)


def test_stop_kills_only_the_recorded_pids():
    state_dir = Path(tempfile.mkdtemp(prefix="pls-", dir="/tmp"))
    (state_dir / ".plvae-cluster").touch()
    # A process whose command line names this cluster's head temp dir, but which the script did
    # not start (not recorded): matching command lines would have killed it.
    lookalike = subprocess.Popen(["bash", "-c", f'exec -a "raylet --session-dir={state_dir}/head/session_x" sleep 120'])
    # A recorded pid that is not a node of this cluster (a stale pid file, the pid reused).
    stranger = subprocess.Popen(["sleep", "120"])
    (state_dir / "worker.pid").write_text(str(stranger.pid))
    try:
        result = run_script("stop", script_env(state_dir), timeout=60)
        assert result.returncode == 0, result.stderr
        time.sleep(0.5)
        assert lookalike.poll() is None and stranger.poll() is None
    finally:
        for p in (lookalike, stranger):
            p.kill()
            p.wait(timeout=10)
        shutil.rmtree(state_dir, ignore_errors=True)


# --- the token file (scripts/ray_token.py) ------------------------------------------------------

def run_token_helper(home: Path, *args, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    return subprocess.run([sys.executable, "scripts/ray_token.py", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=60, env={**clean, "HOME": str(home), **env})


def test_the_token_is_created_private_and_an_existing_one_tightened(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    token = home / ".ray" / "auth_token"
    assert run_token_helper(home).stdout.strip() == "" and not token.exists()  # no --create: nothing made
    made = run_token_helper(home, "--create")
    assert made.returncode == 0 and made.stdout.strip() == str(token), made.stderr
    assert token.stat().st_mode & 0o777 == 0o600 and token.parent.stat().st_mode & 0o777 == 0o700
    assert len(token.read_text()) == 64
    before = token.read_text()
    # What `ray get-auth-token --generate` or a plain local ray.init() leave behind: 0644 in 0755.
    token.chmod(0o644)
    token.parent.chmod(0o755)
    assert run_token_helper(home).returncode == 0
    assert token.stat().st_mode & 0o777 == 0o600 and token.parent.stat().st_mode & 0o777 == 0o700
    assert token.read_text() == before   # tightened, never replaced
    # A file named by RAY_AUTH_TOKEN_PATH is tightened too; a symlink is refused.
    named = tmp_path / "named_token"
    named.write_text("x" * 64)
    named.chmod(0o664)
    assert run_token_helper(home, RAY_AUTH_TOKEN_PATH=str(named)).returncode == 0
    assert named.stat().st_mode & 0o777 == 0o600
    link = tmp_path / "link_token"
    link.symlink_to(named)
    refused = run_token_helper(home, RAY_AUTH_TOKEN_PATH=str(link))
    assert refused.returncode == 1 and "symbolic link" in refused.stderr
