"""Run a Ray Tune study of power-law-prior VAEs: ``python tune/run_study.py [options]``
(installed as the ``plvae-study`` command).

With no options: the ``quick`` preset, a small real study on this machine (local Ray, offline
natural-image patches, every prior variant). ``--help`` lists the options; ``--dry-run`` prints
the trials without starting Ray (with ``--resume``: which trials are finished, in progress,
damaged or not started); ``--print-config`` prints the effective configuration as YAML that
``--config`` reads back. Bad input is one line on stderr (``error: ...``), exit status 2, before
Ray starts. Where each job lives: tune/cli.py (options, presets, the plan), tune/study_config.py
and tune/sweeps.py (the study and its grid), tune/study_record.py (study.json, claim, heartbeat,
resume), tune/study_data.py (the data once), tune/study_runner.py (Ray and the Tuner).
"""
from __future__ import annotations

import os
import socket
import sys

from plvae.config import ConfigError
from plvae.study_files import STUDY_CLAIMED
from tune.cli import config_from_args, print_config
from tune.plan import describe, plan
from tune.errors import StudyError
from tune.study_config import StudyConfig
from tune.study_data import check_data_before_ray, load_and_measure
from tune.study_record import (claim, driver_fields, exists, now_iso, prepare_resume, resume_candidate,
                               resume_report)
from tune.staging import finish_interrupted_copy
from tune.reporting import STUDY_OBJECTIVE

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


def preflight_address(address: str, timeout: float = ADDRESS_TIMEOUT_S) -> None:
    """HOST:PORT must accept a connection within `timeout` s: Ray itself would wait for minutes."""
    if address == "auto":
        return   # resolved by Ray from this node's cluster; ray.init fails fast when there is none
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e))
        raise StudyError(f"address={address!r} is invalid: nothing answers there within {timeout:g} s ({why}); "
                         f"allowed: the HOST:PORT of a running Ray head (ray start --head prints it), or 'auto' "
                         f"on a node of a running cluster") from None


def new_record(cfg: StudyConfig) -> dict:
    """A new study's first study.json, written when its folder is claimed (before Ray starts)."""
    return {"study_name": cfg.study_name, "preset": cfg.preset, "metric": cfg.metric, "mode": "min",
            "objective": STUDY_OBJECTIVE, "scheduler": cfg.scheduler, "search": cfg.search,
            "max_epochs": cfg.max_epochs, "num_trials": cfg.count() if cfg.search == "grid" else cfg.num_samples,
            "study_config": cfg.to_dict(), "data_alpha": {}, "started": now_iso(), "finished": None,
            "status": STUDY_CLAIMED, "results_path": cfg.experiment_path, **driver_fields()}


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
        prior = None
        if args.resume:
            if not args.explicit_name:
                name = resume_candidate(cfg.storage_path)
                if name is None:
                    raise StudyError(f"resume: no unfinished study whose driver has stopped under {cfg.storage_path}; "
                                     f"allowed: --study-name NAME of a study there")
                cfg.study_name = name
            cfg, prior, notes = prepare_resume(cfg, args.given)
            for note in notes:
                print(note)
        elif exists(cfg.experiment_path):
            raise StudyError(f"study_name={cfg.study_name!r} is invalid: {cfg.experiment_path} exists; allowed: a "
                             f"new --study-name, or --resume to continue that study")
        if args.dry_run:
            alphas = (prior or {}).get("data_alpha")
            if cfg.gamma_from_data and not alphas:   # measured here, without Ray: the data are loaded
                alphas = load_and_measure(cfg, measure=True)[1]
            p = plan(cfg, alphas)
            print("\n".join(p.notes + [describe(p.study, p.trials)]))
            if prior is not None:
                print("\n".join(resume_report(cfg, prior, p.trials) + finish_interrupted_copy(cfg, dry_run=True)))
            return 0
        if cfg.address is not None:
            preflight_address(cfg.address)
        check_data_before_ray(cfg)
        record = prior or new_record(cfg)
        if prior is None:
            claim(cfg, record)
        else:   # before Tune reads the study back: the copy a killed driver left half done
            for note in finish_interrupted_copy(cfg):
                print(note)
        for key, value in PROCESS_ENV.items():
            os.environ.setdefault(key, value)
        if cfg.wandb:  # Ray's W&B callback needs no API key only when the mode is in the environment
            os.environ.setdefault("WANDB_MODE", cfg.wandb)
        from tune.study_runner import run  # imports Ray: only once the input is known to be good

        return run(cfg, record, prior)
    except ConfigError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
