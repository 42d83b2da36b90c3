"""A plain local study writes Ray's auth token itself, 0600, before Ray would write a
world-readable one (issue 12, hardening); a token Ray then starts with."""
from __future__ import annotations

import os
import stat

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def test_a_local_study_makes_its_token_private(tmp_path, monkeypatch):
    import ray

    from tune.cli import config_from_args
    from tune.study_runner import connect

    token = tmp_path / "auth_token"
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    cfg, _ = config_from_args(["--no-dashboard", "--num-cpus", "1", "--storage-path", str(tmp_path / "r")])
    assert not token.exists()
    try:
        connect(cfg)
        assert ray.is_initialized()
    finally:
        ray.shutdown()
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
