"""Run a Ray Tune study of power-law-prior VAEs: ``python tune/run_study.py [options]``
(installed as the ``plvae-study`` command).

With no options: the ``quick`` preset, a small real study on this machine (local Ray, offline
natural-image patches, every prior variant). ``--help`` lists the options; ``--dry-run`` prints
the trials without starting Ray (with ``--resume``: which trials are finished, in progress,
damaged or not started); ``--print-config`` prints the effective configuration as YAML that
``--config`` reads back. Bad input is one line on stderr (``error: ...``), exit status 2, before
Ray starts.

Where each job lives:
- tune/cli.py: the options and presets -> a StudyConfig; tune/study_config.py and
  tune/sweeps.py: the study and its grid; tune/plan.py: the trials a study runs, and the dry run's text;
- tune/study_record.py: the study's life as one handle, StudyRecord, the only writer of
  study.json (open, claim, heartbeat, status, finish); tune/resume.py: what --resume may change
  and would do; tune/staging.py: the copy a killed driver left half done;
- tune/study_data.py: the data, once; tune/study_runner.py: Ray and the Tuner; tune/summary.py:
  outcomes, best trials and the closing text; tune/trainable.py, tune/lightning_callback.py and
  tune/reporting.py: one trial and what it reports;
- tune/storage.py: files, local or URI; tune/errors.py: the one-line StudyError.
"""
from __future__ import annotations

import os
import socket
import sys

from plvae.config import ConfigError
from tune.cli import config_from_args, print_config
from tune.errors import StudyError
from tune.plan import describe, plan
from tune.study_config import StudyConfig
from tune.study_data import check_data_before_ray, load_and_measure
from tune.storage import is_uri
from tune.study_record import StudyRecord
from tune.tracking_check import check_tracking

# Environment variables Ray reads, set once here at the entry point (setdefault: the user's own win).
PROCESS_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # The legacy console output: the new one shows no parameter columns for a list of preset
    # configs, and the CLIReporter lets us choose the columns a researcher scans.
    "RAY_AIR_NEW_OUTPUT": "0",
    # Snapshot the experiment state often (it is small): less work redone after a driver crash.
    "TUNE_GLOBAL_CHECKPOINT_S": "3",
    # Trials checkpoint every epoch, which forces snapshots by design (num_to_keep): no warning.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}
ADDRESS_TIMEOUT_S = 10.0


# gRPC speaks HTTP/2: a client preface and an empty SETTINGS frame. A Ray head's GCS answers with
# frames of its own; a web server (the dashboard's port 8265 is the likely mistake) with "HTTP/1.x".
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def speaks_http2_or_tls(first: bytes) -> bool:
    """Whether a server's first bytes can be Ray's GCS: an HTTP/2 server's preface is a SETTINGS
    frame (type 4, the frame header's 4th byte), a TLS server (RAY_USE_TLS) answers with a record
    of type 21 or 22; too few bytes to tell (or none) is given the benefit of the doubt."""
    return len(first) < 4 or first[0] in (21, 22) or first[3] == 4


def preflight_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """HOST:PORT must accept a connection within `timeout` s, and must not answer as a plain web
    server: Ray itself would wait for minutes either way, behind its own C++ log lines. Anything
    else (HTTP/2 frames, TLS, silence) is left for Ray to judge."""
    if address == "auto":
        return   # resolved by Ray from this node's cluster; ray.init fails fast when there is none
    host, _, port = address.rpartition(":")
    allowed = ("allowed: the HOST:PORT of a running Ray head (ray start --head prints it; not the dashboard's "
               "port), or 'auto' on a node of a running cluster")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            conn.settimeout(2.0)
            try:
                conn.sendall(HTTP2_PREFACE)
                first = conn.recv(16)
            except OSError:
                first = b""
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise StudyError(f"address={address!r} is invalid: nothing answers there within {timeout:g} s ({why}); "
                         f"{allowed}") from None
    if not speaks_http2_or_tls(first):
        raise StudyError(f"address={address!r} is invalid: a web server answers there, not a Ray head; {allowed}")


def preflight(cfg: StudyConfig) -> None:
    """What can be checked before Ray starts and before the study's folder is claimed."""
    check_storage_path(cfg.storage_path)
    check_tracking(cfg)
    if cfg.address is not None:
        preflight_address(cfg.address)
    check_data_before_ray(cfg)


def check_storage_path(path: str) -> None:
    """A local storage path must be a folder, or creatable: its nearest existing ancestor a folder."""
    if is_uri(path):
        return
    p = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(p) and os.path.dirname(p) != p:
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        raise StudyError(f"storage_path={path!r} is invalid: {p} is a file, not a folder; allowed: a folder, or a "
                         f"new one under an existing folder, or a URI such as s3://bucket/path")


def dry_run(study: StudyRecord) -> str:
    """The plan a real run would execute and, resumed, what the resume would do; without Ray."""
    cfg, alphas = study.cfg, study.data_alpha
    if cfg.gamma_from_data and not alphas:   # measured here, without Ray: the data are loaded
        alphas = load_and_measure(cfg, measure=True)[1]
    p = plan(cfg, alphas)
    return "\n".join(p.notes + [describe(p.study, p.trials)] + study.dry_run_report(p.trials))


def set_process_env(cfg: StudyConfig) -> None:
    for key, value in PROCESS_ENV.items():
        os.environ.setdefault(key, value)
    if cfg.wandb:  # Ray's W&B callback needs no API key only when the mode is in the environment
        os.environ.setdefault("WANDB_MODE", cfg.wandb)


def main(argv=None) -> int:
    try:
        cfg, args = config_from_args(argv)
        if args.print_config:   # YAML only on stdout, so `plvae-study ... --print-config > study.yaml` works
            for note in args.notes:
                print(note, file=sys.stderr)
            print(print_config(cfg, args.explicit_name), end="")
            return 0
        for note in args.notes:
            print(note)
        # 1. open the study: a new one, or the one --resume continues (its own configuration)
        study = StudyRecord.open(cfg, args.given, args.explicit_name, args.resume)
        for note in study.notes:
            print(note)
        preflight(study.cfg)    # 2. what can be checked before Ray (a dry run refuses what the run refuses)
        if args.dry_run:        # 3. or only say what it would do
            print(dry_run(study))
            return 0
        for note in study.claim():   # 4. the folder claimed (resumed: the killed driver's copy finished)
            print(note)
        set_process_env(study.cfg)
        from tune.study_runner import run  # imports Ray: only once the input is known to be good

        return run(study)       # 5. run it: Ray, the Tuner, the final record
    except ConfigError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
