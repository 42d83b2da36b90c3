"""The tracking options checked before Ray starts and before the study's folder is claimed, so a
bad one is one line (exit 2) and the study name stays free: an MLflow URI must answer within a few
seconds (or name a sqlite file whose folder exists), ``--wandb online`` needs an API key. Without
this Ray's callbacks fail only once the study runs (MLflow retried for minutes)."""
from __future__ import annotations

import netrc
import os
import socket
import urllib.parse

from tune.errors import StudyError

MLFLOW_TIMEOUT_S = 3.0
MLFLOW_ALLOWED = "http(s)://HOST:PORT of a running MLflow server, sqlite:///path/mlflow.db in an existing folder, " \
                 "file:///path in an existing folder, or databricks"
WANDB_HOST = "api.wandb.ai"


def _folder_must_exist(uri: str, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(os.path.expanduser(path))) if path else ""
    if not path or not os.path.isdir(folder):
        raise StudyError(f"mlflow={uri!r} is invalid: the folder {folder or '(none)'} does not exist (MLflow would "
                         f"create it); allowed: {MLFLOW_ALLOWED}")


def check_mlflow(uri: str, timeout: float = MLFLOW_TIMEOUT_S) -> None:
    """The URI's server answers a TCP connect within ``timeout`` s, or its file's folder exists."""
    parts = urllib.parse.urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        try:
            port = parts.port or (443 if scheme == "https" else 80)
            with socket.create_connection((parts.hostname or "", port), timeout=timeout):
                return
        except (OSError, ValueError) as e:
            why = "timed out" if isinstance(e, TimeoutError) else (getattr(e, "strerror", None) or str(e))
            raise StudyError(f"mlflow={uri!r} is invalid: nothing answers there within {timeout:g} s ({why}); "
                             f"allowed: {MLFLOW_ALLOWED}") from None
    if scheme == "sqlite":   # SQLAlchemy: sqlite:///relative.db, sqlite:////absolute.db
        return _folder_must_exist(uri, uri.strip()[len("sqlite:///"):] if uri.strip().startswith("sqlite:///") else "")
    if scheme == "file":
        return _folder_must_exist(uri, parts.path)
    if scheme == "databricks" or uri.strip() == "databricks":
        return
    raise StudyError(f"mlflow={uri!r} is invalid: unknown scheme {scheme or '(none)'!r}; allowed: {MLFLOW_ALLOWED}")


def check_wandb(mode: str) -> None:
    """``online`` needs a W&B API key: WANDB_API_KEY, or a netrc entry for api.wandb.ai (wandb login)."""
    if mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(WANDB_HOST):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise StudyError("wandb='online' is invalid: no W&B API key (WANDB_API_KEY is unset and ~/.netrc has no "
                     f"{WANDB_HOST} entry); allowed: online after `wandb login` or with WANDB_API_KEY set, or offline")


def open_local_store(uri) -> None:
    """A local store (sqlite:, file:) opened once by the real run before Ray starts (a dry run writes
    no file), so a store this MLflow refuses (an unwritable file, a database of another schema) is
    one line too; a server is not contacted beyond check_mlflow's connect."""
    if not uri or urllib.parse.urlsplit(uri.strip()).scheme.lower() not in ("sqlite", "file"):
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - MlflowException, OSError, SQLAlchemy errors: all one line
        raise StudyError(f"mlflow={uri!r} is invalid ({' '.join(str(e).split())[:160]}); allowed: "
                         f"{MLFLOW_ALLOWED}") from None


def check_tracking(cfg) -> None:
    if cfg.mlflow:
        check_mlflow(cfg.mlflow)
    if cfg.wandb:
        check_wandb(cfg.wandb)
