"""What a study checks before Ray starts and before its name is claimed (issue 21): the tracking
options, the storage path and the data, in the dry run as in the real run; each a one-line error
with exit status 2 that leaves the study name free."""
from __future__ import annotations

import socket
import time

import pytest

from tune.run_study import main

BASE = ["--variants", "vae", "--gammas", "0.5", "--seeds", "0", "--epochs", "1", "--study-name", "s"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def closed_port() -> int:
    with socket.socket() as s:     # bound, never listening: a connect is refused at once
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize("option,needle", [
    (["--mlflow", "http://127.0.0.1:{port}"], "nothing answers there within 3 s"),
    (["--mlflow", "sqlite:////missing/dir/m.db"], "the folder /missing/dir does not exist"),
    (["--mlflow", "bogus://x"], "unknown scheme 'bogus'"),
    (["--wandb", "online"], "no W&B API key"),
    (["--set", "dataset=image_folder", "--set", "data_dir=/no/such/photos"], "not a directory"),
    (["--storage-path", "{file}/under"], "is a file, not a folder")])
def test_bad_tracking_storage_and_data_are_one_line_before_ray_and_the_name_stays_free(
        tmp_path, capsys, monkeypatch, option, needle, dry_run):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    (tmp_path / "afile").write_text("")
    option = [o.format(port=closed_port(), file=tmp_path / "afile") for o in option]
    if option[0] in ("--mlflow", "--wandb"):
        pytest.importorskip(option[0][2:])
    storage = [] if option[0] == "--storage-path" else ["--storage-path", str(tmp_path / "results")]
    t0 = time.time()
    assert main(BASE + storage + option + (["--dry-run"] if dry_run else [])) == 2
    assert time.time() - t0 < 10
    assert needle in one_line_error(capsys)
    assert not (tmp_path / "results" / "s").exists()          # not claimed: the name is free


def test_good_tracking_options_pass(tmp_path, monkeypatch):
    from tune.tracking_check import check_mlflow, check_wandb

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_mlflow(f"http://127.0.0.1:{server.getsockname()[1]}")
    check_mlflow(f"sqlite:///{tmp_path}/m.db")                 # sqlite:////abs/path
    check_mlflow("databricks")
    monkeypatch.setenv("WANDB_API_KEY", "k")
    check_wandb("online")
    monkeypatch.delenv("WANDB_API_KEY")
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password k\n")
    (tmp_path / "netrc").chmod(0o600)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    check_wandb("online")
    check_wandb("offline")


def test_a_hash_in_set_is_kept_literally_not_read_as_a_comment(tmp_path, capsys):
    from tune.cli import config_from_args

    cfg, _ = config_from_args(BASE + ["--set", "data_dir=/x/photos #2", "--storage-path", str(tmp_path)])
    assert cfg.trial["data_dir"] == "/x/photos #2"
    cfg, _ = config_from_args(BASE + ["--set", "data_dir=/x/photos#2", "--storage-path", str(tmp_path)])
    assert cfg.trial["data_dir"] == "/x/photos#2"                      # YAML keeps this one too
    assert main(BASE + ["--set", "n_train=256 #small", "--storage-path", str(tmp_path), "--dry-run"]) == 2
    assert "n_train" in one_line_error(capsys)                          # not silently 256
