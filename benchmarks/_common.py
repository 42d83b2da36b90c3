"""What every benchmark script shares: the machine's description, the JSON output, and a real
study run in-process with the driver's arrival time of every result."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(out: dict, json_path: str | None) -> None:
    """Print the result as JSON and, when asked, write it to json_path."""
    print(json.dumps(out, indent=1))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=1)


# ---------------------------------------------------------------------------- studies, timed
# Scripts that time a real study (bench_asha, bench_turnover) drive it through the study's own
# public path - tune.cli.config_from_args, StudyRecord.open and claim, study_runner.run - and see each
# result as the driver receives it through a public ``ray.tune.Callback`` that Tune adds from
# the RAY_TUNE_CALLBACKS environment variable (its value: STUDY_CLOCK). The callback class is
# built on first access (PEP 562), so scripts without Ray (bench_gpu) can import this module.
STUDY_CLOCK = "_common.StudyClock"
STUDY_EVENTS: list = []   # (kind "start" | "result" | "complete", trial_id, time.time(), payload)
STUDY_CLOCK_FILE = "PLVAE_STUDY_CLOCK_FILE"   # when set, the clock also appends its events there


def _study_clock_class():
    import time

    from ray.tune import Callback

    path = os.environ.get(STUDY_CLOCK_FILE)

    def note(event):
        STUDY_EVENTS.append(event)
        if path:   # a study run as its own process: one JSON line per event
            with open(path, "a") as f:
                extra = {"iteration": event[3].get("result", {}).get("training_iteration"),
                         "variant": event[3].get("config", {}).get("variant")}
                f.write(json.dumps([*event[:3], extra]) + "\n")

    class StudyClock(Callback):
        """The driver's arrival time of every trial start, result and completion."""

        def on_trial_start(self, iteration, trials, trial, **info):
            note(("start", trial.trial_id, time.time(), {"config": dict(trial.config)}))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            note(("result", trial.trial_id, time.time(), {"config": dict(trial.config), "result": dict(result)}))

        def on_trial_complete(self, iteration, trials, trial, **info):
            note(("complete", trial.trial_id, time.time(), {}))

    return StudyClock


def __getattr__(name):
    if name == "StudyClock":
        cls = globals()["StudyClock"] = _study_clock_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def study_environment() -> dict:
    """The environment variables a timed study needs: the entry point's own (tune.run_study's
    PROCESS_ENV, which run_study.main applies) and the clock. The caller applies them, once."""
    from tune.run_study import PROCESS_ENV

    return {**PROCESS_ENV, "RAY_TUNE_CALLBACKS": STUDY_CLOCK}


def run_timed_study(argv: list) -> dict:
    """One study, as ``python tune/run_study.py ARGV`` runs it but in this process (on the Ray
    already started here) and quietly: its config, exit status, wall time and the events the
    clock saw. Needs study_environment() applied and a Ray started by the caller."""
    import io
    import time

    from tune import study_runner
    from tune.cli import config_from_args
    from tune.study_record import StudyRecord

    if STUDY_CLOCK not in os.environ.get("RAY_TUNE_CALLBACKS", "").split(","):
        raise RuntimeError("RAY_TUNE_CALLBACKS must name " + STUDY_CLOCK + " (apply study_environment() first)")
    cfg, _ = config_from_args(argv)
    study = StudyRecord.open(cfg)
    study.claim()
    STUDY_EVENTS.clear()
    t0, wall0 = time.perf_counter(), time.time()
    rc = study_runner.run(study, out=io.StringIO())
    wall = time.perf_counter() - t0
    events = list(STUDY_EVENTS)
    if not any(kind == "result" for kind, *_ in events):
        raise RuntimeError("the study clock saw no result: does this Ray read RAY_TUNE_CALLBACKS?")
    return {"cfg": cfg, "rc": rc, "wall_s": wall, "t_begin": wall0, "t_end": wall0 + wall, "events": events}
