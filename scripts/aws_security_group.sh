#!/usr/bin/env bash
# Create cluster.yaml's security group before the first `ray up`, exactly as it declares it:
# SSH (22) from provider.security_group's CIDRs only, and all traffic between the group's members.
#
#   bash scripts/aws_security_group.sh [VPC_ID]   # default: the region's default VPC
#   PLVAE_DRY_RUN=1 bash scripts/aws_security_group.sh vpc-123   # print the aws commands only
#
# Why it exists: Ray 2.60 adds SSH from 0.0.0.0/0 to any security group it creates itself, on top
# of the rules cluster.yaml declares; a group that already has rules it uses unchanged. Needs the
# AWS CLI and credentials; reads cluster.yaml with the project's Python (PyYAML).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_YAML="${PLVAE_CLUSTER_YAML:-$REPO/cluster.yaml}"
die() { echo "aws_security_group: $*" >&2; exit 1; }
run() { if [[ "${PLVAE_DRY_RUN:-}" == 1 ]]; then echo "aws $*"; else aws "$@"; fi; }

read -r REGION GROUP CIDRS < <(python - "$CLUSTER_YAML" <<'PY'
import ipaddress, sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
sg = c["provider"].get("security_group") or {}
cidrs = []
for rule in sg.get("IpPermissions", []):
    if (rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")) != ("tcp", 22, 22) or rule.get("Ipv6Ranges"):
        sys.exit(f"provider.security_group: only SSH (tcp 22) rules from IPv4 CIDRs are expected, got {rule}")
    for r in rule.get("IpRanges", []):
        try:
            net = ipaddress.ip_network(r["CidrIp"])
        except ValueError:
            sys.exit(f"provider.security_group: CidrIp {r['CidrIp']!r} is invalid; allowed: your address "
                     f"as a.b.c.d/32 or your network's CIDR (edit cluster.yaml)")
        if net.prefixlen == 0:
            sys.exit("provider.security_group: SSH from 0.0.0.0/0 is refused; allowed: your address or network")
        cidrs.append(str(net))
if not sg.get("GroupName") or not cidrs:
    sys.exit("provider.security_group: a GroupName and at least one SSH CIDR are required")
print(c["provider"]["region"], sg["GroupName"], ",".join(cidrs))
PY
) || die "cluster.yaml ($CLUSTER_YAML) does not declare a usable security group (above)"

VPC="${1:-}"
if [[ -z "$VPC" ]]; then
    VPC="$(run ec2 describe-vpcs --region "$REGION" --filters Name=isDefault,Values=true \
        --query 'Vpcs[0].VpcId' --output text)" || die "cannot list the VPCs of $REGION (above)"
    # The CLI prints "None" when the region has no default VPC (deleted, or an old account).
    if [[ "${PLVAE_DRY_RUN:-}" != 1 && ! "$VPC" =~ ^vpc-[0-9a-f]+$ ]]; then
        die "$REGION has no default VPC (got '$VPC'); allowed: pass a VPC id (aws ec2 describe-vpcs --region $REGION), or create the default VPC: aws ec2 create-default-vpc --region $REGION"
    fi
fi
SG="$(run ec2 create-security-group --region "$REGION" --vpc-id "$VPC" --group-name "$GROUP" \
    --description "plvae Ray cluster: SSH from the operators, all traffic within the cluster" \
    --query GroupId --output text)"
if [[ "${PLVAE_DRY_RUN:-}" == 1 ]]; then echo "$SG"; SG='<group-id>'; fi
IFS=, read -r -a cidr_list <<< "$CIDRS"
for cidr in "${cidr_list[@]}"; do
    run ec2 authorize-security-group-ingress --region "$REGION" --group-id "$SG" \
        --protocol tcp --port 22 --cidr "$cidr"
done
run ec2 authorize-security-group-ingress --region "$REGION" --group-id "$SG" \
    --protocol -1 --source-group "$SG"
echo "security group $GROUP ($SG) in $VPC: SSH from $CIDRS, all traffic within the group"
