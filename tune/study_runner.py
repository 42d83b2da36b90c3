"""The driver side of a study: Ray, the data once, the Tuner, study.json and the closing summary.

Flow: a validated ``StudyConfig`` (tune/study.py) -> Ray started locally or joined -> checks only
a running Ray can answer (shared storage on several nodes, GPUs present) before any trial -> the
data of each distinct ``plvae.data.data_key`` built once into the object store (alpha measured
for ``--gamma-from-data``) -> ``tune.Tuner`` (or ``Tuner.restore`` for ``--resume``) -> the
summary and the final study.json.
"""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The legacy console output: the new one shows no parameter columns for a list of preset
# configs, and the CLIReporter lets us choose the columns a researcher scans.
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Snapshot the experiment state often (it is small): less work redone after a driver crash.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "3")
# Trials checkpoint every epoch, which forces snapshots by design (num_to_keep): no warning.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import datetime as _dt  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from typing import Optional  # noqa: E402

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler  # noqa: E402
from ray.tune.search import ConcurrencyLimiter  # noqa: E402
from ray.tune.search.basic_variant import BasicVariantGenerator  # noqa: E402

from plvae import metrics as M  # noqa: E402
from plvae.priors import VARIANTS  # noqa: E402
from plvae.config import ConfigError  # noqa: E402
from tune.study import (SWEEPS, OptunaSpace, StudyConfig, StudyError, add_data_gamma, is_uri,  # noqa: E402
                        load_and_measure, now_iso, write_study_json)  # noqa: E402
from tune.trainable import STUDY_OBJECTIVE, trial_dirname, trial_name, train_trial  # noqa: E402

ANALYSIS_COMMAND = "python -m analysis {path}"


# ---------------------------------------------------------------------------- Ray
def connect(cfg: StudyConfig) -> str:
    """Start a local Ray (dashboard on 127.0.0.1) or join a cluster; return the dashboard URL."""
    if cfg.address is None:
        ctx = ray.init(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=cfg.dashboard,
                       dashboard_host="127.0.0.1", configure_logging=True, logging_level="WARNING",
                       log_to_driver=True)
    else:
        ctx = ray.init(address=cfg.address, logging_level="WARNING")
    url = getattr(ctx, "dashboard_url", None) or ""
    return f"http://{url}" if url and not url.startswith("http") else url


def check_cluster(cfg: StudyConfig) -> list[str]:
    """Checks only a running Ray can answer, made before any trial starts. Raises StudyError for
    what cannot work; returns notes for what may (a cluster's autoscaler can still add nodes)."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    local_path = not is_uri(cfg.storage_path) and not cfg.shared_storage
    if len(alive) > 1 and local_path:
        raise StudyError(
            f"storage_path={cfg.storage_path!r} is invalid on a {len(alive)}-node cluster; allowed: a URI "
            f"(s3://..., gs://...) or a path shared by every node, marked with --shared-storage")
    notes = []
    if cfg.address is not None and local_path:
        notes.append(f"note: results go to {cfg.storage_path} on this node; should worker nodes join, "
                     f"use shared storage (a URI, or an NFS path with --shared-storage)")
    gpus = ray.cluster_resources().get("GPU", 0)
    node_cpus = max((n.get("Resources", {}).get("CPU", 0) for n in alive), default=0)
    problems = []   # (the error for a local Ray, the note for a cluster)
    if cfg.gpus_per_trial and gpus < min(cfg.gpus_per_trial, 1):
        problems.append((f"gpus_per_trial={cfg.gpus_per_trial!r} is invalid with {gpus:g} GPUs; allowed: leave it "
                         f"out, or 'none', for CPU-only trials",
                         f"note: the cluster has {gpus:g} GPUs now; trials wait until a GPU node joins"))
    if cfg.cpus_per_trial > node_cpus:
        problems.append((f"cpus_per_trial={cfg.cpus_per_trial!r} is invalid; allowed: at most {node_cpus:g} "
                         f"(the CPUs of the largest node)",
                         f"note: no node has {cfg.cpus_per_trial} CPUs now; trials wait until one joins"))
    if problems and cfg.address is None:
        raise StudyError(problems[0][0])       # a local Ray never grows: no trial could start
    notes += [note for _, note in problems]
    return notes


# ---------------------------------------------------------------------------- the Tuner
def load_data_once(cfg: StudyConfig, measure: bool) -> tuple["ray.ObjectRef", dict]:
    """Each distinct dataset of the study built once, by a one-off task whose worker then exits
    (max_calls=1): the arrays go straight into the object store, every trial reads them from
    there zero-copy, and the driver process never imports torch's data stack or Lightning
    (about 0.35 GB less resident memory on the driver).
    Returns (a reference to {data_key: DataSplits}, {data_key_name: alpha} when measured)."""
    task = ray.remote(num_cpus=1, max_calls=1, num_returns=2)(load_and_measure)
    data_ref, alphas_ref = task.remote(cfg, measure)
    try:
        return data_ref, ray.get(alphas_ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ConfigError):  # e.g. a dataset that cannot be downloaded here
            raise StudyError(str(e.cause)) from None
        raise


def make_trainable(cfg: StudyConfig, data):
    """The trial function with the data (an object-store reference) and its resources attached."""
    fn = tune.with_parameters(train_trial, data=data, metric=cfg.metric, cpus=cfg.cpus_per_trial)
    return tune.with_resources(fn, cfg.resources())


def progress_reporter(cfg: StudyConfig):
    params = {"variant": "variant", "gamma": "gamma", "latent_dim": "latent_dim", "min_decay": "min_decay",
              "lr": "lr", "kl_coeff": "kl_coeff", "seed": "seed"}
    metrics = {"training_iteration": "epoch", cfg.metric: cfg.metric, M.VAL_LOSS: M.VAL_LOSS,
               M.DIVERGED: M.DIVERGED}
    return tune.CLIReporter(parameter_columns=params, metric_columns=metrics, max_report_frequency=20,
                            max_column_length=20, print_intermediate_tables=True)


class StudyStatusCallback(tune.Callback):
    """Each trial's status as this study saw it, for the summary and study.json.

    Statuses come from trial events (start, complete, error), not from the Trial objects at the
    end: when a run is interrupted, Tune's cleanup marks the trials it stops TERMINATED, although
    they did not finish (the saved experiment state keeps them RUNNING/PENDING for --resume).
    Trials restored already finished keep their status. Results land in the class attribute
    ``final`` - an instance restored by Tuner.restore reports there too."""

    final: dict = {}

    def setup(self, **info):
        self._status = {}      # trial_id -> status from this run's events
        self._restored = None  # trial_id -> status of trials already finished when the run began

    def on_step_begin(self, iteration, trials, **info):
        if self._restored is None:
            self._restored = {t.trial_id: t.status for t in trials if t.status in ("TERMINATED", "ERROR")}

    def on_trial_start(self, iteration, trials, trial, **info):
        self._status[trial.trial_id] = "RUNNING"

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._status[trial.trial_id] = "PENDING"   # failed, will be retried from its checkpoint

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._status[trial.trial_id] = "TERMINATED"

    def on_trial_error(self, iteration, trials, trial, **info):
        self._status[trial.trial_id] = "ERROR"

    def on_experiment_end(self, trials, **info):
        restored = self._restored or {}
        StudyStatusCallback.final = {
            t.trial_id: {"status": self._status.get(t.trial_id, restored.get(t.trial_id, "PENDING")),
                         "config": dict(t.config), "last_result": dict(t.last_result or {}),
                         "path": getattr(t, "path", None)}
            for t in trials
        }


def build_tuner(cfg: StudyConfig, trials: list[dict], data, extra: dict) -> tune.Tuner:
    """ASHA on the study objective (or FIFO); the grid as preset points, one flat TrialConfig dict
    per trial (or Optuna's define-by-run space); checkpoints kept per trial; our columns."""
    if cfg.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric=STUDY_OBJECTIVE, mode="min",
                                  max_t=cfg.max_epochs, grace_period=cfg.grace_period,
                                  reduction_factor=cfg.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    if cfg.search == "grid":
        # Each preset point is one whole trial (a flat TrialConfig dict); Tune wants every key in
        # the param space, with the swept ones as categorical domains holding the preset values.
        search = BasicVariantGenerator(points_to_evaluate=trials, max_concurrent=cfg.max_concurrent or 0)
        num_samples = len(trials)
        param_space = dict(trials[0])
        for tfield in SWEEPS:
            values = list(dict.fromkeys(d[tfield] for d in trials))
            if len(values) > 1:
                param_space[tfield] = tune.choice(values)
    else:
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(space=OptunaSpace(cfg.to_dict(), extra), metric=STUDY_OBJECTIVE, mode="min",
                              seed=cfg.search_seed)
        if cfg.max_concurrent:
            search = ConcurrencyLimiter(search, max_concurrent=cfg.max_concurrent)
        num_samples = cfg.num_samples
        param_space = {}
    run_config = tune.RunConfig(
        name=cfg.study_name,
        storage_path=cfg.storage_path,
        callbacks=[StudyStatusCallback()],
        progress_reporter=progress_reporter(cfg),
        verbose=cfg.verbose,
        failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
    )
    tune_config = tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=num_samples,
                                  trial_dirname_creator=trial_dirname, trial_name_creator=trial_name,
                                  reuse_actors=cfg.reuse_actors)
    return tune.Tuner(make_trainable(cfg, data), param_space=param_space, tune_config=tune_config,
                      run_config=run_config)


# ---------------------------------------------------------------------------- outcomes and summary
OUTCOMES = ("completed", "early_stopped", "diverged", "errored", "unfinished")


def trial_outcome(status: str, last: dict, max_epochs: int) -> str:
    """completed (all epochs), early_stopped (by ASHA), diverged (reported diverged = 1),
    errored (Tune status ERROR), unfinished (an interrupted study)."""
    if status == "ERROR":
        return "errored"
    if last.get(M.DIVERGED, 0) >= 0.5:
        return "diverged"
    if status != "TERMINATED":
        return "unfinished"
    return "completed" if last.get("training_iteration", 0) >= max_epochs else "early_stopped"


def best_per_variant(final: dict, metric: str) -> dict:
    """For each variant, the trial with the lowest last-reported metric among those that did not
    diverge or error (early-stopped trials compete with the value they stopped at)."""
    best = {}
    for trial_id, t in final.items():
        last, conf = t["last_result"], t["config"]
        value = last.get(metric)
        if t["status"] == "ERROR" or last.get(M.DIVERGED, 0) >= 0.5 or value is None or not math.isfinite(value):
            continue
        variant = conf.get("variant")
        if variant not in best or value < best[variant][metric]:
            best[variant] = {"trial_id": trial_id, metric: value, "epochs": last.get("training_iteration"),
                             **{k: conf.get(k) for k in SWEEPS if k != "variant"}}
    return best


def summary_text(cfg: StudyConfig, record: dict, wall_s: float) -> str:
    counts = record["summary"]
    lines = ["", f"=== study {cfg.study_name}: {record['status']} in {wall_s:.0f} s ===",
             "trials: " + ", ".join(f"{counts[k]} {k.replace('_', '-')}" for k in OUTCOMES if counts.get(k)
                                    or k in ("completed", "early_stopped", "diverged", "errored"))]
    if record["data_alpha"]:
        lines.append("data alpha: " + "; ".join(f"{a:.3f} ({k})" for k, a in record["data_alpha"].items()))
    if record["best_per_variant"]:
        lines.append(f"best per variant on {cfg.metric} (last reported value):")
        for variant, b in sorted(record["best_per_variant"].items(), key=lambda kv: kv[1][cfg.metric]):
            used = [k for k in SWEEPS if k != "variant" and b.get(k) is not None and (
                SWEEPS[k][1] is None or getattr(VARIANTS[variant], SWEEPS[k][1]))]
            params = ", ".join(f"{k}={b[k]:g}" if isinstance(b[k], float) else f"{k}={b[k]}" for k in used)
            lines.append(f"  {variant:<20} {b[cfg.metric]:.5f}  ({params}; {b['epochs']} epochs; {b['trial_id']})")
    lines += [f"results: {cfg.experiment_path}",
              f"open them: {ANALYSIS_COMMAND.format(path=cfg.experiment_path)}",
              f"TensorBoard: tensorboard --logdir {cfg.experiment_path}"]
    if record["status"] == "interrupted":
        lines.append(f"resume: python tune/run_study.py --resume --study-name {cfg.study_name} "
                     f"--storage-path {cfg.storage_path}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the study
def run(cfg: StudyConfig, prior: Optional[dict] = None, out=sys.stdout) -> int:
    """Run a validated study, or resume it (prior: its study.json, from tune.study.prepare);
    return the exit status (0 finished, 1 some trial errored, 130 interrupted). Raises
    StudyError for input only a running Ray can reject (storage on a cluster, missing GPUs)."""
    started_wall = _dt.datetime.now()
    owns_ray = not ray.is_initialized()  # a Ray already started in this process is used as it is
    dashboard = connect(cfg) if owns_ray else ""
    try:
        for note in check_cluster(cfg):
            print(note, file=out)
        if dashboard:
            print(f"Ray dashboard: {dashboard}", file=out)
        if cfg.objective_note():
            print(cfg.objective_note(), file=out)
        data, data_alpha = load_data_once(cfg, measure=cfg.gamma_from_data and prior is None)
        extra = {}
        if prior is not None:
            data_alpha = prior.get("data_alpha") or {}
        elif cfg.gamma_from_data:
            extra = add_data_gamma(cfg, data_alpha)
            print(f"data alpha = {extra['data_alpha']:.3f}: gamma = {extra['data_gamma']} added to the grid",
                  file=out)
        trials = cfg.trial_dicts(extra) if cfg.search == "grid" else []
        record = dict(prior) if prior else {
            "study_name": cfg.study_name, "preset": cfg.preset, "metric": cfg.metric, "mode": "min",
            "objective": STUDY_OBJECTIVE, "scheduler": cfg.scheduler, "search": cfg.search,
            "max_epochs": cfg.max_epochs, "num_trials": len(trials) if trials else cfg.num_samples,
            "study_config": cfg.to_dict(), "data_alpha": data_alpha, "started": now_iso(),
        }
        if prior:
            record.setdefault("resumed", []).append(now_iso())
        record.update({"finished": None, "status": "running", "trial_status": {}, "dashboard_url": dashboard,
                       "results_path": cfg.experiment_path})
        write_study_json(cfg, record)
        print(f"study {cfg.study_name}: {record['num_trials']} trials -> {cfg.experiment_path}", file=out)

        StudyStatusCallback.final = {}
        trainable = make_trainable(cfg, data)
        if prior is not None and tune.Tuner.can_restore(cfg.experiment_path):
            tuner = tune.Tuner.restore(cfg.experiment_path, trainable=trainable, resume_unfinished=True,
                                       resume_errored=True, restart_errored=False)
        else:
            tuner = build_tuner(cfg, trials, data, extra)
        try:
            tuner.fit()
        except BaseException:  # a crash or a second Ctrl-C: the record says so, --resume continues
            record.update({"status": "interrupted"})
            write_study_json(cfg, record)
            raise

        final = StudyStatusCallback.final
        outcomes = {tid: trial_outcome(t["status"], t["last_result"], cfg.max_epochs) for tid, t in final.items()}
        interrupted = any(o == "unfinished" for o in outcomes.values()) or not final
        record.update({
            "status": "interrupted" if interrupted else "finished",
            "finished": None if interrupted else now_iso(),
            "trial_status": {tid: t["status"] for tid, t in final.items()},
            "trial_outcome": outcomes,
            "summary": {k: sum(o == k for o in outcomes.values()) for k in OUTCOMES},
            "best_per_variant": best_per_variant(final, cfg.metric),
        })
        write_study_json(cfg, record)
        print(summary_text(cfg, record, (_dt.datetime.now() - started_wall).total_seconds()), file=out)
        if interrupted:
            return 130
        return 1 if record["summary"]["errored"] else 0
    finally:
        if owns_ray:
            ray.shutdown()
