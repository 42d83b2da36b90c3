#!/usr/bin/env bash
# Rehearse a cluster run on one machine: a real two-node Ray cluster (a head and a worker, each
# started by `ray start`) so `python tune/run_study.py --address ...` schedules trials across nodes
# exactly as it does on `ray up cluster.yaml` - token authentication, dashboard and all.
#
#   bash scripts/local_cluster.sh start      # or: make cluster-up
#   bash scripts/local_cluster.sh autoscale  # or: make cluster-up AUTOSCALING=1
#   bash scripts/local_cluster.sh status
#   bash scripts/local_cluster.sh stop       # or: make cluster-down
#
# `autoscale` rehearses autoscaling instead: a head alone, run by Ray's real autoscaler with Ray's
# fake multi-node provider (RAY_FAKE_CLUSTER=1), configured from cluster.yaml's own node types
# (scripts/rehearsal_config.py): a head with cluster.yaml's resources (0 CPUs), and `gpu_worker`
# nodes, each a real raylet on this machine with cluster.yaml's resources (4 CPUs, 1 logical GPU:
# trials train on the CPU), launched when trials wait and removed after the idle timeout.
#
# Settings (environment; defaults in brackets):
#   PLVAE_CLUSTER_DIR      state: pid files, logs, each node's Ray temp dir [/tmp/plvae-cluster-<uid>]:
#                          an absolute path of at most 36 characters (Ray's unix sockets live under
#                          it, capped at 107 bytes); new, empty, or made by this script; yours
#   PLVAE_CLUSTER_PORT     the head's GCS port, the address drivers connect to [6379]
#   PLVAE_DASHBOARD_PORT   the dashboard, bound to 127.0.0.1 only [8265]
#   PLVAE_CLIENT_PORT      the head's Ray Client server (ray://; `ray start` always runs one) [10001]
#   PLVAE_HEAD_CPUS / PLVAE_WORKER_CPUS   logical CPUs each node offers to trials [1 / 1] (`start`)
#   PLVAE_WORKER_GPUS      GPUs the worker offers [all it detects]; the head offers none, as on
#                          cluster.yaml's CPU head (two nodes must not both claim one GPU) (`start`)
#   PLVAE_OBJECT_STORE_BYTES              object store size of each node [1000000000]
#   RAY_AUTH_TOKEN_PATH    a token file to use instead of Ray's default ~/.ray/auth_token
#   PLVAE_VENV             the venv whose ray and python are used when `ray` is not on PATH [.venv
#                          next to scripts/, what `make setup` makes], so a fresh shell needs no activation
#   `autoscale` only:
#   PLVAE_IDLE_TIMEOUT_MINUTES    idle workers are removed after this [cluster.yaml's idle_timeout_minutes]
#   PLVAE_MAX_WORKERS             at most this many workers [cluster.yaml's max_workers]
#   AUTOSCALER_UPDATE_INTERVAL_S  how often the autoscaler looks (Ray's own setting) [1; Ray's default is 5]
#
# Why it looks the way it does:
# - Each node is a `ray start --block` process in the background, the leader of its own session
#   (setsid); its pid is recorded, and `stop` sends it SIGTERM, on which Ray tears down that
#   node's processes, then kills what is left of that session (this user's processes only; a
#   session id cannot be reused while any process of it lives). The nodes the fake provider
#   launches are children of the head's autoscaler, so they are in the head's session. Nothing is
#   found by matching command lines, and `ray stop` is never used: it kills every Ray process on
#   the machine, other people's clusters included.
# - PLVAE_CLUSTER_DIR is checked before anything in it is created or removed: only what an earlier
#   run of this script left there (it marks the directory with a .plvae-cluster file) is deleted.
# - Each node gets its own --temp-dir and random internal ports, so two raylets coexist.
# - Ray 2.60 refuses a node that connects without the cluster's token unless every node runs with
#   RAY_AUTH_MODE=token; the token is read from RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, which
#   scripts/ray_token.py creates 0600 in a 0700 ~/.ray (Ray's own generator uses the umask: 0644).
# - The dashboard (HTTP: job submission = running code) listens on 127.0.0.1 only. Ray itself
#   will not bind a multi-node cluster's GCS and raylets to loopback: `ray start` replaces
#   127.0.0.1 by the machine's routable address (ray._private.services.resolve_ip_for_localhost)
#   and loopback-only binding is reserved for single-node Ray. Those gRPC ports accept only
#   callers that present the token.
set -euo pipefail

STATE_DIR="${PLVAE_CLUSTER_DIR:-/tmp/plvae-cluster-$(id -u)}"
GCS_PORT="${PLVAE_CLUSTER_PORT:-6379}"
DASHBOARD_PORT="${PLVAE_DASHBOARD_PORT:-8265}"
CLIENT_PORT="${PLVAE_CLIENT_PORT:-10001}"
HEAD_CPUS="${PLVAE_HEAD_CPUS:-1}"
WORKER_CPUS="${PLVAE_WORKER_CPUS:-1}"
WORKER_GPUS=()
if [[ -n "${PLVAE_WORKER_GPUS:-}" ]]; then WORKER_GPUS=(--num-gpus="$PLVAE_WORKER_GPUS"); fi
OBJECT_STORE_BYTES="${PLVAE_OBJECT_STORE_BYTES:-1000000000}"
START_TIMEOUT_S=90
NODES=(head worker)
MARKER=".plvae-cluster"   # this script made the state dir, so the last run's state in it may go
MAX_STATE_DIR_CHARS=36
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0
# Multi-node on one machine is Linux's default; macOS needs it said.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1
# On SIGTERM a node tears down at once instead of first draining for up to 30 s (there is nothing
# to hand over in a rehearsal).
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0

die() { echo "local_cluster: $*" >&2; exit 1; }

check_state_dir() {  # before anything is created in, or removed from, STATE_DIR
    local bad="PLVAE_CLUSTER_DIR=$STATE_DIR is invalid"
    [[ "$STATE_DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] \
        || die "$bad; allowed: an absolute path of letters, digits and . _ - /"
    [[ "$STATE_DIR/" != *"/../"* && "$STATE_DIR/" != *"/./"* && "$STATE_DIR" != *//* ]] \
        || die "$bad; allowed: a path without . or .. components or doubled slashes"
    [[ "$STATE_DIR" =~ ^/[^/]+/[^/]+ ]] \
        || die "$bad; allowed: a directory at least two levels below / (e.g. /tmp/plvae-cluster)"
    [[ "${STATE_DIR%/}" != "${HOME%/}" ]] || die "$bad; allowed: a directory other than your home"
    (( ${#STATE_DIR} <= MAX_STATE_DIR_CHARS )) \
        || die "$bad; allowed: at most $MAX_STATE_DIR_CHARS characters (Ray's socket paths under it are capped at 107 bytes)"
    if [[ -e "$STATE_DIR" || -L "$STATE_DIR" ]]; then
        [[ -d "$STATE_DIR" && ! -L "$STATE_DIR" ]] \
            || die "$bad: not a directory, or a symbolic link; allowed: a directory"
        [[ -O "$STATE_DIR" ]] || die "$bad: it belongs to another user; allowed: a directory of yours"
        if [[ ! -f "$STATE_DIR/$MARKER" && -n "$(ls -A "$STATE_DIR")" ]]; then
            die "$bad: it holds files this script did not make (no $MARKER); allowed: a new or empty directory"
        fi
    fi
}

pid_of() {  # the recorded pid of NODE (digits only), or nothing
    local pid
    pid="$(cat "$STATE_DIR/$1.pid" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]]; then echo "$pid"; fi
}

alive() {  # alive NODE: the recorded `ray start --block` of NODE still runs. The recorded pid is
    local pid   # checked (this user's, and its own command line names this node's temp dir), so a
    pid="$(pid_of "$1")"   # stale pid file never points this script at another process.
    [[ -n "$pid" ]] || return 1
    [[ "$(ps -o uid= -p "$pid" 2>/dev/null | tr -d ' ')" == "$(id -u)" ]] || return 1
    ps -ww -o args= -p "$pid" 2>/dev/null | grep -qF -- "--temp-dir=$STATE_DIR/$1 "
}

token_file() {
    if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        echo "$RAY_AUTH_TOKEN_PATH"
    else
        echo "$HOME/.ray/auth_token"
    fi
}

ensure_token() {  # the token exists and is private: 0600, in a 0700 ~/.ray (scripts/ray_token.py)
    local file
    file="$(token_file)"
    if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" && ! -s "$file" ]]; then
        die "RAY_AUTH_TOKEN_PATH=$file: the file is missing or empty; allowed: a file holding a token, or unset it to use ~/.ray/auth_token"
    fi
    # Made here, never by `ray get-auth-token --generate`, which writes it with the umask (0644).
    python "$SCRIPT_DIR/ray_token.py" --create >/dev/null || die "the token file $file cannot be made private"
}

launch() {  # launch NODE ARGS...: `ray start --block ARGS` in the background, its pid recorded
    local node="$1"
    shift
    local log="$STATE_DIR/$node.log"
    # The subshell writes its own pid, then becomes `ray start` (exec), so the pid is Ray's.
    # setsid (Linux) detaches it from this terminal's session; nohup survives the terminal closing.
    local detach=()
    if command -v setsid >/dev/null 2>&1; then detach=(setsid); fi
    ${detach[@]+"${detach[@]}"} nohup bash -c 'echo $$ > "$0"; exec "$@"' "$STATE_DIR/$node.pid" \
        ray start --block --temp-dir="$STATE_DIR/$node" \
        --object-store-memory="$OBJECT_STORE_BYTES" --dashboard-agent-listen-port=0 \
        --disable-usage-stats "$@" </dev/null >"$log" 2>&1 &
    local deadline=$((SECONDS + START_TIMEOUT_S))
    until grep -q "Ray runtime started" "$log" 2>/dev/null; do
        if (( SECONDS > deadline )) || { [[ -s "$STATE_DIR/$node.pid" ]] && ! alive "$node"; }; then
            echo "local_cluster: the $node node did not start; the end of $log:" >&2
            tail -n 25 "$log" >&2 || true
            stop_nodes
            exit 1
        fi
        sleep 0.5
    done
}

stop_nodes() {
    # SIGTERM to each node's recorded `ray start --block`: it stops its node's processes.
    local node pid sid ours=() sessions=()
    for node in worker head; do
        if alive "$node"; then
            pid="$(pid_of "$node")"
            ours+=("$node")
            # The session it leads (setsid): the rest of its node, and any nodes its autoscaler launched.
            sid="$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')"
            if [[ "$sid" == "$pid" ]]; then sessions+=("$sid"); fi
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    local deadline=$((SECONDS + 30))
    for node in ${ours[@]+"${ours[@]}"}; do
        pid="$(pid_of "$node")"
        while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    # Stragglers: what is left in those sessions, this user's processes only.
    local leftovers=""
    for sid in ${sessions[@]+"${sessions[@]}"}; do
        leftovers+=" $(pgrep -u "$(id -u)" -s "$sid" || true)"
    done
    if [[ -n "${leftovers// /}" ]]; then
        # shellcheck disable=SC2086
        kill -KILL $leftovers 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/head.pid" "$STATE_DIR/worker.pid"
}

use_project_venv() {  # from a fresh shell: the project's venv (make setup), when `ray` is not on PATH
    local venv="${PLVAE_VENV:-$SCRIPT_DIR/../.venv}"
    if ! command -v ray >/dev/null 2>&1 && [[ -x "$venv/bin/ray" && -x "$venv/bin/python" ]]; then
        PATH="$(cd "$venv/bin" && pwd):$PATH"
        export PATH
    fi
}

need_tools() {
    command -v ray >/dev/null 2>&1 || die "'ray' is not on PATH nor in ${PLVAE_VENV:-$SCRIPT_DIR/../.venv}/bin; allowed: run 'make setup' (or 'make cluster-up'), activate the project's venv, or set PLVAE_VENV"
    command -v python >/dev/null 2>&1 || die "'python' is not on PATH; allowed: run 'make cluster-up', or activate the project's venv"
}

prepare_state_dir() {  # STATE_DIR checked, made private, and emptied of the last run's state only
    local node
    check_state_dir
    for node in "${NODES[@]}"; do
        if alive "$node"; then
            die "already running (the $node node, pid $(pid_of "$node")); allowed: 'stop' first, or PLVAE_CLUSTER_DIR=<another dir> with other ports"
        fi
    done
    mkdir -p -m 700 "$STATE_DIR"
    chmod 700 "$STATE_DIR"
    touch "$STATE_DIR/$MARKER"
    rm -rf "${STATE_DIR:?}/head" "${STATE_DIR:?}/worker" "$STATE_DIR"/*.log "$STATE_DIR"/*.pid \
        "$STATE_DIR/autoscaling.json" "$STATE_DIR/mode"
}

start() {
    need_tools
    prepare_state_dir
    echo two-node > "$STATE_DIR/mode"
    ensure_token

    echo "Starting the head node (GCS port $GCS_PORT, dashboard 127.0.0.1:$DASHBOARD_PORT) ..."
    launch head --head --port="$GCS_PORT" --num-cpus="$HEAD_CPUS" --num-gpus=0 \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
        --ray-client-server-port="$CLIENT_PORT"
    echo "Starting the worker node ..."
    launch worker --address="127.0.0.1:$GCS_PORT" --num-cpus="$WORKER_CPUS" \
        ${WORKER_GPUS[@]+"${WORKER_GPUS[@]}"}

    cat <<EOF

A two-node Ray cluster is up (state, logs and pids in $STATE_DIR).
  Address for drivers:  127.0.0.1:$GCS_PORT
  Dashboard:            http://127.0.0.1:$DASHBOARD_PORT  (token authentication on)
  Auth token:           $(token_file)
                        the dashboard asks for it once: paste the output of 'ray get-auth-token'.
                        HTTP clients send 'Authorization: Bearer <token>'.

Run a study on it (trials spread over both nodes; --shared-storage: the local results folder is
shared by both nodes, as they are on one machine):
  RAY_AUTH_MODE=token python tune/run_study.py --address 127.0.0.1:$GCS_PORT --storage-path results --shared-storage [options]
Cluster state:  bash scripts/local_cluster.sh status
Stop it:        make cluster-down   (or: bash scripts/local_cluster.sh stop)
EOF
}

autoscale() {
    need_tools
    prepare_state_dir
    echo autoscaling > "$STATE_DIR/mode"
    ensure_token
    local config="$STATE_DIR/autoscaling.json" overrides=()
    if [[ -n "${PLVAE_IDLE_TIMEOUT_MINUTES:-}" ]]; then overrides+=(--idle-timeout-minutes "$PLVAE_IDLE_TIMEOUT_MINUTES"); fi
    if [[ -n "${PLVAE_MAX_WORKERS:-}" ]]; then overrides+=(--max-workers "$PLVAE_MAX_WORKERS"); fi
    python "$SCRIPT_DIR/rehearsal_config.py" --cluster-yaml "$SCRIPT_DIR/../cluster.yaml" \
        --gcs-address "127.0.0.1:$GCS_PORT" --object-store-bytes "$OBJECT_STORE_BYTES" \
        ${overrides[@]+"${overrides[@]}"} > "$config" || die "cannot derive the rehearsal config from cluster.yaml"
    local head_cpus head_gpus
    read -r head_cpus head_gpus < <(python -c 'import json, sys
c = json.load(open(sys.argv[1]))
r = c["available_node_types"][c["head_node_type"]]["resources"]
print(int(r.get("CPU", 0)), int(r.get("GPU", 0)))' "$config")

    echo "Starting the head node with Ray's autoscaler (fake multi-node provider; GCS port $GCS_PORT) ..."
    # The autoscaler runs in this head's session and inherits these; it starts the nodes it launches.
    export RAY_FAKE_CLUSTER=1
    export AUTOSCALER_UPDATE_INTERVAL_S="${AUTOSCALER_UPDATE_INTERVAL_S:-1}"
    launch head --head --port="$GCS_PORT" --num-cpus="$head_cpus" --num-gpus="$head_gpus" \
        --autoscaling-config="$config" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
        --ray-client-server-port="$CLIENT_PORT"

    cat <<EOF

An autoscaling Ray cluster is up: the head alone ($head_cpus CPUs), and Ray's autoscaler, which
adds nodes of cluster.yaml's worker types while trials wait and removes them when idle
(state, logs and pids in $STATE_DIR; the autoscaler's config: $config).
  Address for drivers:  127.0.0.1:$GCS_PORT
  Dashboard:            http://127.0.0.1:$DASHBOARD_PORT  (token authentication on)
  Auth token:           $(token_file)

Run a study on it (the GPUs are logical: trials train on the CPU):
  RAY_AUTH_MODE=token python tune/run_study.py --address 127.0.0.1:$GCS_PORT --gpus-per-trial 0.5 --allow-cpu-fallback --storage-path results --shared-storage [options]
Watch it scale: bash scripts/local_cluster.sh status
Stop it:        make cluster-down   (or: bash scripts/local_cluster.sh stop)
EOF
}

status() {
    local node mode
    mode="$(cat "$STATE_DIR/mode" 2>/dev/null || echo two-node)"
    if [[ "$mode" == autoscaling ]]; then
        if alive head; then echo "head: running (pid $(pid_of head)), autoscaling"; else echo "head: not running"; fi
    else
        for node in "${NODES[@]}"; do
            if alive "$node"; then echo "$node: running (pid $(pid_of "$node"))"; else echo "$node: not running"; fi
        done
    fi
    if alive head; then
        need_tools
        ray status --address="127.0.0.1:$GCS_PORT"
    fi
}

use_project_venv
case "${1:-}" in
    start) start ;;
    autoscale) autoscale ;;
    stop) check_state_dir; stop_nodes; echo "Stopped the local cluster in $STATE_DIR." ;;
    status) status ;;
    *) die "usage: $0 start|autoscale|stop|status (got '${1:-}')" ;;
esac
