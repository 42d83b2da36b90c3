"""The study command line as a new user meets it: every option has help and a group, and
--print-config writes the YAML --config reads back. None of this starts Ray."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tune.cli import FLAGS, GROUPS, OPTIONS, build_parser, config_from_args, effective_config
from tune.run_study import main

REPO = Path(__file__).resolve().parents[1]


def test_every_option_has_help_and_a_group():
    parser = build_parser()
    grouped = {opt for _, _, opts in GROUPS for opt in opts}
    assert grouped == set(OPTIONS) | set(FLAGS)
    for action in parser._actions:   # argparse keeps no public list of actions
        assert action.help, action.option_strings
    titles = [g.title for g in parser._action_groups]
    for title in ("what to sweep", "the trial (data, net, loss)", "scheduler and search", "resources",
                  "cluster and storage", "output and resume"):
        assert title in titles


def test_print_config_round_trips_through_config(tmp_path, capsys):
    argv = ["--variants", "vae,powerlaw_clamp", "--gammas", "0:1.5:0.5", "--epochs", "2", "--lrs", "1e-3,3e-3",
            "--set", "kl_estimator=analytic", "--storage-path", str(tmp_path)]
    assert main(argv + ["--print-config"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("#") and "study_name" not in text   # a generated name would collide on a rerun
    data = yaml.safe_load(text)
    assert data["trial"]["kl_estimator"] == "analytic" and data["trial"]["max_epochs"] == 2
    f = tmp_path / "study.yaml"
    f.write_text(text)
    again, args = config_from_args(["--config", str(f)])
    first, args0 = config_from_args(argv)
    assert effective_config(again, False) == effective_config(first, False)
    assert again.trial_dicts() == first.trial_dicts()
    # and the file runs as a dry run
    assert main(["--config", str(f), "--dry-run"]) == 0
    assert f"{first.count()} trials" in capsys.readouterr().out


def test_print_config_keeps_a_chosen_name_and_bad_input_is_still_one_line(tmp_path, capsys):
    assert main(["--study-name", "mine", "--storage-path", str(tmp_path), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["study_name"] == "mine"
    assert main(["--gammas", "-1", "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_installed_commands_are_declared_and_help_runs():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+; the project allows 3.10")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"plvae-study": "tune.run_study:main", "plvae-analyze": "analysis.__main__:main"}
    for cmd, needle in (([sys.executable, "tune/run_study.py", "--help"], "--print-config"),
                        ([sys.executable, "-m", "analysis", "--help"], "--significance")):
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and needle in proc.stdout, proc.stderr[-2000:]


def test_help_shows_the_defaults_and_the_name_it_was_run_as(tmp_path):
    """--help gives each option's default (the quick preset's); usage names the command as run
    (`plvae-study` installed, `run_study.py` as a script), never a hard-coded script name."""
    from tune.cli import build_parser
    text = build_parser().format_help()
    assert "(default: fifo)" in text and "(default: 0,1,2)" in text and "(default: natural_patches)" in text
    link = tmp_path / "plvae-study"
    link.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(REPO)!r})\n"
                    "from tune.run_study import main\nsys.exit(main())\n")
    link.chmod(0o755)
    proc = subprocess.run([str(link), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: plvae-study"), proc.stderr[-2000:]


def test_print_config_does_not_bake_in_this_machines_storage_path(tmp_path, capsys, monkeypatch):
    """The default storage path stays `results` (relative to where the study runs); a path the user
    gave is kept as given (made absolute)."""
    monkeypatch.chdir(tmp_path)
    assert main(["--print-config"]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["storage_path"] == "results" and str(tmp_path) not in yaml.safe_dump(out)
    assert main(["--storage-path", str(tmp_path / "elsewhere"), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["storage_path"] == str(tmp_path / "elsewhere")
