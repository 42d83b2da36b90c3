# Two commands on a fresh machine: `make study` and `make test` (README.md, quick start).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser study test cluster-up cluster-down preflight clean

setup: $(STAMP)

# Re-install when the dependency list or the pins change; `pip install -e` keeps code edits live.
# The runtime dependencies install at the versions the tests passed with (docker/constraints.txt,
# the same pins the cluster image uses); the dev tools resolve freely within them.
$(STAMP): pyproject.toml docker/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]" -c docker/constraints.txt
	touch $(STAMP)

study: setup
	$(PY) tune/run_study.py $(ARGS)

# tests/test_html_report.py renders report.html in Debian's chromium: installed with apt-get when
# missing and possible (scripts/install_chromium.sh); never fatal, that test skips without it.
browser:
	@bash scripts/install_chromium.sh

test: setup browser
	$(PY) -m pytest $(ARGS)

# Rehearse a cluster run on one machine: a Ray head and a worker on loopback. AUTOSCALING=1: a head
# alone, and Ray's autoscaler adding cluster.yaml's worker types as trials wait (scripts/local_cluster.sh).
cluster-up: setup
	PATH=$(abspath $(VENV))/bin:$$PATH bash scripts/local_cluster.sh $(if $(AUTOSCALING),autoscale,start)

cluster-down:
	PATH=$(abspath $(VENV))/bin:$$PATH bash scripts/local_cluster.sh stop

# Before the first `ray up cluster.yaml`: read-only checks of your AWS account against cluster.yaml
# (quotas, roles and policies, spot role, VPC, subnets, security group, AMI, a --dry-run launch).
preflight: setup
	$(PY) scripts/preflight_aws.py

clean:
	rm -rf $(VENV) .pytest_cache
