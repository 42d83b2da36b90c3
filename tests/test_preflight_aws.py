"""scripts/preflight_aws.py against a fake AWS CLI (tests/fixtures/aws/bin/aws) that answers
from fixture files: the fixtures of an account ready for `ray up` (tests/fixtures/aws/account,
plus the role policies rendered from docs/cluster/iam-*.json), then one change per case that
makes exactly one check fail. The real AWS is never called; every call the script makes is
logged, and none of them may change anything. Also scripts/render_iam.py.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "aws"
AMI = "ami-0123456789abcdef0"
ACCOUNT = "123456789012"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_iam = load_script("render_iam")


@pytest.fixture
def account(tmp_path):
    """A fixture directory of an account where every check passes, and a cluster.yaml with an AMI."""
    d = tmp_path / "account"
    shutil.copytree(FIXTURES / "account", d)
    for kind in ("head", "worker"):
        doc = render_iam.render((REPO / "docs" / "cluster" / f"iam-{kind}-policy.json").read_text(),
                                "us-west-2", ACCOUNT, "my-results")
        write(d, f"iam.get-role-policy.plvae-{kind}",
              {"RoleName": f"plvae-{kind}", "PolicyName": f"plvae-{kind}", "PolicyDocument": json.loads(doc)})
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text((REPO / "cluster.yaml").read_text().replace("<AMI_ID>", AMI))
    return d


def write(d: Path, key: str, answer) -> None:
    for old in (d / f"{key}.json", d / f"{key}.err"):
        old.unlink(missing_ok=True)
    if isinstance(answer, str):
        (d / f"{key}.err").write_text(answer)
    else:
        (d / f"{key}.json").write_text(json.dumps(answer))


def preflight(d: Path, cluster_yaml: Path | None = None):
    log = d.parent / "calls.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "FAKE_AWS_DIR": str(d), "FAKE_AWS_LOG": str(log),
           "PATH": f"{FIXTURES / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "scripts/preflight_aws.py", "--cluster-yaml",
                          str(cluster_yaml or d.parent / "cluster.yaml")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    lines = out.stdout.splitlines()
    return out.returncode, lines, calls, out.stderr


def failed(lines):
    return [line for line in lines if line.startswith("FAIL")]


def assert_read_only(calls):
    for args in calls:
        op = args[1]
        assert op.startswith(("get-", "describe-", "list-", "simulate-")) or \
            (op == "run-instances" and "--dry-run" in args), args


def test_a_ready_account_passes_every_check(account):
    rc, lines, calls, err = preflight(account)
    assert rc == 0 and not failed(lines), "\n".join(lines) + err
    checks = {line.split()[1].rstrip(":") for line in lines if line.startswith("ok")}
    assert checks == {"credentials", "quota", "profile", "spot-role", "vpc", "subnet", "security-group", "ami",
                      "launch"}, lines
    assert "ok   quota: All G and VT Spot Instance Requests (L-3819A6DF) = 16 vCPUs >= 16" in "\n".join(lines)
    assert lines[-1].startswith("all checks passed")
    assert_read_only(calls)
    dry = [c for c in calls if c[1] == "run-instances"]
    assert len(dry) == 2 and any("MarketType=spot" in c for c in dry)


def test_no_credentials_is_one_line(account):
    write(account, "sts.get-caller-identity", "Unable to locate credentials. You can configure credentials by "
                                              "running \"aws configure\".")
    rc, lines, calls, _ = preflight(account)
    assert rc == 1 and len(failed(lines)) == 1 and "aws configure" in failed(lines)[0]
    assert len(calls) == 1


SPOT_DENIED = "An error occurred (UnauthorizedOperation) when calling the RunInstances operation: You are not authorized"


def no_default_vpc(d):
    write(d, "ec2.describe-vpcs", {"Vpcs": []})


def private_subnets(d):
    subnets = json.loads((d / "ec2.describe-subnets.json").read_text())
    for s in subnets["Subnets"]:
        s["MapPublicIpOnLaunch"] = False
    write(d, "ec2.describe-subnets", subnets)


def open_ssh(d):
    groups = json.loads((d / "ec2.describe-security-groups.json").read_text())
    groups["SecurityGroups"][0]["IpPermissions"][0]["IpRanges"].append({"CidrIp": "0.0.0.0/0"})
    write(d, "ec2.describe-security-groups", groups)


def stale_head_policy(d):
    """The head policy before spot: no spot-request resource, no service-linked role statement."""
    doc = json.loads((d / "iam.get-role-policy.plvae-head.json").read_text())
    st = doc["PolicyDocument"]["Statement"]
    st[:] = [s for s in st if s["Sid"] not in ("FirstSpotLaunchCreatesTheSpotServiceRole",)]
    for s in st:
        if s["Sid"] == "AutoscalerLaunchesWorkers":
            s["Resource"] = [r for r in s["Resource"] if "spot-instances-request" not in r]
    write(d, "iam.get-role-policy.plvae-head", doc)


def placeholder_policy(d):
    doc = json.loads((d / "iam.get-role-policy.plvae-worker.json").read_text())
    doc["PolicyDocument"]["Statement"][0]["Resource"] = "arn:aws:s3:::<BUCKET>"
    write(d, "iam.get-role-policy.plvae-worker", doc)


def spot_role_missing(decision):
    def change(d):
        write(d, "iam.get-role.AWSServiceRoleForEC2Spot",
              "An error occurred (NoSuchEntity) when calling the GetRole operation: The role with name "
              "AWSServiceRoleForEC2Spot cannot be found.")
        write(d, "iam.simulate-principal-policy", {"EvaluationResults": [
            {"EvalActionName": "iam:CreateServiceLinkedRole", "EvalDecision": decision}]})
    return change


# case: (change to the ready account, the check that fails, words its line must hold)
FAILING = {
    "spot quota 0": (lambda d: write(d, "service-quotas.get-service-quota.L-3819A6DF",
                                     {"Quota": {"QuotaCode": "L-3819A6DF", "Value": 0.0}}),
                     "quota", ["= 0 vCPUs < 16 needed", "request-service-quota-increase", "--quota-code L-3819A6DF",
                               "--desired-value 16"]),
    "quota unreadable": (lambda d: write(d, "service-quotas.get-service-quota.L-3819A6DF",
                                         "An error occurred (AccessDeniedException) when calling the "
                                         "GetServiceQuota operation"), "quota", ["servicequotas:GetServiceQuota"]),
    "unknown instance type": (lambda d: write(d, "ec2.describe-instance-types.g5.xlarge",
                                              "An error occurred (InvalidInstanceType) when calling the "
                                              "DescribeInstanceTypes operation"), "quota", ["g5.xlarge unknown"]),
    "worker profile missing": (lambda d: write(d, "iam.get-instance-profile.plvae-worker",
                                               "An error occurred (NoSuchEntity) when calling the "
                                               "GetInstanceProfile operation"),
                               "profile", ["plvae-worker: NoSuchEntity", "docs/cluster/README.md"]),
    "profile without a role": (lambda d: write(d, "iam.get-instance-profile.plvae-head",
                                               {"InstanceProfile": {"InstanceProfileName": "plvae-head",
                                                                    "Roles": []}}),
                               "profile", ["holds no role", "add-role-to-instance-profile"]),
    "stale head policy": (stale_head_policy, "profile",
                          ["AutoscalerLaunchesWorkers, FirstSpotLaunchCreatesTheSpotServiceRole",
                           "render_iam.py", "put-role-policy --role-name plvae-head"]),
    "placeholders left": (placeholder_policy, "profile", ["placeholders"]),
    "spot role absent, not creatable": (spot_role_missing("implicitDeny"), "spot-role",
                                        ["implicitDeny", "create-service-linked-role --aws-service-name "
                                                         "spot.amazonaws.com"]),
    "no default vpc": (no_default_vpc, "vpc", ["no default VPC", "create-default-vpc", "SubnetIds"]),
    "no public subnet": (private_subnets, "subnet", ["MapPublicIpOnLaunch"]),
    "no security group": (lambda d: write(d, "ec2.describe-security-groups", {"SecurityGroups": []}),
                          "security-group", ["does not exist", "aws_security_group.sh vpc-0a1b2c3d"]),
    "ssh open to the world": (open_ssh, "security-group", ["0.0.0.0/0", "revoke-security-group-ingress"]),
    "ami not in the region": (lambda d: write(d, f"ec2.describe-images.{AMI}",
                                              "An error occurred (InvalidAMIID.NotFound) when calling the "
                                              "DescribeImages operation"), "ami", ["InvalidAMIID.NotFound",
                                                                                   "differ per region"]),
    "spot launch not allowed": (lambda d: write(d, "ec2.run-instances.g5.xlarge", SPOT_DENIED),
                                "launch", ["gpu_worker", "spot", "ec2:RunInstances"]),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_each_check_fails_alone_with_what_to_do(account, case):
    change, check, words = FAILING[case]
    change(account)
    rc, lines, calls, err = preflight(account)
    bad = failed(lines)
    assert rc == 1 and bad, "\n".join(lines) + err
    assert {line.split()[1].rstrip(":") for line in bad} == {check}, bad
    for word in words:
        assert any(word in line for line in bad), (word, bad)
    assert lines[-1].startswith(f"{len(bad)} check(s) failed")
    assert_read_only(calls)


def test_the_spot_role_may_be_absent_when_the_head_may_create_it(account):
    spot_role_missing("allowed")(account)
    rc, lines, calls, _ = preflight(account)
    assert rc == 0, lines
    assert any(line.startswith("ok   spot-role: AWSServiceRoleForEC2Spot does not exist yet") for line in lines)
    sim = [c for c in calls if c[1] == "simulate-principal-policy"]
    assert sim and f"arn:aws:iam::{ACCOUNT}:role/plvae-head" in sim[0]
    assert "ContextKeyName=iam:AWSServiceName,ContextKeyValues=spot.amazonaws.com,ContextKeyType=string" in sim[0]


def test_on_demand_workers_need_the_on_demand_quota(account, tmp_path):
    text = (tmp_path / "cluster.yaml").read_text().replace("      InstanceMarketOptions:\n        MarketType: spot\n", "")
    (tmp_path / "cluster.yaml").write_text(text)
    write(account, "service-quotas.get-service-quota.L-3819A6DF", {"Quota": {"Value": 0.0}})
    rc, lines, _, _ = preflight(account)
    assert rc == 1 and [line for line in failed(lines)] == [
        line for line in lines if "L-DB2E81BA" in line and line.startswith("FAIL")], lines
    assert any("= 8 vCPUs < 16 needed" in line for line in failed(lines))
    assert any(line.startswith("warn quota: All G and VT Spot") for line in lines)   # unused market: a note


def test_the_shipped_cluster_yaml_fails_on_its_ami_placeholder(account):
    rc, lines, calls, _ = preflight(account, REPO / "cluster.yaml")
    assert rc == 1 and {line.split()[1].rstrip(":") for line in failed(lines)} == {"ami"}
    assert all("ImageId='<AMI_ID>' is not an AMI id" in line for line in failed(lines))
    assert not [c for c in calls if c[1] in ("describe-images", "run-instances")]


# ---------------------------------------------------------------------------- render_iam.py
def test_render_iam_fills_every_placeholder(tmp_path):
    out = subprocess.run([sys.executable, "scripts/render_iam.py", "--bucket", "my-results", "--account-id", ACCOUNT,
                          "--out-dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    head = (tmp_path / "my-iam-head-policy.json").read_text()
    worker = json.loads((tmp_path / "my-iam-worker-policy.json").read_text())
    assert "<" not in head and f"arn:aws:ec2:us-west-2:{ACCOUNT}:spot-instances-request/*" in head
    assert worker["Statement"][0]["Resource"] == "arn:aws:s3:::my-results"
    assert "put-role-policy --role-name plvae-head" in out.stdout


def test_render_iam_reads_the_account_from_the_cli(tmp_path):
    env = {**os.environ, "FAKE_AWS_DIR": str(FIXTURES / "account"), "FAKE_AWS_LOG": str(tmp_path / "log"),
           "PATH": f"{FIXTURES / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([sys.executable, "scripts/render_iam.py", "--bucket", "my-results", "--region", "eu-west-1",
                          "--out-dir", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"arn:aws:ec2:eu-west-1:{ACCOUNT}:instance/*" in (tmp_path / "my-iam-head-policy.json").read_text()


@pytest.mark.parametrize("args, message", [
    (["--bucket", "s3://my-results", "--account-id", ACCOUNT], "bucket='s3://my-results' is invalid; allowed:"),
    (["--bucket", "ok-bucket", "--account-id", "12345"], "account-id='12345' is invalid; allowed: 12 digits"),
    (["--bucket", "ok-bucket", "--account-id", ACCOUNT, "--region", "mars"], "region='mars' is invalid; allowed:"),
])
def test_render_iam_refuses_bad_input_in_one_line(tmp_path, args, message):
    out = subprocess.run([sys.executable, "scripts/render_iam.py", *args, "--out-dir", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not list(tmp_path.glob("*.json"))


def test_render_refuses_an_unknown_placeholder():
    with pytest.raises(ValueError, match="<OTHER>"):
        render_iam.render('{"a": "<REGION>/<OTHER>"}', "us-west-2", ACCOUNT, "b")
