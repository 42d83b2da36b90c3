"""Pre-flight for `ray up cluster.yaml`: read-only checks of the AWS account, one line each.

    python scripts/preflight_aws.py            # or: make preflight
    python scripts/preflight_aws.py --cluster-yaml other.yaml

With your AWS CLI credentials (aws configure / aws sso login), and reading the region, the node
types, max_workers, the instance profiles, the security group and the AMI from cluster.yaml, it
checks what a first `ray up` otherwise finds out one failure at a time:

  quota     the account's vCPU quotas for the worker family (G and VT: spot L-3819A6DF, on-demand
            L-DB2E81BA) against max_workers x the worker type's vCPUs (new accounts have 0)
  profile   each instance profile exists, holds a role, and the role carries the scoped policy
            (every statement of docs/cluster/iam-<head|worker>-policy.json, placeholders filled)
  spot-role the spot service-linked role exists, or the head's role may create it
            (iam simulate-principal-policy: a simulation, nothing is created)
  vpc / subnet / security-group / ami   exist in the region and fit together
  launch    ec2 run-instances --dry-run for each node type: AWS checks your permission to launch
            it (spot included) and launches nothing

Every line starts with ok, FAIL or warn and says what to do. Exit status 1 when any check fails.
Nothing is created or changed: only get/describe/list calls, a policy simulation and --dry-run.
The AWS CLI is called as `aws` from PATH (the tests put a fake one there).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "cluster"
# Instance family -> (spot quota, on-demand quota): vCPUs of running instances of that family.
QUOTAS = {"g": ("L-3819A6DF", "L-DB2E81BA"), "vt": ("L-3819A6DF", "L-DB2E81BA"),
          "p": ("L-7212CCBC", "L-417A185B")}
QUOTA_NAMES = {"L-3819A6DF": "All G and VT Spot Instance Requests",
               "L-DB2E81BA": "Running On-Demand G and VT instances",
               "L-7212CCBC": "All P Spot Instance Requests", "L-417A185B": "Running On-Demand P instances"}
SPOT_ROLE = "AWSServiceRoleForEC2Spot"
PLACEHOLDERS = ("<REGION>", "<ACCOUNT_ID>", "<BUCKET>")
DOCS_SETUP = "docs/cluster/README.md"


class AwsError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def aws(region: Optional[str], *args: str) -> dict:
    """One AWS CLI call, its JSON answer; AwsError(code, message) when it fails."""
    cmd = ["aws", *args, "--output", "json"] + (["--region", region] if region else [])
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise AwsError("NoCli", "the AWS CLI (aws) is not on PATH") from None
    if out.returncode != 0:
        err = " ".join(out.stderr.split())
        code = err.split("(", 1)[1].split(")", 1)[0] if "An error occurred (" in err else "Error"
        raise AwsError(code, err or f"exit status {out.returncode}")
    return json.loads(out.stdout or "{}")


class Report:
    def __init__(self, out=sys.stdout):
        self.out, self.failed = out, 0

    def line(self, status: str, check: str, text: str) -> None:
        self.failed += status == "FAIL"
        print(f"{status:<4} {check}: {text}", file=self.out)


# ---------------------------------------------------------------------------- what cluster.yaml says
def cluster_facts(cluster: dict) -> dict:
    head = cluster["head_node_type"]
    types = cluster["available_node_types"]
    workers = {n: t for n, t in types.items() if n != head}
    sg = (cluster.get("provider") or {}).get("security_group") or {}
    return {"region": cluster["provider"]["region"], "head": head, "types": types, "workers": workers,
            "max_workers": cluster.get("max_workers", 0), "group": sg.get("GroupName"),
            "cluster_name": cluster.get("cluster_name")}


def is_spot(node_type: dict) -> bool:
    return ((node_type.get("node_config") or {}).get("InstanceMarketOptions") or {}).get("MarketType") == "spot"


def family(instance_type: str) -> str:
    letters = "".join(c for c in instance_type.split(".")[0] if c.isalpha())
    return "vt" if letters.startswith("vt") else letters[:1]


# ---------------------------------------------------------------------------- the checks
def check_quotas(rep: Report, f: dict) -> None:
    need = {}   # quota code -> (vCPUs needed, used by spot workers?)
    for name, t in f["workers"].items():
        itype = t["node_config"]["InstanceType"]
        codes = QUOTAS.get(family(itype))
        if codes is None:
            rep.line("warn", "quota", f"{name}: no vCPU quota known for {itype}; check it in the Service Quotas console")
            continue
        try:
            vcpus = aws(f["region"], "ec2", "describe-instance-types", "--instance-types", itype)[
                "InstanceTypes"][0]["VCpuInfo"]["DefaultVCpus"]
        except (AwsError, KeyError, IndexError) as e:
            rep.line("FAIL", "quota", f"{name}: instance type {itype} unknown in {f['region']} ({e}); "
                     f"pick a type offered there (cluster.yaml, InstanceType)")
            continue
        n = min(t.get("max_workers", f["max_workers"]), f["max_workers"]) * vcpus
        spot_code, od_code = codes
        for code, used in ((spot_code, is_spot(t)), (od_code, not is_spot(t))):
            old_n, old_used = need.get(code, (0, False))
            need[code] = (old_n + n if used else old_n, old_used or used)
    for code, (n, used) in need.items():
        quota_line(rep, f["region"], code, n if used else None)


def quota_line(rep: Report, region: str, code: str, need: Optional[int]) -> None:
    name = f"{QUOTA_NAMES[code]} ({code})"
    try:
        value = int(aws(region, "service-quotas", "get-service-quota", "--service-code", "ec2",
                        "--quota-code", code)["Quota"]["Value"])
    except (AwsError, KeyError) as e:
        rep.line("FAIL", "quota", f"{name}: cannot read it ({e}); allow servicequotas:GetServiceQuota, or look "
                 f"in the Service Quotas console")
        return
    ask = (f"request {need if need else 'some'} vCPUs: aws service-quotas request-service-quota-increase "
           f"--region {region} --service-code ec2 --quota-code {code} --desired-value {need or 4} "
           f"(approval takes hours to a day; new accounts start at 0)")
    if need is None:   # the market cluster.yaml does not use: informative only
        rep.line("ok" if value else "warn", "quota", f"{name} = {value} vCPUs (not used by cluster.yaml's workers)"
                 + ("" if value else "; to switch markets, " + ask))
    elif value >= need:
        rep.line("ok", "quota", f"{name} = {value} vCPUs >= {need} (max_workers x vCPUs per worker)")
    else:
        rep.line("FAIL", "quota", f"{name} = {value} vCPUs < {need} needed (max_workers x vCPUs per worker): "
                 f"the autoscaler would wait for workers forever; " + ask)


def template_statements(kind: str) -> list:
    return json.loads((DOCS / f"iam-{kind}-policy.json").read_text())["Statement"]


def _as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def statement_matches(template: dict, actual: dict) -> bool:
    """The attached statement grants what the template's does: the same effect, actions and
    condition, and each template resource present with its <PLACEHOLDERS> filled in."""
    if actual.get("Effect") != template["Effect"] or actual.get("Condition") != template.get("Condition"):
        return False
    if {a.lower() for a in _as_list(actual.get("Action", []))} != {a.lower() for a in _as_list(template["Action"])}:
        return False
    have = _as_list(actual.get("Resource", []))
    for res in _as_list(template["Resource"]):
        pattern = re.escape(res)
        for ph in PLACEHOLDERS:
            pattern = pattern.replace(re.escape(ph), r"[A-Za-z0-9._-]+")
        if not any(re.fullmatch(pattern, h) for h in have):
            return False
    return True


def missing_statements(kind: str, docs: list) -> list:
    """The template's Sids that no attached statement of the same Sid matches."""
    attached = {}
    for d in docs:
        for st in _as_list(d.get("Statement", [])):
            attached.setdefault(st.get("Sid"), []).append(st)
    return [t["Sid"] for t in template_statements(kind)
            if not any(statement_matches(t, a) for a in attached.get(t["Sid"], []))]


def check_profiles(rep: Report, f: dict) -> dict:
    """Each node type's instance profile, its role and its policy; returns {profile: role name}."""
    roles = {}
    for name, t in f["types"].items():
        profile = ((t.get("node_config") or {}).get("IamInstanceProfile") or {}).get("Name")
        kind = "head" if name == f["head"] else "worker"
        if not profile:
            rep.line("FAIL", "profile", f"{name}: no IamInstanceProfile in cluster.yaml; without one Ray gives the "
                     f"{kind} a role with full EC2 and S3 access; create plvae-{kind} ({DOCS_SETUP}, step 2)")
            continue
        try:
            found = aws(None, "iam", "get-instance-profile", "--instance-profile-name", profile)["InstanceProfile"]
        except AwsError as e:
            rep.line("FAIL", "profile", f"{profile}: {e.code}; create it ({DOCS_SETUP}, step 2)")
            continue
        if not found.get("Roles"):
            rep.line("FAIL", "profile", f"{profile}: holds no role; aws iam add-role-to-instance-profile "
                     f"--instance-profile-name {profile} --role-name {profile}")
            continue
        role = roles[profile] = found["Roles"][0]["RoleName"]
        check_policy(rep, profile, role, kind)
    return roles


def check_policy(rep: Report, profile: str, role: str, kind: str) -> None:
    fix = (f"python scripts/render_iam.py --bucket <BUCKET>, then aws iam put-role-policy --role-name {role} "
           f"--policy-name {role} --policy-document file://my-iam-{kind}-policy.json")
    try:
        names = aws(None, "iam", "list-role-policies", "--role-name", role).get("PolicyNames", [])
        docs = [aws(None, "iam", "get-role-policy", "--role-name", role, "--policy-name", n)["PolicyDocument"]
                for n in names]
    except (AwsError, KeyError) as e:
        rep.line("FAIL", "profile", f"{profile} (role {role}): cannot read its policies ({e}); {fix}")
        return
    missing = missing_statements(kind, docs)
    if any(p in json.dumps(docs) for p in PLACEHOLDERS):
        rep.line("FAIL", "profile", f"{profile} (role {role}): its policy still has <REGION>/<ACCOUNT_ID>/<BUCKET> "
                 f"placeholders; {fix}")
    elif missing:
        rep.line("FAIL", "profile", f"{profile} (role {role}): its policies lack or differ from {', '.join(missing)} "
                 f"of docs/cluster/iam-{kind}-policy.json; {fix}")
    else:
        rep.line("ok", "profile", f"{profile} (role {role}) carries the scoped {kind} policy "
                 f"(a new profile takes up to a minute to be usable: if `ray up` says it is invalid, run it again)")


def check_spot_role(rep: Report, f: dict, head_role: Optional[str], account: str) -> None:
    if not any(is_spot(t) for t in f["workers"].values()):
        return
    try:
        aws(None, "iam", "get-role", "--role-name", SPOT_ROLE)
        rep.line("ok", "spot-role", f"{SPOT_ROLE} exists")
        return
    except AwsError as e:
        if e.code != "NoSuchEntity":
            rep.line("FAIL", "spot-role", f"cannot read {SPOT_ROLE} ({e}); allow iam:GetRole, or create it: "
                     f"aws iam create-service-linked-role --aws-service-name spot.amazonaws.com")
            return
    create = "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com"
    if head_role is None:
        rep.line("FAIL", "spot-role", f"{SPOT_ROLE} does not exist and the head has no role to create it; {create}")
        return
    try:
        result = aws(None, "iam", "simulate-principal-policy", "--policy-source-arn",
                     f"arn:aws:iam::{account}:role/{head_role}", "--action-names", "iam:CreateServiceLinkedRole",
                     "--context-entries",
                     "ContextKeyName=iam:AWSServiceName,ContextKeyValues=spot.amazonaws.com,ContextKeyType=string")
        decision = result["EvaluationResults"][0]["EvalDecision"]
    except (AwsError, KeyError, IndexError) as e:
        decision = f"unknown ({e})"
    if decision == "allowed":
        rep.line("ok", "spot-role", f"{SPOT_ROLE} does not exist yet; the head's role {head_role} may create it at "
                 f"the first spot launch (or now: {create})")
    else:
        rep.line("FAIL", "spot-role", f"{SPOT_ROLE} does not exist and {head_role} may not create it "
                 f"(simulation: {decision}); {create}, or update the head policy (docs/cluster/iam-head-policy.json)")


def check_network(rep: Report, f: dict) -> dict:
    """The VPC (the subnets' own, or the default), its subnets, the security group; returns ids."""
    region, found = f["region"], {"subnets": [], "group": None}
    subnet_ids = sorted({s for t in f["types"].values() for s in (t.get("node_config") or {}).get("SubnetIds", [])})
    try:
        if subnet_ids:
            subnets = aws(region, "ec2", "describe-subnets", "--subnet-ids", *subnet_ids)["Subnets"]
            vpc = subnets[0]["VpcId"] if subnets else None
        else:
            vpcs = aws(region, "ec2", "describe-vpcs", "--filters", "Name=isDefault,Values=true")["Vpcs"]
            vpc = vpcs[0]["VpcId"] if vpcs else None
            subnets = aws(region, "ec2", "describe-subnets", "--filters", f"Name=vpc-id,Values={vpc}")["Subnets"] \
                if vpc else []
    except (AwsError, KeyError) as e:
        rep.line("FAIL", "vpc", f"cannot read the VPC and subnets of {region} ({e}); check the region and "
                 f"ec2:DescribeVpcs / ec2:DescribeSubnets")
        return found
    if vpc is None:
        rep.line("FAIL", "vpc", f"{region} has no default VPC; create one (aws ec2 create-default-vpc --region "
                 f"{region}) or set SubnetIds on both node types in cluster.yaml")
        return found
    rep.line("ok", "vpc", f"{vpc}" + (" (of the SubnetIds in cluster.yaml)" if subnet_ids else " (the default VPC)"))
    public = [s for s in subnets if s.get("MapPublicIpOnLaunch")]
    if not subnets:
        rep.line("FAIL", "subnet", f"{vpc} has no subnet; create one, or set SubnetIds in cluster.yaml")
    elif not public:
        rep.line("FAIL", "subnet", f"none of {', '.join(s['SubnetId'] for s in subnets)} gives instances a public IP "
                 f"(MapPublicIpOnLaunch), which `ray up` from outside the VPC needs; pick public subnets in SubnetIds")
    else:
        found["subnets"] = [s["SubnetId"] for s in public]
        zones = ", ".join(sorted({s["AvailabilityZone"] for s in public}))
        rep.line("ok", "subnet", f"{len(public)} public subnet(s) in {zones}")
    found["group"] = check_group(rep, f, vpc)
    return found


def check_group(rep: Report, f: dict, vpc: str) -> Optional[str]:
    try:
        groups = aws(f["region"], "ec2", "describe-security-groups", "--filters", f"Name=vpc-id,Values={vpc}",
                     f"Name=group-name,Values={f['group']}")["SecurityGroups"]
    except (AwsError, KeyError) as e:
        rep.line("FAIL", "security-group", f"cannot read {f['group']} ({e}); allow ec2:DescribeSecurityGroups")
        return None
    if not groups:
        rep.line("FAIL", "security-group", f"{f['group']} does not exist in {vpc}: Ray would create it with SSH "
                 f"from 0.0.0.0/0; set your CIDR in cluster.yaml, then bash scripts/aws_security_group.sh {vpc}")
        return None
    g = groups[0]
    ssh = [r for p in g.get("IpPermissions", []) if p.get("FromPort") == 22 or p.get("IpProtocol") == "-1"
           for r in p.get("IpRanges", [])]
    if any(r.get("CidrIp") == "0.0.0.0/0" for r in ssh):
        rep.line("FAIL", "security-group", f"{f['group']} ({g['GroupId']}) allows SSH from 0.0.0.0/0; remove that rule "
                 f"(aws ec2 revoke-security-group-ingress --group-id {g['GroupId']} --protocol tcp --port 22 "
                 f"--cidr 0.0.0.0/0)")
    elif not ssh:
        rep.line("FAIL", "security-group", f"{f['group']} ({g['GroupId']}) has no SSH rule: `ray up` cannot reach the "
                 f"head; add your address (aws ec2 authorize-security-group-ingress --group-id {g['GroupId']} "
                 f"--protocol tcp --port 22 --cidr <YOUR_IP>/32)")
    else:
        rep.line("ok", "security-group", f"{f['group']} ({g['GroupId']}): SSH from "
                 + ", ".join(r["CidrIp"] for r in ssh))
    return g["GroupId"]


def check_amis(rep: Report, f: dict) -> dict:
    """Each node type's ImageId exists in the region; returns {node type: image id} of those found."""
    found = {}
    for name, t in f["types"].items():
        ami = (t.get("node_config") or {}).get("ImageId")
        how = "cluster.yaml's ImageId comment has the command that finds the latest Deep Learning Base GPU AMI"
        if not ami or not str(ami).startswith("ami-"):
            rep.line("FAIL", "ami", f"{name}: ImageId={ami!r} is not an AMI id; {how}")
            continue
        try:
            images = aws(f["region"], "ec2", "describe-images", "--image-ids", ami)["Images"]
        except (AwsError, KeyError) as e:
            images, why = [], f" ({e.code if isinstance(e, AwsError) else e})"
        else:
            why = ""
        if not images or images[0].get("State", "available") != "available":
            rep.line("FAIL", "ami", f"{name}: {ami} is not available in {f['region']}{why}; AMI ids differ per "
                     f"region: {how}")
            continue
        found[name] = ami
        rep.line("ok", "ami", f"{name}: {ami} ({images[0].get('Name', '?')}); its NVIDIA driver must be >= 580 for "
                 f"the pinned CUDA 13 PyTorch: nvidia-smi on a worker shows it")
    return found


def check_launch(rep: Report, f: dict, amis: dict, net: dict) -> None:
    """ec2 run-instances --dry-run per node type: AWS answers DryRunOperation when you may launch it."""
    for name, t in f["types"].items():
        if name not in amis:
            continue
        nc = t["node_config"]
        args = ["ec2", "run-instances", "--dry-run", "--count", "1", "--image-id", amis[name],
                "--instance-type", nc["InstanceType"]]
        if is_spot(t):
            args += ["--instance-market-options", "MarketType=spot"]
        if net.get("subnets"):
            args += ["--subnet-id", (nc.get("SubnetIds") or net["subnets"])[0]]
        if net.get("group"):
            args += ["--security-group-ids", net["group"]]
        market = "spot" if is_spot(t) else "on-demand"
        try:
            aws(f["region"], *args)
            code, msg = "Succeeded", "launched without --dry-run?"
        except AwsError as e:
            code, msg = e.code, str(e)
        if code == "DryRunOperation":
            rep.line("ok", "launch", f"{name}: you may launch {nc['InstanceType']} ({market}) from {amis[name]}")
        elif code == "UnauthorizedOperation":
            rep.line("FAIL", "launch", f"{name}: you may not launch {nc['InstanceType']} ({market}): your user needs "
                     f"ec2:RunInstances{' and spot requests' if is_spot(t) else ''} in {f['region']} "
                     f"(ray up launches the head from your machine)")
        else:
            rep.line("FAIL", "launch", f"{name}: the dry run of {nc['InstanceType']} ({market}) failed: {msg[:300]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster-yaml", type=Path, default=REPO / "cluster.yaml")
    args = parser.parse_args(argv)
    f = cluster_facts(yaml.safe_load(args.cluster_yaml.read_text()))
    rep = Report()
    try:
        account = aws(None, "sts", "get-caller-identity")["Account"]
    except (AwsError, KeyError) as e:
        rep.line("FAIL", "credentials", f"no usable AWS credentials ({e}); run `aws configure` or `aws sso login`")
        return 1
    rep.line("ok", "credentials", f"account {account}, region {f['region']} (cluster.yaml provider.region)")
    check_quotas(rep, f)
    roles = check_profiles(rep, f)
    head_profile = ((f["types"][f["head"]].get("node_config") or {}).get("IamInstanceProfile") or {}).get("Name")
    check_spot_role(rep, f, roles.get(head_profile), account)
    net = check_network(rep, f)
    check_launch(rep, f, check_amis(rep, f), net)
    print(f"{'all checks passed' if not rep.failed else f'{rep.failed} check(s) failed'}: "
          f"{'ray up cluster.yaml' if not rep.failed else 'fix them, then run this again'}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
