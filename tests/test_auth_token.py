"""A plain local study writes Ray's auth token itself, 0600, before Ray would write a
world-readable one (issue 12, hardening); a token Ray then starts with."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def test_a_local_study_makes_its_token_private(tmp_path):
    """In a process of its own: Ray caches the token it starts with for the life of the process,
    and this test's token must not leak into the Rays the other tests start."""
    token = tmp_path / "auth_token"
    code = ("import ray\n"
            "from tune.cli import config_from_args\n"
            "from tune.study_runner import connect\n"
            f"cfg, _ = config_from_args(['--no-dashboard', '--num-cpus', '1', '--storage-path', {str(tmp_path / 'r')!r}])\n"
            "connect(cfg)\n"
            "assert ray.is_initialized()\n"
            "ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_MODE")}
    env.update(RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0")
    assert not token.exists()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert token.exists() and stat.S_IMODE(token.stat().st_mode) == 0o600


def test_an_existing_readable_token_is_tightened(tmp_path, monkeypatch):
    from tune.auth_token import secure_auth_token

    token = tmp_path / "auth_token"
    token.write_text("x" * 64)
    token.chmod(0o644)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert secure_auth_token(create=False) == token
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    link = tmp_path / "link"
    link.symlink_to(token)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(link))
    with pytest.raises(PermissionError, match="symbolic link"):
        secure_auth_token(create=False)
