#!/usr/bin/env bash
# Rehearse a cluster run on one machine: a real two-node Ray cluster (a head and a worker, each
# started by `ray start`) so `python tune/run_study.py --address ...` schedules trials across nodes
# exactly as it does on `ray up cluster.yaml` - token authentication, dashboard and all.
#
#   bash scripts/local_cluster.sh start     # or: make cluster-up
#   bash scripts/local_cluster.sh status
#   bash scripts/local_cluster.sh stop      # or: make cluster-down
#
# Settings (environment; defaults in brackets):
#   PLVAE_CLUSTER_DIR      state: pid files, logs, each node's Ray temp dir [/tmp/plvae-cluster-<uid>]
#                          (keep it short: Ray's unix sockets live under it, and paths are capped at 107 bytes)
#   PLVAE_CLUSTER_PORT     the head's GCS port, the address drivers connect to [6379]
#   PLVAE_DASHBOARD_PORT   the dashboard, bound to 127.0.0.1 only [8265]
#   PLVAE_CLIENT_PORT      the head's Ray Client server (ray://; `ray start` always runs one) [10001]
#   PLVAE_HEAD_CPUS / PLVAE_WORKER_CPUS   logical CPUs each node offers to trials [1 / 1]
#   PLVAE_WORKER_GPUS      GPUs the worker offers [all it detects]; the head offers none, as on
#                          cluster.yaml's CPU head (two nodes must not both claim one GPU)
#   PLVAE_OBJECT_STORE_BYTES              object store size of each node [1000000000]
#   RAY_AUTH_TOKEN_PATH    a token file to use instead of Ray's default ~/.ray/auth_token
#
# Why it looks the way it does:
# - Each node is a `ray start --block` process in the background; its pid is recorded, and `stop`
#   sends it SIGTERM, on which Ray tears down that node's processes (and the kernel kills any
#   left, since Ray makes them share the fate of that process). `ray stop` is never used: it kills
#   every Ray process on the machine, other people's clusters included.
# - Each node gets its own --temp-dir and random internal ports, so two raylets coexist.
# - Ray 2.60 refuses a node that connects without the cluster's token unless every node runs with
#   RAY_AUTH_MODE=token; the token is read from RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.
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

export RAY_AUTH_MODE=token
export RAY_USAGE_STATS_ENABLED=0
# Multi-node on one machine is Linux's default; macOS needs it said.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1
# On SIGTERM a node tears down at once instead of first draining for up to 30 s (there is nothing
# to hand over in a rehearsal).
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0

die() { echo "local_cluster: $*" >&2; exit 1; }

pid_of() { cat "$STATE_DIR/$1.pid" 2>/dev/null || true; }

alive() {  # alive NODE: its `ray start --block` process still runs (checked by its command
    local pid   # line too, so a stale pid file never points this script at someone else's process)
    pid="$(pid_of "$1")"
    [[ -n "$pid" ]] && ps -ww -o args= -p "$pid" 2>/dev/null | grep -q -- "--temp-dir=$STATE_DIR/$1 "
}

token_file() {
    if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        echo "$RAY_AUTH_TOKEN_PATH"
    else
        echo "$HOME/.ray/auth_token"
    fi
}

ensure_token() {
    local file
    file="$(token_file)"
    if [[ -s "$file" ]]; then
        return
    fi
    if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        die "RAY_AUTH_TOKEN_PATH=$file: the file is missing or empty; allowed: a file holding a token, or unset it to use ~/.ray/auth_token"
    fi
    ray get-auth-token --generate >/dev/null  # writes ~/.ray/auth_token (mode of a new file: umask)
    chmod 600 "$file"
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
    # SIGTERM to each node's `ray start --block`: it stops its node's processes.
    local node pid ours=()
    for node in worker head; do
        if alive "$node"; then
            ours+=("$node")
            kill -TERM "$(pid_of "$node")" 2>/dev/null || true
        fi
    done
    local deadline=$((SECONDS + 30))
    for node in ${ours[@]+"${ours[@]}"}; do
        pid="$(pid_of "$node")"
        while kill -0 "$pid" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    # Stragglers of this cluster only: the rest of a node's session (setsid made each `ray start`
    # a session leader, so its pid is the session id), and any process naming a node's temp dir
    # on its command line (e.g. --session-dir=...).
    local leftovers=""
    if command -v setsid >/dev/null 2>&1; then
        for node in ${ours[@]+"${ours[@]}"}; do
            leftovers+=" $(pgrep -s "$(pid_of "$node")" || true)"
        done
    fi
    leftovers+=" $(pgrep -f -- "$STATE_DIR/(head|worker)/" || true)"
    if [[ -n "${leftovers// /}" ]]; then
        # shellcheck disable=SC2086
        kill -KILL $leftovers 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/head.pid" "$STATE_DIR/worker.pid"
}

start() {
    command -v ray >/dev/null 2>&1 || die "'ray' is not on PATH; allowed: run 'make cluster-up', or activate the project's venv"
    local node
    for node in "${NODES[@]}"; do
        if alive "$node"; then
            die "already running (the $node node, pid $(pid_of "$node")); allowed: 'stop' first, or PLVAE_CLUSTER_DIR=<another dir> with other ports"
        fi
    done
    mkdir -p "$STATE_DIR"
    rm -rf "${STATE_DIR:?}/head" "${STATE_DIR:?}/worker" "$STATE_DIR"/*.log  # the last run's state only
    chmod 700 "$STATE_DIR"
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

status() {
    local node
    for node in "${NODES[@]}"; do
        if alive "$node"; then echo "$node: running (pid $(pid_of "$node"))"; else echo "$node: not running"; fi
    done
    if alive head; then
        ray status --address="127.0.0.1:$GCS_PORT"
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop_nodes; echo "Stopped the local cluster in $STATE_DIR." ;;
    status) status ;;
    *) die "usage: $0 start|stop|status (got '${1:-}')" ;;
esac
