"""The two IAM policies with <REGION>, <ACCOUNT_ID> and <BUCKET> filled in, ready for
`aws iam put-role-policy` (docs/cluster/README.md, step 2).

    python scripts/render_iam.py --bucket my-results            # region: cluster.yaml's; account: aws sts
    python scripts/render_iam.py --bucket my-results --account-id 123456789012 --region eu-west-1 --out-dir /tmp

Writes my-iam-head-policy.json and my-iam-worker-policy.json into --out-dir (default: the current
directory; .gitignore keeps them out of git: no account ids in the repository). Without
--account-id the account is read from `aws sts get-caller-identity` (read-only). Bad input is
one line, `name=value is invalid; allowed: ...`, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = {kind: REPO / "docs" / "cluster" / f"iam-{kind}-policy.json" for kind in ("head", "worker")}
OUTPUT = "my-iam-{kind}-policy.json"
# S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens, starting and ending alphanumeric.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ACCOUNT = re.compile(r"\d{12}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


def render(template: str, region: str, account_id: str, bucket: str) -> str:
    text = template.replace("<REGION>", region).replace("<ACCOUNT_ID>", account_id).replace("<BUCKET>", bucket)
    left = sorted(set(re.findall(r"<[A-Z_]+>", text)))
    if left:
        raise ValueError(f"placeholders left: {', '.join(left)}")
    json.loads(text)   # still one valid policy document
    return text


def caller_account() -> str:
    out = subprocess.run(["aws", "sts", "get-caller-identity", "--output", "json"], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("error: account-id: `aws sts get-caller-identity` failed (" + " ".join(out.stderr.split())[:200]
                 + "); allowed: pass --account-id, or log in (aws configure / aws sso login)")
    return json.loads(out.stdout)["Account"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", required=True, help="the results bucket (no s3://)")
    parser.add_argument("--account-id", default=None, help="12 digits (default: aws sts get-caller-identity)")
    parser.add_argument("--region", default=None, help="default: cluster.yaml's provider.region")
    parser.add_argument("--cluster-yaml", type=Path, default=REPO / "cluster.yaml")
    parser.add_argument("--out-dir", type=Path, default=Path("."))
    args = parser.parse_args(argv)
    if not BUCKET.fullmatch(args.bucket) or ".." in args.bucket:
        parser.error(f"bucket={args.bucket!r} is invalid; allowed: an S3 bucket name (3-63 lowercase letters, "
                     f"digits, '.', '-'), without s3://")
    region = args.region or yaml.safe_load(args.cluster_yaml.read_text())["provider"]["region"]
    if not REGION.fullmatch(region):
        parser.error(f"region={region!r} is invalid; allowed: an AWS region such as us-west-2")
    account = args.account_id or caller_account()
    if not ACCOUNT.fullmatch(account):
        parser.error(f"account-id={account!r} is invalid; allowed: 12 digits")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for kind, template in TEMPLATES.items():
        path = args.out_dir / OUTPUT.format(kind=kind)
        path.write_text(render(template.read_text(), region, account, args.bucket))
        print(f"{path}: aws iam put-role-policy --role-name plvae-{kind} --policy-name plvae-{kind} "
              f"--policy-document file://{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
