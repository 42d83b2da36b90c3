"""cluster.yaml and docker/ checked as `ray up` and `docker build` would see them, offline.

`ray up` runs Ray's own launcher checks (prepare_config, then validate_config against the
launcher's JSON schema) before it touches a cloud; these tests run exactly those, so a misspelled
key fails here instead of minutes into a launch. There is no Docker engine here: the Dockerfile
is linted with hadolint, and its build context is checked against .dockerignore.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
CONSTRAINTS = "docker/constraints.txt"
TOKEN_MOUNT = "~/.ray"  # the directory of Ray's default token path (auth_token), here and on every node
TOKEN_MOUNT_REMOTE = "/home/ray/.ray"


def load_cluster() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def launcher_check(config: dict) -> dict:
    """What `ray up` runs on the config before contacting the cloud, plus one strictness the
    launcher lacks: its schema accepts any provider key, so a misspelled one (e.g. `regoin`)
    would silently fall back to a default; here it must be a key the schema documents."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    known = set(schema["properties"]["provider"]["properties"])
    unknown = sorted(set(prepared["provider"]) - known)
    if unknown:
        raise ValueError(f"provider: unknown keys {unknown}; allowed: {sorted(known)}")
    return prepared


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def project_image_form(config: dict) -> dict:
    """cluster.yaml with the one-line change its comment documents: the project's own image."""
    lines = re.findall(r"^\s*#\s*image:\s*(\S+)\s*$", CLUSTER_YAML.read_text(), re.MULTILINE)
    assert len(lines) == 1, "one commented `image:` line: the project's image"
    changed = copy.deepcopy(config)
    changed["docker"]["image"] = lines[0]
    return changed


def load_module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def ignore_patterns(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


def start_commands(config: dict) -> list[str]:
    return [c for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
            if "ray start" in c]


# --- cluster.yaml ------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["public Ray image", "project image"])
def test_cluster_yaml_passes_the_launchers_checks(form, monkeypatch):
    monkeypatch.chdir(REPO)  # `ray up` runs from the repository root; file_mounts are relative to it
    raw = load_cluster() if form == "public Ray image" else project_image_form(load_cluster())
    config = launcher_check(raw)
    if form == "public Ray image":   # a new user's first `ray up` pulls it: nothing to build
        assert config["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    else:
        assert re.fullmatch(r"<registry>/plvae:[\w.-]+", config["docker"]["image"])
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    assert config["idle_timeout_minutes"] > 0

    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"]["CPU"] == 0, "the head must run no trials"
    assert head["max_workers"] == 0
    head_start = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert len(head_start) == 1 and "--num-cpus=0" in head_start[0]

    workers = {name: t for name, t in config["available_node_types"].items()
               if name != config["head_node_type"]}
    gpu = [t for t in workers.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu, "a GPU worker type"
    for t in gpu:
        assert t["min_workers"] == 0, "GPU workers scale from zero"
        assert t["max_workers"] == config["max_workers"] > 0, "one configurable maximum"
        assert t["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"

    docker = config["docker"]
    assert docker["image"] and docker["container_name"]
    assert "--gpus all" in docker["worker_run_options"]
    assert "--gpus all" not in docker.get("run_options", []) + docker.get("head_run_options", []), \
        "the CPU head cannot start a container that asks for GPUs"


MISSPELLINGS = {
    "top-level max_workers": lambda c: c.__setitem__("max_worker", c.pop("max_workers")),
    "node type min_workers": lambda c: c["available_node_types"]["gpu_worker"].__setitem__(
        "min_worker", c["available_node_types"]["gpu_worker"].pop("min_workers")),
    "node type resources": lambda c: c["available_node_types"]["head"].__setitem__(
        "resource", c["available_node_types"]["head"].pop("resources")),
    "head_node_type name": lambda c: c.__setitem__("head_node_type", "haed"),
    "docker container_name": lambda c: c["docker"].__setitem__(
        "container_nme", c["docker"].pop("container_name")),
    "idle_timeout_minutes": lambda c: c.__setitem__(
        "idle_timeout_minute", c.pop("idle_timeout_minutes")),
    "provider region": lambda c: c["provider"].__setitem__("regoin", c["provider"].pop("region")),
}


@pytest.mark.parametrize("where", sorted(MISSPELLINGS))
def test_a_misspelled_key_fails_the_check(where, monkeypatch):
    monkeypatch.chdir(REPO)
    config = load_cluster()
    MISSPELLINGS[where](config)
    # The launcher signals some of these with an assert (e.g. a docker block without container_name).
    with pytest.raises((jsonschema.ValidationError, ValueError, AssertionError)):
        launcher_check(config)


def test_file_mounts_are_directories_the_project_and_the_token():
    """A file bind-mounted into the container keeps its first inode: a rotated token or changed pins
    would never reach it. Every mount is a directory (Ray's own check warns on a file)."""
    config = load_cluster()
    mounts = dict(config["file_mounts"])
    workdir = [arg for word, arg in dockerfile_instructions() if word == "WORKDIR"][-1]
    assert mounts == {workdir: ".", TOKEN_MOUNT_REMOTE: TOKEN_MOUNT}
    for remote, local in mounts.items():
        assert not Path(os.path.expanduser(local)).is_file(), f"{remote}: {local} is a file"
    assert (REPO / mounts[workdir]).resolve() == REPO
    # The sync leaves out what git ignores (venv, results, data) and .git itself ...
    assert ".gitignore" in config["rsync_filter"] and ".git" in config["rsync_exclude"]
    ignored = ignore_patterns(REPO / ".gitignore")
    assert {".venv/", "/results/", "/data/"} <= set(ignored)
    # ... and keeps what setup_commands installs from: the metadata, the pins, every package.
    assert (REPO / "pyproject.toml").exists() and (REPO / CONSTRAINTS).exists()
    found = re.search(r"\[tool\.setuptools\.packages\.find\]\s*include\s*=\s*\[([^]]*)\]",
                      (REPO / "pyproject.toml").read_text())  # (tomllib is 3.11+; the project allows 3.10)
    assert found, "pyproject.toml: [tool.setuptools.packages.find] include"
    packages = {p.strip().strip('"').rstrip("*") for p in found.group(1).split(",") if p.strip()}
    assert packages and all((REPO / p / "__init__.py").exists() for p in packages)
    assert not [p for p in packages if any(p.strip("/") == i.strip("/") for i in ignored)]
    # The image installs the project in editable mode in that dir, so the mounted code is what runs.
    installs = [arg for word, arg in dockerfile_instructions() if word == "RUN" and "pip install" in arg]
    assert installs and "--editable ." in installs[0]


def test_rays_own_docker_check_finds_no_file_mount(monkeypatch):
    from ray.autoscaler._private import docker as ray_docker

    monkeypatch.chdir(REPO)
    warned = []
    monkeypatch.setattr(ray_docker.cli_logger, "warning", lambda msg, *a, **k: warned.append(msg))
    ray_docker._check_docker_file_mounts({k: os.path.expanduser(v) for k, v in load_cluster()["file_mounts"].items()})
    assert warned == []
    ray_docker._check_docker_file_mounts({"/home/ray/plvae/pyproject.toml": "./pyproject.toml"})
    assert warned and "refers to a file" in warned[0]   # the check can fail


def test_both_node_types_name_one_ami_placeholder_and_the_driver_it_needs():
    config = load_cluster()
    amis = {name: t["node_config"].get("ImageId") for name, t in config["available_node_types"].items()}
    assert set(amis.values()) == {"<AMI_ID>"}, amis   # set once (a YAML anchor), found per region
    text = CLUSTER_YAML.read_text()
    assert "Deep Learning Base OSS Nvidia Driver GPU AMI" in text and ">= 580" in text and "nvidia-smi" in text
    assert "torch==2.14.1" in (REPO / CONSTRAINTS).read_text() and "cu13" in (REPO / CONSTRAINTS).read_text()


def test_setup_commands_install_the_synced_project_keeping_the_images_ray():
    config = load_cluster()
    setup = " ".join(config["setup_commands"])
    workdir = [arg for word, arg in dockerfile_instructions() if word == "WORKDIR"][-1]
    assert f"--editable {workdir}" in setup and "[dev]" not in setup
    assert "ray==' + ray.__version__" in setup and "--constraint /tmp/ray-constraint.txt" in setup
    assert f"--constraint {workdir}/{CONSTRAINTS}" in setup
    # The token copied to the node is made private there too.
    assert "chmod 600 ~/.ray/auth_token" in setup and "chmod 700 ~/.ray" in setup


def test_security_settings():
    config = load_cluster()
    text = CLUSTER_YAML.read_text()
    # No port opened to the world: the dashboard is reached through `ray dashboard` (SSH).
    rules = config["provider"].get("security_group", {}).get("IpPermissions", [])
    assert not [r for r in rules if "0.0.0.0/0" in json.dumps(r)]
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    # Token authentication on and usage statistics off on every node.
    for command in start_commands(config):
        assert "RAY_AUTH_MODE=token" in command, command
        assert "RAY_USAGE_STATS_ENABLED=0" in command, command
    # No account ids, ARNs or access keys.
    assert not re.search(r"\b\d{12}\b|arn:aws|AKIA[0-9A-Z]{16}|aws_secret", text, re.IGNORECASE)


def test_ssh_is_asked_for_from_the_users_cidr_only():
    group = load_cluster()["provider"]["security_group"]
    assert group["GroupName"]
    rules = group["IpPermissions"]
    assert [(r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in rules] == [("tcp", 22, 22)], \
        "one ingress rule: SSH (Ray adds the cluster's own traffic)"
    cidrs = [r["CidrIp"] for r in rules[0]["IpRanges"]]
    assert cidrs == ["<YOUR_PUBLIC_IP>/32"], "a placeholder the user must replace"
    assert not rules[0].get("Ipv6Ranges") and not rules[0].get("UserIdGroupPairs")


def _security_group_script(tmp_path, cidr: str) -> subprocess.CompletedProcess:
    config = CLUSTER_YAML.read_text().replace("<YOUR_PUBLIC_IP>/32", cidr)
    (tmp_path / "cluster.yaml").write_text(config)
    env = {**os.environ, "PLVAE_DRY_RUN": "1", "PLVAE_CLUSTER_YAML": str(tmp_path / "cluster.yaml"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(["bash", "scripts/aws_security_group.sh", "vpc-0abc"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_security_group_is_created_as_declared_and_never_open_to_the_world(tmp_path):
    made = _security_group_script(tmp_path, "203.0.113.7/32")
    assert made.returncode == 0, made.stderr
    commands = [line for line in made.stdout.splitlines() if line.startswith("aws ")]
    assert "--group-name plvae-cluster" in commands[0] and "--vpc-id vpc-0abc" in commands[0]
    assert [c for c in commands if "--port 22" in c and "--cidr 203.0.113.7/32" in c]
    assert [c for c in commands if "--protocol -1 --source-group" in c]   # the nodes reach each other
    assert "0.0.0.0/0" not in made.stdout
    for bad in ("<YOUR_PUBLIC_IP>/32", "0.0.0.0/0", "not-a-cidr"):
        refused = _security_group_script(tmp_path, bad)
        assert refused.returncode != 0 and "aws ec2" not in refused.stdout, (bad, refused.stdout)


@pytest.mark.parametrize("answer, ok", [("vpc-0a1b2c3d", True), ("None", False)])
def test_the_security_group_script_needs_a_default_vpc(tmp_path, answer, ok):
    """Against a fake `aws` on PATH (tests/fixtures/aws/bin) answering from fixture files."""
    config = CLUSTER_YAML.read_text().replace("<YOUR_PUBLIC_IP>/32", "203.0.113.7/32")
    (tmp_path / "cluster.yaml").write_text(config)
    (tmp_path / "ec2.describe-vpcs.json").write_text(answer + "\n")
    (tmp_path / "ec2.create-security-group.json").write_text("sg-0123\n")
    (tmp_path / "ec2.authorize-security-group-ingress.json").write_text("")
    env = {**os.environ, "PLVAE_CLUSTER_YAML": str(tmp_path / "cluster.yaml"), "FAKE_AWS_DIR": str(tmp_path),
           "FAKE_AWS_LOG": str(tmp_path / "calls.log"),
           "PATH": f"{REPO / 'tests' / 'fixtures' / 'aws' / 'bin'}{os.pathsep}{Path(sys.executable).parent}"
                   f"{os.pathsep}{os.environ.get('PATH', '')}"}
    made = subprocess.run(["bash", "scripts/aws_security_group.sh"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)
    calls = (tmp_path / "calls.log").read_text()
    if ok:
        assert made.returncode == 0 and "--vpc-id\tvpc-0a1b2c3d" in calls, made.stderr
    else:
        assert made.returncode != 0 and "has no default VPC" in made.stderr and "create-default-vpc" in made.stderr
        assert "create-security-group" not in calls


def test_nodes_get_scoped_roles_not_rays_default():
    config = load_cluster()
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["node_config"]["IamInstanceProfile"] == {"Name": "plvae-head"}
    assert types["gpu_worker"]["node_config"]["IamInstanceProfile"] == {"Name": "plvae-worker"}
    docs = REPO / "docs" / "cluster"
    head = json.loads((docs / "iam-head-policy.json").read_text())["Statement"]
    worker = json.loads((docs / "iam-worker-policy.json").read_text())["Statement"]

    def actions(statements):
        return {a for s in statements for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}

    for statements in (head, worker):
        assert all(s["Effect"] == "Allow" for s in statements)
        assert not [a for a in actions(statements) if "*" in a], "no wildcard actions"
        s3 = [s for s in statements if any(a.startswith("s3:") for a in actions([s]))]
        assert s3 and all(s["Resource"] in ("arn:aws:s3:::<BUCKET>", "arn:aws:s3:::<BUCKET>/*") for s in s3)
    assert actions(worker) <= {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:PutObject",
                               "s3:DeleteObject", "s3:AbortMultipartUpload"}
    # The head ends only this cluster's nodes and passes only the worker role.
    for s in head:
        acts = actions([s])
        if acts & {"ec2:TerminateInstances", "ec2:StopInstances"}:
            assert s["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == config["cluster_name"]
        if "iam:PassRole" in acts:
            assert s["Resource"].endswith(":role/plvae-worker")
        if s["Resource"] == "*":
            assert all(a.startswith("ec2:Describe") for a in acts), s
    # Spot workers the first time: RunInstances on spot requests, and the spot service-linked role
    # created by the head only for spot.amazonaws.com.
    launch = [s for s in head if "ec2:RunInstances" in actions([s])]
    assert launch and "arn:aws:ec2:<REGION>:<ACCOUNT_ID>:spot-instances-request/*" in launch[0]["Resource"]
    slr = [s for s in head if "iam:CreateServiceLinkedRole" in actions([s])]
    assert len(slr) == 1 and slr[0]["Resource"].endswith(
        ":role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot")
    assert slr[0]["Condition"] == {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}


# --- docker/ -----------------------------------------------------------------------------------

def test_image_ray_version_equals_the_installed_one():
    args = [arg for word, arg in dockerfile_instructions() if word == "ARG"]
    base = [a.split("=", 1)[1] for a in args if a.startswith("BASE_IMAGE=")]
    assert len(base) == 1, "ARG BASE_IMAGE=<default>"
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-gpu", base[0])
    assert match, f"the default base is the official Ray GPU image, not {base[0]}"
    assert match.group(1) == ray.__version__
    pinned = re.search(r'"ray\[[^]]*\]==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert pinned and pinned.group(1) == ray.__version__
    assert ("FROM", "${BASE_IMAGE}") in dockerfile_instructions()


def test_dockerfile_installs_the_project_as_a_non_root_user():
    instructions = dockerfile_instructions()
    users = [arg for word, arg in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    installs = [arg for word, arg in instructions if word == "RUN" and "pip install" in arg]
    assert len(installs) == 1
    assert "[dev]" not in installs[0], "no dev extras in the image"
    assert "--constraint" in installs[0] and "ray==" in installs[0], "pip must keep the base's Ray"
    assert f"--constraint {CONSTRAINTS}" in installs[0], "the tested versions"


def test_constraints_pin_the_tested_environment():
    pins = load_module("pin_constraints")
    expected = pins.render(pins.runtime_closure())
    assert (REPO / CONSTRAINTS).read_text() == expected, \
        f"{CONSTRAINTS} is stale; run: python scripts/pin_constraints.py"
    pinned = pins.read_pins(expected)
    assert pinned["ray"] == ray.__version__ and "torch" in pinned and "pytest" not in pinned


def _hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(exe).exists():
        pytest.fail("hadolint is missing: install the dev extras (pip install -e '.[dev]')")
    return exe


def _lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "warning", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_dockerfile_lints_clean():
    result = _lint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_lint_gate_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")  # untagged base, unpinned, pip cache
    result = _lint(bad)
    assert result.returncode != 0 and "DL3006" in result.stdout, result.stdout


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent directories wins;
    `!` re-includes; `*` and `?` stay within one path element, `**` spans any number."""
    def regex(pattern: str) -> re.Pattern:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)

    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw.lstrip("!").strip("/"))
        if any(regex(pattern).fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


def test_the_ignore_file_lets_the_pins_in():
    """The image installs against docker/constraints.txt: the allow-list admits it."""
    assert "!" + CONSTRAINTS in ignore_patterns(DOCKERIGNORE)


def test_build_context_has_the_sources_and_nothing_else():
    patterns = ignore_patterns(DOCKERIGNORE)
    copies = [arg.split() for word, arg in dockerfile_instructions() if word == "COPY"]
    sources = [s for args in copies for s in [a for a in args if not a.startswith("--")][:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repo"
        assert not _dockerignore_excludes(source, patterns), f"COPY {source}: .dockerignore drops it"
        assert not _dockerignore_excludes(source + "/__init__.py", patterns) or source.endswith(".toml")
    for kept_out in [".venv/bin/python", "results/quick/study.json", "ray_results/x/result.json",
                     "data/cifar-10-batches-py/data_batch_1", ".git/HEAD", "tests/test_model.py",
                     "plvae/__pycache__/model.cpython-311.pyc", "tune/results/a.json",
                     "lightning_logs/version_0/events", "plvae.egg-info/PKG-INFO", "model.ckpt"]:
        assert _dockerignore_excludes(kept_out, patterns), f"{kept_out} would enter the image"
