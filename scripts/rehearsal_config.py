"""The autoscaling rehearsal's cluster config, derived from cluster.yaml's own node types.

    python scripts/rehearsal_config.py --gcs-address 127.0.0.1:6379 > autoscaling.json

Ray's fake multi-node provider (`provider: type: fake_multinode`) runs Ray's real autoscaler
(`ray start --head --autoscaling-config=FILE` with RAY_FAKE_CLUSTER=1) and starts each node it
launches as a real raylet on this machine. The autoscaler reads the node types from this file:
the head of cluster.yaml (its resources, e.g. 0 CPUs) and every worker type with its resources,
min_workers and max_workers, so the rehearsal scales exactly as the cloud cluster would. What
cannot be rehearsed is dropped: node_config (instance types, spot), docker, file mounts and setup
commands. GPUs are logical (the raylet advertises them; nothing checks for a device).

The provider insists on its head node type being named "ray.head.default"; the head keeps
cluster.yaml's resources under that name. JSON is written (YAML is a superset), so the file is
exactly what the autoscaler parses. scripts/local_cluster.sh `autoscale` calls this.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FAKE_HEAD_TYPE = "ray.head.default"   # ray.autoscaler._private.fake_multi_node.node_provider
# Keys a node type keeps in the rehearsal; the rest (node_config, docker options) describe the cloud.
KEPT_NODE_TYPE_KEYS = ("resources", "min_workers", "max_workers", "labels")


def rehearsal_config(cluster: dict, gcs_address: str, idle_timeout_minutes: float | None = None,
                     object_store_bytes: int | None = None, max_workers: int | None = None) -> dict:
    """The fake_multinode config for `cluster` (a loaded cluster.yaml). idle_timeout_minutes and
    max_workers override cluster.yaml's (a test's shorter idle timeout, a smaller machine);
    object_store_bytes sizes each launched node's object store (Ray's default is 30% of RAM)."""
    head_name = cluster["head_node_type"]
    types = {}
    for name, node_type in cluster["available_node_types"].items():
        kept = {k: copy.deepcopy(v) for k, v in node_type.items() if k in KEPT_NODE_TYPE_KEYS}
        kept["node_config"] = {}
        if name == head_name:
            kept["max_workers"] = 0
            kept.pop("min_workers", None)
            types[FAKE_HEAD_TYPE] = kept
            continue
        if max_workers is not None:
            kept["max_workers"] = min(kept.get("max_workers", max_workers), max_workers)
        if object_store_bytes:
            kept["resources"]["object_store_memory"] = int(object_store_bytes)
        types[name] = kept
    total_max = cluster["max_workers"] if max_workers is None else min(cluster["max_workers"], max_workers)
    return {
        "cluster_name": f"{cluster['cluster_name']}-rehearsal",
        "max_workers": total_max,
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": (cluster["idle_timeout_minutes"] if idle_timeout_minutes is None
                                 else idle_timeout_minutes),
        "provider": {
            "type": "fake_multinode",
            # Where launched nodes join: this head's GCS (the provider's default is port 6379).
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "available_node_types": types,
        "head_node_type": FAKE_HEAD_TYPE,
        "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster-yaml", type=Path, default=REPO / "cluster.yaml")
    parser.add_argument("--gcs-address", required=True, help="HOST:PORT of the rehearsal's head")
    parser.add_argument("--idle-timeout-minutes", type=float, default=None)
    parser.add_argument("--max-workers", type=int, default=None)
    parser.add_argument("--object-store-bytes", type=int, default=None)
    args = parser.parse_args(argv)
    if args.idle_timeout_minutes is not None and not args.idle_timeout_minutes > 0:
        parser.error(f"--idle-timeout-minutes={args.idle_timeout_minutes} is invalid; allowed: a number > 0")
    if args.max_workers is not None and args.max_workers < 1:
        parser.error(f"--max-workers={args.max_workers} is invalid; allowed: an integer >= 1")
    cluster = yaml.safe_load(args.cluster_yaml.read_text())
    json.dump(rehearsal_config(cluster, args.gcs_address, args.idle_timeout_minutes,
                               args.object_store_bytes, args.max_workers), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
