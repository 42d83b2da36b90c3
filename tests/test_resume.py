"""The study record without Ray: claim, heartbeat, --resume's refusals and its dry run, and the
bad input that must be one line before Ray starts (address, grid size, YAML, data)."""
from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tune.cli import config_from_args
from tune.run_study import main
from tune.study_config import StudyError
from plvae.study_files import TUNER_FILE as TUNER_STATE
from tune.study_record import STALE_S, claim, driver_alive, new_record, prepare_resume, read_record, resume_candidate

REPO = Path(__file__).resolve().parents[1]
STATE = "experiment_state-2020-01-01_00-00-00.json"
BASE = ["--variants", "vae,powerlaw", "--gammas", "0.5", "--seeds", "0,1", "--epochs", "2"]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def make_study(tmp_path, name="s", status="running", alive=False, tuner_state=True, argv=BASE) -> tuple:
    """A study folder as an interrupted driver leaves it: study.json (driver gone), Tune's tuner.pkl."""
    cfg, _ = config_from_args(argv + ["--storage-path", str(tmp_path), "--study-name", name])
    rec = new_record(cfg)
    rec["status"] = status
    if not alive:
        rec["heartbeat"] = "2020-01-01T00:00:00+00:00"
    claim(cfg, rec)
    if tuner_state:
        (tmp_path / name / TUNER_STATE).write_bytes(pickle.dumps({"stands for": "Tune's Tuner"}))
        (tmp_path / name / STATE).write_text(json.dumps({"trial_data": [], "runner_data": {}}))
    return cfg, rec


# ---------------------------------------------------------------------------- resume
def test_resume_refuses_each_changed_flag_in_one_line(tmp_path, capsys):
    make_study(tmp_path)
    rc = main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s",
               "--epochs", "3", "--gammas", "0.9", "--lrs", "0.01", "--max-failures", "5", "--preset", "paper"])
    line = one_line_error(capsys)
    assert rc == 2
    for flag in ("--epochs (2 -> 3)", "--gammas ([0.5] -> [0.9])", "--lrs", "--max-failures", "--preset"):
        assert flag in line, line


def test_resume_applies_the_options_that_are_safe_and_says_so(tmp_path, capsys):
    make_study(tmp_path)
    again, args = config_from_args(BASE + ["--storage-path", str(tmp_path), "--study-name", "s",
                                           "--cpus-per-trial", "2", "--no-dashboard"])
    cfg, prior, notes = prepare_resume(again, args.given)
    assert cfg.cpus_per_trial == 2 and cfg.dashboard is False and cfg.gammas == [0.5]
    assert prior["status"] == "running"
    assert len(notes) == 1 and "--cpus-per-trial 1 -> 2" in notes[0]


def test_resume_without_tune_state_is_refused(tmp_path, capsys):
    make_study(tmp_path, tuner_state=False)
    assert main(["--resume", "--storage-path", str(tmp_path), "--study-name", "s"]) == 2
    line = one_line_error(capsys)
    assert TUNER_STATE in line and "new --study-name" in line
    assert not list((tmp_path / "s").glob("*_*"))   # nothing rerun beside the old trials


@pytest.mark.parametrize("text,needle", [("[1, 2]", "not a study record"), ('{"status": "running"}', "study_name"),
                                         ("{not json", "not JSON")])
def test_a_study_json_that_is_no_study_is_one_line(tmp_path, capsys, text, needle):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text(text)
    assert main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s"]) == 2
    assert needle in one_line_error(capsys)


def test_a_live_driver_is_no_resume_candidate(tmp_path, capsys):
    make_study(tmp_path, name="old")                      # driver gone
    time.sleep(1.1)
    make_study(tmp_path, name="live", alive=True)         # this process's pid, fresh heartbeat
    assert driver_alive(read_record(str(tmp_path / "live")))
    assert resume_candidate(str(tmp_path)) == "old"       # the newer study is still running elsewhere
    assert main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "live"]) == 2
    assert "driver is alive" in one_line_error(capsys)
    rec = read_record(str(tmp_path / "live"))
    rec["driver"]["pid"] = 2 ** 22 + 12345                  # no such process on this host: gone
    assert not driver_alive(rec)
    rec["driver"]["host"] = "elsewhere"                    # another host: only the heartbeat tells
    assert driver_alive(rec)
    import datetime as dt
    assert not driver_alive(rec, dt.datetime.now().astimezone() + dt.timedelta(seconds=STALE_S + 1))


def test_resume_dry_run_says_which_trials_are_finished_in_progress_damaged_or_missing(tmp_path, capsys):
    cfg, rec = make_study(tmp_path)
    trials = cfg.trial_dicts()
    exp = tmp_path / "s"
    for i, (t, lines) in enumerate(zip(trials[:3], (2, 1, None))):
        d = exp / f"{t['variant']}_{i}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(t))
        rows = [json.dumps({"training_iteration": k}) for k in range(1, (lines or 1) + 1)]
        (d / "result.json").write_text("\n".join(rows + ([] if lines else ["{torn"])) + "\n")
        (d / "checkpoint_000000").mkdir()
    assert main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s"]) == 0
    out = capsys.readouterr().out
    assert f"resume s: 1 finished (kept), 1 in progress (continued from their last checkpoint), 1 damaged, " \
           f"{len(trials) - 3} not started" in out
    assert "epoch 1, 1 checkpoint(s)" in out and "1 unreadable result line(s)" in out


# ---------------------------------------------------------------------------- names and storage
def test_the_study_folder_is_claimed_once(tmp_path, capsys):
    cfg, rec = make_study(tmp_path, name="taken")
    with pytest.raises(StudyError, match="study_name='taken' is invalid: .* exists"):
        claim(cfg, rec)
    assert read_record(str(tmp_path / "taken"))["status"] == "running"   # the first claim's record stands


def test_default_names_do_not_collide_within_a_second():
    names = {config_from_args(["--storage-path", "/tmp"])[0].study_name for _ in range(20)}
    assert len(names) == 20


def test_unwritable_storage_is_one_line_before_ray(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")   # a path under a file cannot be created, even by root
    code = ("import sys; from tune.run_study import main; "
            f"rc = main({BASE!r} + ['--storage-path', {str(tmp_path / 'a_file' / 'results')!r}]); "
            "print(rc, 'ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.stdout.split() == ["2", "False"], p.stdout + p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: storage_path=") and "allowed:" in err[0], err


def test_address_where_nothing_listens_fails_fast_without_ray(tmp_path):
    code = ("import sys, time; from tune.run_study import main; t = time.time(); "
            f"rc = main(['--address', '127.0.0.1:1', '--storage-path', {str(tmp_path)!r}, '--study-name', 'a']); "
            "print(rc, round(time.time() - t, 1), 'ray' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    rc, secs, ray_imported = p.stdout.split()
    assert rc == "2" and float(secs) <= 30 and ray_imported == "False", p.stdout + p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: address='127.0.0.1:1' is invalid: nothing answers")
    assert not (tmp_path / "a").exists()


def test_address_where_a_web_server_answers_is_one_line_without_ray(tmp_path):
    """The likely mistake: the dashboard's URL given as --address. Ray would retry its GCS client for
    minutes behind C++ log lines; the study says it in one line, before Ray starts."""
    import http.server
    import threading

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        code = ("import sys; from tune.run_study import main; "
                f"rc = main(['--address', {address!r}, '--storage-path', {str(tmp_path)!r}, '--study-name', 'a']); "
                "print(rc, 'ray' in sys.modules)")
        p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
    assert p.stdout.split() == ["2", "False"], p.stdout + p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: address={address!r} is invalid: a web server answers"), err
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------------------- grid size and bad input
def test_a_huge_grid_is_counted_in_linear_time_and_refused_over_the_cap(capsys, tmp_path):
    t = time.time()
    rc = main(["--variants", "powerlaw", "--gammas", "0:100000:1", "--seeds", "0:10:1", "--dry-run",
               "--storage-path", str(tmp_path)])
    assert rc == 2 and time.time() - t < 20
    line = one_line_error(capsys)
    assert "trials=1000000 is invalid" in line and "--max-trials 1000000" in line
    cfg, _ = config_from_args(["--variants", "powerlaw", "--gammas", "0:6000:1", "--seeds", "0", "--max-trials", "6000"])
    assert cfg.count() == len(cfg.trial_dicts()) == 6000


@pytest.mark.parametrize("argv,needle", [
    (["--set", "kl_estimator=[analytic"], "set='kl_estimator=[analytic'"),
    (["--set", "extra=3"], "extra=3"),
    (["--set", "download='no'"], "download='no'"),   # quoted YAML: a string, which Python counts as True
    (["--set", "precision=garbage"], "precision='garbage'"),
    (["--net", "resnet18"], "enc_out_dim=64 is invalid for net 'resnet18'"),
    (["--set", "n_train=1000000000"], "n_train=1000000000"),
    (["--max-trials", "0"], "max_trials=0"),
])
def test_more_bad_input_is_one_line(argv, needle, capsys, tmp_path):
    assert main(argv + ["--storage-path", str(tmp_path), "--dry-run"]) == 2
    assert needle in one_line_error(capsys)


def test_missing_data_with_gamma_from_data_is_one_line(capsys, tmp_path):
    argv = ["--gamma-from-data", "--dataset", "image_folder", "--data-dir", str(tmp_path / "none"),
            "--storage-path", str(tmp_path)]
    assert main(argv + ["--dry-run"]) == 2
    assert "image_folder" in one_line_error(capsys)
    assert main(argv) == 2                              # the real run: refused before Ray and the claim
    assert "data_dir=" in one_line_error(capsys)
    assert not [p for p in tmp_path.iterdir() if p.name != "none"]


def test_plvae_never_imports_ray():
    code = ("import importlib, pkgutil, sys, plvae\n"
            "for m in pkgutil.iter_modules(plvae.__path__): importlib.import_module('plvae.' + m.name)\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- a killed driver's copy
def _staged_study(tmp_path, monkeypatch):
    """A study folder as Tune's copy left it, and Ray's staging folder for it under RAY_TMPDIR."""
    from tune.study_config import StudyConfig

    cfg = StudyConfig(storage_path=str(tmp_path / "results"), study_name="s")
    exp = Path(cfg.experiment_path)
    ray_tmp = tmp_path / "raytmp"
    stage = ray_tmp / "ray" / "session_2026-11-26_10-00-00_1_1" / "artifacts" / "2026-11-26_10-00-01" / "s" / \
        "driver_artifacts"
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    for root in (exp, stage):
        (root / "t1").mkdir(parents=True)
        (root / "t2").mkdir(parents=True)
        (root / "experiment_state-2026-11-26_10-00-01.json").write_text('{"trials": 2}')
        (root / "t2" / "params.json").write_text('{"seed": 2}')
        (root / "t2" / "result.json").write_text("")     # started, nothing reported yet: not torn
    good = '{"training_iteration": 1}\n{"training_iteration": 2}\n'
    (stage / "t1" / "params.json").write_text('{"seed": 1}')
    (stage / "t1" / "result.json").write_text(good)
    (exp / "t1" / "params.json").write_text("")                         # what the kill left
    (exp / "t1" / "result.json").write_text(good[:30])                  # cut mid-line
    (exp / "t1" / "checkpoint_000001").mkdir()                          # written by the worker: untouched
    return cfg, exp, stage, good


def test_resume_finishes_the_copy_a_killed_driver_left_half_done(tmp_path, monkeypatch):
    from tune.staging import finish_interrupted_copy, plan_repair

    cfg, exp, stage, good = _staged_study(tmp_path, monkeypatch)
    rep = plan_repair(cfg)
    assert rep.staging == str(stage) and sorted(rep.files) == ["t1/params.json", "t1/result.json"] and not rep.torn
    notes = finish_interrupted_copy(cfg, dry_run=True)
    assert len(notes) == 1 and notes[0].startswith("resume: would copy 2 file(s)") and "(trials: t1)" in notes[0]
    assert (exp / "t1" / "params.json").read_text() == ""                # a dry run changes nothing
    assert finish_interrupted_copy(cfg)[0].startswith("resume: copied 2 file(s)")
    assert (exp / "t1" / "params.json").read_text() == '{"seed": 1}' and (exp / "t1" / "result.json").read_text() == good
    assert (exp / "t1" / "checkpoint_000001").is_dir()
    assert finish_interrupted_copy(cfg) == []                            # nothing left to do


def test_without_the_staging_folder_torn_records_are_named(tmp_path, monkeypatch):
    import shutil

    from tune.staging import plan_repair

    cfg, exp, stage, _ = _staged_study(tmp_path, monkeypatch)
    shutil.rmtree(stage.parents[3])          # another machine, or a cleaned /tmp: the session is gone
    rep = plan_repair(cfg)
    assert rep.staging is None and rep.files == [] and rep.torn == ["t1"]   # t2's empty result.json is not torn
    note = rep.notes(done=True)
    assert len(note) == 1 and "1 trial record(s) are torn" in note[0] and note[0].endswith(": t1")
    # A staging folder of another study (another experiment state) is never used.
    (stage / "t1").mkdir(parents=True)
    (stage / "experiment_state-2026-11-26_09-00-00.json").write_text("{}")
    assert plan_repair(cfg).staging is None


# ---------------------------------------------------------------------------- the study's life, one handle
def test_a_failure_while_running_says_why_and_frees_a_study_that_started_no_trial(tmp_path):
    from tune.study_record import StudyRecord

    cfg, _ = config_from_args(BASE + ["--storage-path", str(tmp_path), "--study-name", "new"])
    study = StudyRecord.open(cfg)
    assert study.claim() == [] and read_record(str(tmp_path / "new"))["status"] == "claimed"
    with pytest.raises(StudyError):
        with study.running():
            raise StudyError("gpus_per_trial=1 is invalid with 0 GPUs; allowed: ...")
    assert not (tmp_path / "new").exists()           # no trial started: the name is free again

    cfg, _ = config_from_args(BASE + ["--storage-path", str(tmp_path), "--study-name", "started"])
    study = StudyRecord.open(cfg)
    study.claim()
    with pytest.raises(KeyboardInterrupt):
        with study.running():
            study.start_trials(num_trials=4)
            assert read_record(str(tmp_path / "started"))["status"] == "running"
            raise KeyboardInterrupt
    rec = read_record(str(tmp_path / "started"))     # trials ran: kept, for --resume
    assert rec["status"] == "interrupted" and rec["reason"] == "KeyboardInterrupt"

    make_study(tmp_path, name="old")                 # a resumed study whose restore fails
    again, args = config_from_args(BASE + ["--storage-path", str(tmp_path), "--study-name", "old"])
    study = StudyRecord.open(again, args.given, explicit_name=True, resume=True)
    assert study.resumed and study.record["study_name"] == "old"
    with pytest.raises(RuntimeError):
        with study.running():
            assert read_record(str(tmp_path / "old"))["status"] == "running"   # a second --resume sees it live
            raise RuntimeError("experiment state\ntruncated")
    rec = read_record(str(tmp_path / "old"))
    assert rec["status"] == "interrupted" and rec["reason"] == "RuntimeError: experiment state truncated"


def test_finish_counts_a_trial_that_reported_every_epoch_as_completed_though_tune_said_running(tmp_path):
    import io

    from plvae import metrics as M
    from tune.study_record import StudyRecord

    cfg, _ = config_from_args(BASE + ["--storage-path", str(tmp_path), "--study-name", "s"])
    study = StudyRecord.open(cfg)
    study.claim()

    def trial(status, epochs, value, variant="powerlaw"):
        return {"status": status, "config": {"variant": variant, "gamma": 0.5, "seed": 0},
                "last_result": {"training_iteration": epochs, cfg.metric: value}}

    saved = {"a": trial("TERMINATED", 2, 0.5, "vae"), "b": trial("RUNNING", 2, 0.4), "c": trial("TERMINATED", 1, 0.3)}
    out = io.StringIO()
    with study.running():
        assert study.finish(saved, out) == 0
    rec = read_record(str(tmp_path / "s"))
    assert rec["status"] == "finished" and rec["reason"] is None
    assert rec["trial_outcome"] == {"a": M.COMPLETED, "b": M.COMPLETED, "c": M.EARLY_STOPPED}
    # ranked at one epoch: b's epoch-2 value, not c's lower epoch-1 value
    assert rec["best_per_variant"]["powerlaw"]["trial_id"] == "b" and "1 early-stopped" in out.getvalue()
    saved["d"] = trial("ERROR", 1, 0.1)              # errored: exit status 1, never the best
    saved["e"] = trial("PENDING", 0, None)           # unfinished: interrupted, 130
    with study.running():
        assert study.finish(saved, io.StringIO()) == 130
    rec = read_record(str(tmp_path / "s"))
    assert rec["status"] == "interrupted" and rec["reason"] == "1 trial(s) unfinished when Tune stopped"
    assert rec["best_per_variant"]["powerlaw"]["trial_id"] == "b"
    del saved["e"]
    with study.running():
        assert study.finish(saved, io.StringIO()) == 1


# ---------------------------------------------------------------------------- nothing planted is trusted
class _Payload:
    """What a hostile local user would pickle: unpickling it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "payload ran"))


def _unpickle_like_tune(state_file: Path) -> None:
    """Tune's restore unpickles each CLOUDPICKLE_FALLBACK value of the experiment state."""
    import pickle

    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("_type") == "CLOUDPICKLE_FALLBACK":
                pickle.loads(bytes.fromhex(obj["value"]))
            for v in obj.values():
                walk(v)
        elif isinstance(obj, list):
            for v in obj:
                walk(v)
    walk(json.loads(state_file.read_text()))


@pytest.mark.parametrize("plant", ["world_writable", "another_run", "another_owner", "symlink"])
def test_a_planted_staging_folder_is_refused_and_its_payload_never_runs(tmp_path, monkeypatch, plant):
    import os
    import pickle
    import shutil

    from tune.staging import finish_interrupted_copy, plan_repair

    cfg, exp, stage, _ = _staged_study(tmp_path, monkeypatch)
    state = "experiment_state-2026-11-26_10-00-01.json"
    marker = tmp_path / "marker"
    payload = {"runner_data": {"_start_time": 1.0},
               "trial_data": [{"_type": "CLOUDPICKLE_FALLBACK", "value": pickle.dumps(_Payload(marker)).hex()}]}
    (stage / state).write_text(json.dumps(payload))
    (exp / state).write_text("")                       # torn by the kill: only the staging copy could say which run
    if plant == "world_writable":                      # a folder another user could have written into
        os.chmod(stage.parent, 0o777)
    elif plant == "another_run":                       # a folder named after another run of this study
        other = stage.parents[2] / "2026-11-26_09-00-00"
        shutil.move(str(stage.parents[1]), str(other))
        stage = other / "s" / "driver_artifacts"
    elif plant == "another_owner":
        if os.geteuid() != 0:
            pytest.skip("chown to another user needs root")
        os.chown(stage.parents[3], 65534, 65534)       # the session folder belongs to nobody
    else:                                              # a link to a file this study never wrote
        (stage / "t1" / "result.json").unlink()
        (stage / "t1" / "result.json").symlink_to(tmp_path / "elsewhere.json")
        (tmp_path / "elsewhere.json").write_text("{}\n")
    rep = plan_repair(cfg)
    assert rep.staging is None and rep.files == [] and len(rep.refused) == 1, rep
    notes = finish_interrupted_copy(cfg)
    assert any(n.startswith("resume: not copying from a staging folder this user did not create") for n in notes)
    why = {"world_writable": "writable by group or others (mode 777)", "another_run": "lies in the folder of run",
           "another_owner": "owned by uid 65534", "symlink": "is a symbolic link"}[plant]
    assert why in rep.refused[0], rep.refused
    assert (exp / state).read_text() == "" and (exp / "t1" / "params.json").read_text() == ""   # nothing copied
    _unpickle_like_tune(exp / state) if (exp / state).read_text() else None
    assert not marker.exists()
    _unpickle_like_tune(stage / state)                 # the control: the planted bytes do run when unpickled
    assert marker.read_text() == "payload ran"


def test_a_staging_folder_of_another_start_time_is_refused(tmp_path, monkeypatch):
    from tune.staging import plan_repair

    cfg, exp, stage, _ = _staged_study(tmp_path, monkeypatch)
    state = "experiment_state-2026-11-26_10-00-01.json"
    (exp / state).write_text(json.dumps({"runner_data": {"_start_time": 1.0}, "trial_data": []}))
    (stage / state).write_text(json.dumps({"runner_data": {"_start_time": 2.0}, "trial_data": []}))
    rep = plan_repair(cfg)
    assert rep.staging is None and "records another run" in rep.refused[0]
    (stage / state).write_text(json.dumps({"runner_data": {"_start_time": 1.0}, "trial_data": []}))
    assert plan_repair(cfg).staging == str(stage)


def test_a_bare_resume_ignores_planted_and_future_studies(tmp_path):
    import datetime as dt
    import os

    make_study(tmp_path, name="mine")
    time.sleep(1.1)
    make_study(tmp_path, name="future")
    rec = read_record(str(tmp_path / "future"))
    rec["started"] = (dt.datetime.now().astimezone() + dt.timedelta(days=365)).isoformat(timespec="seconds")
    (tmp_path / "future" / "study.json").write_text(json.dumps(rec))
    assert resume_candidate(str(tmp_path)) == "mine"          # a start time in the future is planted
    time.sleep(1.1)
    make_study(tmp_path, name="planted")
    assert resume_candidate(str(tmp_path)) == "planted"
    if os.geteuid() == 0:
        os.chown(tmp_path / "planted" / "study.json", 65534, 65534)   # written by another user
    else:
        (tmp_path / "planted" / "study.json").rename(tmp_path / "planted" / "real.json")
        (tmp_path / "planted" / "study.json").symlink_to(tmp_path / "planted" / "real.json")
    assert resume_candidate(str(tmp_path)) == "mine"



def _tune_trial(tid, status, logdir, config):
    return [json.dumps({"trial_id": tid, "status": status, "relative_logdir": logdir, "config": config}), "{}"]


@pytest.mark.parametrize("damage,needle", [
    (lambda exp: (exp / STATE).write_text(""), f"{STATE} under"),
    (lambda exp: (exp / STATE).write_text('{"trial_data": [["{\\"trial'), "not Tune's experiment state"),
    (lambda exp: (exp / STATE).unlink(), "no experiment_state-*.json"),
    (lambda exp: (exp / TUNER_STATE).write_bytes((exp / TUNER_STATE).read_bytes()[:-3]), "tuner.pkl under"),
    (lambda exp: (exp / TUNER_STATE).write_bytes(b""), "missing or empty")])
@pytest.mark.parametrize("dry_run", [True, False])
def test_damaged_tune_state_is_one_line_before_ray_in_the_dry_run_and_the_real_resume(tmp_path, capsys, damage,
                                                                                       needle, dry_run):
    make_study(tmp_path)
    damage(tmp_path / "s")
    argv = ["--resume", "--storage-path", str(tmp_path), "--study-name", "s"] + (["--dry-run"] if dry_run else [])
    assert main(argv) == 2
    line = one_line_error(capsys)
    assert needle in line and "Tune cannot restore it" in line and "python -m analysis" in line, line
    assert read_record(str(tmp_path / "s"))["status"] == "running"     # untouched: nothing started


def test_a_finished_trial_whose_folder_is_gone_is_lost_not_unstarted(tmp_path, capsys):
    cfg, _ = make_study(tmp_path)
    trials = cfg.trial_dicts()
    exp = tmp_path / "s"
    d = exp / "t0"
    d.mkdir()
    (d / "params.json").write_text(json.dumps(trials[0]))
    (d / "result.json").write_text('{"training_iteration": 1}\n{"training_iteration": 2}\n')
    state = [_tune_trial("x_00000", "TERMINATED", "t0", trials[0]),
             _tune_trial("x_00001", "TERMINATED", "t1", trials[1])]          # t1's folder is gone
    (exp / STATE).write_text(json.dumps({"trial_data": state, "runner_data": {}}))
    assert main(["--resume", "--dry-run", "--storage-path", str(tmp_path), "--study-name", "s"]) == 0
    out = capsys.readouterr().out
    assert f"1 finished (kept), 0 in progress (continued from their last checkpoint), 0 damaged, " \
           f"{len(trials) - 2} not started, 1 lost" in out, out
    assert "  lost: x_00001" in out


def test_more_than_twelve_grids_are_counted_as_their_union(tmp_path):
    import dataclasses

    cfg, _ = config_from_args(["--variants", "powerlaw", "--gammas", "0.5", "--seeds", "0", "--epochs", "1",
                               "--storage-path", str(tmp_path)])
    grids = [{"seeds": list(range(10 * i, 10 * i + 400))} for i in range(13)]   # 13 x 400, overlapping
    cfg = dataclasses.replace(cfg, grids=grids)
    assert cfg.count() == len(cfg.trial_dicts()) == 520               # not the sum, 5200
    cfg.validate()                                                    # under the cap of 5000: accepted


def test_finish_never_counts_a_trial_whose_folder_is_gone(tmp_path):
    import io

    from plvae import metrics as M
    from tune.study_record import StudyRecord

    cfg, _ = config_from_args(BASE + ["--storage-path", str(tmp_path), "--study-name", "s"])
    study = StudyRecord.open(cfg)
    study.claim()
    done = {"training_iteration": 2, cfg.metric: 0.5}
    saved = {"a": {"status": "TERMINATED", "config": {"variant": "vae"}, "last_result": done, "lost": False},
             "b": {"status": "TERMINATED", "config": {"variant": "powerlaw"}, "last_result": {**done, cfg.metric: 0.1},
                   "lost": True}}
    out = io.StringIO()
    with study.running():
        assert study.finish(saved, out) == 0
    rec = read_record(str(tmp_path / "s"))
    assert rec["trial_outcome"] == {"a": M.COMPLETED} and rec["summary"][M.COMPLETED] == 1
    assert rec["lost_trials"] == ["b"] and "powerlaw" not in rec["best_per_variant"]
    assert "1 trial(s) Tune counts as ended have no folder" in out.getvalue() and ": b" in out.getvalue()


def test_a_new_study_records_its_command_commit_and_versions(tmp_path):
    """study.json carries what a result needs to be rerun: the driver's command line, the git commit
    of the code it ran (this checkout's HEAD) and the package versions; report.html shows them."""
    cfg, _ = config_from_args(BASE + ["--storage-path", str(tmp_path), "--study-name", "prov"])
    rec = new_record(cfg)
    head = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert rec["argv"] == sys.argv and rec["git"]["commit"] == head and len(head) == 40
    assert rec["versions"]["torch"] and rec["versions"]["ray"]
    json.dumps(rec)   # study.json is JSON
