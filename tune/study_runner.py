"""The driver: Ray, the data once, the Tuner, and the study record kept current while it runs.

Flow: a study opened and claimed (``StudyRecord``, tune/study_record.py) -> its heartbeat starts
(``study.running()``) -> Ray started locally or joined -> checks only a running Ray can answer (shared
storage on several nodes, GPUs present) before any trial -> the study's data built once into the
object store (alpha measured for --gamma-from-data) -> the plan (tune/plan.py, as the dry run) ->
``tune.Tuner`` (or ``Tuner.restore`` for --resume) -> each trial's status read back from the
state Tune saved -> ``study.finish``: the outcomes, the summary and the final study.json.

Process-wide settings (environment variables Ray reads) are made by the entry point,
tune/run_study.py, not here.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.basic_variant import BasicVariantGenerator

from plvae import metrics as M
from plvae import study_files as F
from plvae.config import ConfigError
from tune.reporting import STUDY_OBJECTIVE
from tune.seed_asha import SeedGroupedASHA, group_size
from tune.auth_token import secure_auth_token
from tune.errors import StudyError
from tune.plan import max_concurrent, plan
from tune.storage import is_uri
from tune.study_config import StudyConfig
from tune.study_data import load_and_measure
from tune.study_record import StudyRecord
from tune.tracking_check import open_local_store
from tune.sweeps import SWEEPS, OptunaSpace
from tune.trainable import train_trial, trial_dirname, trial_name


# ---------------------------------------------------------------------------- Ray
def connect(cfg: StudyConfig) -> str:
    """Start a local Ray (dashboard on 127.0.0.1) or join a cluster; return the dashboard URL.

    Ray turns token authentication on for a new local Ray and would write ~/.ray/auth_token with
    the umask (world-readable): the token is written (or tightened) first, 0600 in a 0700 ~/.ray."""
    try:
        secure_auth_token(create=cfg.address is None and os.environ.get("RAY_AUTH_MODE", "").lower() != "disabled")
    except OSError as e:
        raise StudyError(f"auth_token={' '.join(str(e).split())!r} is unusable; allowed: a token file this user "
                         f"owns (0600), in ~/.ray or named by RAY_AUTH_TOKEN_PATH") from None
    if cfg.address is None:
        ctx = ray.init(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, include_dashboard=cfg.dashboard,
                       dashboard_host="127.0.0.1", configure_logging=True, logging_level="WARNING",
                       log_to_driver=True)
    else:
        try:
            ctx = ray.init(address=cfg.address, logging_level="WARNING")
        except (ConnectionError, RuntimeError) as e:   # "auto" with no cluster here, a dead head
            raise StudyError(f"address={cfg.address!r} is invalid ({' '.join(str(e).split())[:200]}); allowed: "
                             f"the HOST:PORT of a running Ray head (ray start --head), or 'auto' on a node "
                             f"of a running cluster") from None
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
    return notes + [note for _, note in problems]


# ---------------------------------------------------------------------------- the Tuner
# Optuna's study, in its journal file beside the trials: `optuna-dashboard <this file>` opens it, and
# --resume continues with the sampler's history (the searcher Tune pickles points at the same file).
OPTUNA_JOURNAL = "optuna.journal"


def optuna_storage(cfg: StudyConfig):
    """Optuna's journal file storage in the study folder, or None (in memory) when results go to a
    URI: a journal file needs a local (or NFS) path the driver writes."""
    if is_uri(cfg.storage_path):
        return None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(os.path.join(cfg.experiment_path, OPTUNA_JOURNAL)))


def optuna_search(cfg: StudyConfig, extra: dict):
    """TPE over the study's space, its history kept in the journal file, at most
    ``max_concurrent(cfg)`` trials at once (default 4): TPE learns only from finished trials, and
    with no limit Tune would sample every trial before the first result, a random search."""
    from tune.optuna_study import SeedRepeater, StudyOptunaSearch, name_objective

    storage = optuna_storage(cfg)
    name_objective(storage, cfg.study_name)   # early-stopped trials PRUNED, Tune ids kept (tune/optuna_study.py)
    search = StudyOptunaSearch(space=OptunaSpace(cfg.to_dict(), extra), metric=STUDY_OBJECTIVE, mode="min",
                               seed=cfg.search_seed, study_name=cfg.study_name, storage=storage,
                               max_t=cfg.max_epochs)
    if len(cfg.seeds) > 1:   # each suggestion at every seed (a seed is a replicate, not a knob)
        search = SeedRepeater(search, cfg.seeds, cfg.data_seed_from_seed,
                              scored_seeds=cfg.tuning["tuning_seeds"] if cfg.tuning else None)
    return ConcurrencyLimiter(search, max_concurrent=max_concurrent(cfg))



def load_data_once(cfg: StudyConfig, measure: bool) -> tuple["ray.ObjectRef", dict]:
    """The study's data built once, by a one-off task whose worker then exits (max_calls=1): the
    arrays go straight into the object store, every trial reads them zero-copy, and the driver
    never imports torch's data stack or Lightning. Returns (a reference, {data key: alpha})."""
    task = ray.remote(num_cpus=1, max_calls=1, num_returns=2)(load_and_measure)
    data_ref, alphas_ref = task.remote(cfg, measure)
    try:
        return data_ref, ray.get(alphas_ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, ConfigError):  # e.g. a dataset that is missing and cannot be downloaded here
            raise StudyError(str(e.cause)) from None
        raise


def make_trainable(cfg: StudyConfig, data):
    """The trial function with the data (an object-store reference) and its resources attached."""
    fn = tune.with_parameters(train_trial, data=data, metric=cfg.metric, cpus=cfg.cpus_per_trial, images=cfg.images,
                              allow_cpu_fallback=cfg.allow_cpu_fallback)
    return tune.with_resources(fn, cfg.resources())


# Tune's status table: at most every REPORT_EVERY_S seconds (and at the end) and PROGRESS_ROWS rows,
# about 60 lines for a two-minute study rather than ~270 at Tune's 5 s / 20 rows.
REPORT_EVERY_S = 60
PROGRESS_ROWS = 10
RAY_LOGDIR = "Result logdir: "


class StudyReporter(tune.CLIReporter):
    """Tune's CLIReporter, with its "Result logdir:" line (Ray's temp folder, not the results)
    replaced by the study's own results folder."""

    def __init__(self, results: str, **kwargs):
        super().__init__(**kwargs)
        self.results = results

    def report(self, trials, done, *sys_info):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            super().report(trials, done, *sys_info)
        lines = [f"Results: {self.results}" if ln.startswith(RAY_LOGDIR) else ln
                 for ln in buf.getvalue().splitlines()]
        print("\n".join(_unique_results(lines)), flush=True)


def _unique_results(lines: list) -> list:
    """The lines with the results line once (Tune prints one logdir line per trial's folder)."""
    seen, out = False, []
    for ln in lines:
        if ln.startswith("Results: "):
            if seen:
                continue
            seen = True
        out.append(ln)
    return out


def progress_reporter(cfg: StudyConfig):
    params = {k: k for k in SWEEPS if k not in ("clip_dim", "decay_rate")}
    metrics = {F.TRAINING_ITERATION: "epoch", cfg.metric: cfg.metric, M.VAL_LOSS: M.VAL_LOSS,
               M.DIVERGED: M.DIVERGED}
    return StudyReporter(cfg.experiment_path, parameter_columns=params, metric_columns=metrics,
                         max_report_frequency=REPORT_EVERY_S, max_progress_rows=PROGRESS_ROWS,
                         max_column_length=20, print_intermediate_tables=True)


def tracking_callbacks(cfg: StudyConfig) -> list:
    """Ray Tune's own MLflow logger when --mlflow is set: one MLflow run per trial, in an
    experiment named after the study, with the trial's params and every reported metric."""
    callbacks = []
    if cfg.mlflow:
        from tune.mlflow_tracking import StudyMLflowLogger   # config as params only; outcome, epochs as tags

        callbacks.append(StudyMLflowLogger(tracking_uri=cfg.mlflow, experiment_name=cfg.study_name,
                                           tags={"plvae_study": cfg.study_name}, max_epochs=cfg.max_epochs))
    if cfg.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback

        # One W&B run per trial in a project named after the study; offline runs are written beside
        # the results (the entry point sets WANDB_MODE, which Ray's callback reads for offline).
        callbacks.append(WandbLoggerCallback(project=cfg.study_name, group=cfg.study_name, mode=cfg.wandb,
                                             dir=cfg.experiment_path if not is_uri(cfg.experiment_path) else None))
    return callbacks


def build_tuner(cfg: StudyConfig, trials: list[dict], data, extra: dict) -> tune.Tuner:
    """ASHA on the study objective (or FIFO); the grid as preset points, one flat TrialConfig dict
    per trial (or Optuna's define-by-run space); checkpoints kept per trial; our columns."""
    if cfg.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr=F.TRAINING_ITERATION, metric=STUDY_OBJECTIVE, mode="min",
                                  max_t=cfg.max_epochs, grace_period=cfg.grace_period,
                                  reduction_factor=cfg.reduction_factor)
    elif cfg.scheduler == "seed_asha":   # ASHA deciding per configuration over its seeds (tune/seed_asha.py)
        scheduler = SeedGroupedASHA(metric=STUDY_OBJECTIVE, mode="min", max_t=cfg.max_epochs,
                                    grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor,
                                    group_size=group_size(trials))
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
        search = optuna_search(cfg, extra)
        num_samples = cfg.optuna_trials()   # num_samples suggestions x every seed
        param_space = {}
    run_config = tune.RunConfig(
        name=cfg.study_name, storage_path=cfg.storage_path, progress_reporter=progress_reporter(cfg),
        verbose=cfg.verbose, failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
        sync_config=tune.SyncConfig(sync_artifacts=True),   # each trial's images (tune.trainable.trial_artifact_dir)
        callbacks=tracking_callbacks(cfg))
    tune_config = tune.TuneConfig(search_alg=search, scheduler=scheduler, num_samples=num_samples,
                                  trial_dirname_creator=trial_dirname, trial_name_creator=trial_name,
                                  reuse_actors=cfg.reuse_actors)
    return tune.Tuner(make_trainable(cfg, data), param_space=param_space, tune_config=tune_config,
                      run_config=run_config)


def restore_tuner(cfg: StudyConfig, data) -> tune.Tuner:
    """Tune's saved study, with its unfinished and errored trials continued from their checkpoints."""
    return tune.Tuner.restore(cfg.experiment_path, trainable=make_trainable(cfg, data), resume_unfinished=True,
                              resume_errored=True, restart_errored=False)


def saved_trials(cfg: StudyConfig) -> dict:
    """Each trial as Tune saved it in the experiment state: {trial_id: status, config, last result}.
    Read from the saved state, not from the Trial objects after fit(): on an interrupted run Tune's
    cleanup marks the trials it stops TERMINATED, while the state saved just before keeps them
    RUNNING / PENDING (what --resume continues). An errored trial's error: the text Tune saved."""
    local = not is_uri(cfg.experiment_path)
    return {t.trial_id: {"status": t.status, "config": dict(t.config), "last_result": dict(t.last_result or {}),
                         "error": t.get_error() if t.status == "ERROR" else None,
                         # Tune counts it, but its folder is gone (deleted, or lost in a killed copy)
                         "lost": local and not os.path.isdir(t.path)}
            for t in tune.ExperimentAnalysis(cfg.experiment_path).trials}


# ---------------------------------------------------------------------------- the study
def run(study: StudyRecord, out=sys.stdout) -> int:
    """Run a claimed study, or continue a resumed one (``study.resumed``); return the exit status
    (0 finished, 1 some trial errored, 130 interrupted). Raises StudyError for input only a
    running Ray can reject (storage on a cluster, missing GPUs, data); the record then says why."""
    cfg = study.cfg
    owns_ray = not ray.is_initialized()  # a Ray already started in this process is used as it is
    try:
        with study.running():
            open_local_store(cfg.mlflow)   # after the claim, as a real run: a dry run writes no store
            dashboard = connect(cfg) if owns_ray else ""
            for note in check_cluster(cfg):
                print(note, file=out)
            if dashboard:
                print(f"Ray dashboard: {dashboard}", file=out)
            # alpha is measured once, by the study's first run; a resume reads it from the record
            data, alphas = load_data_once(cfg, measure=cfg.gamma_from_data and not study.data_alpha)
            p = plan(cfg, study.data_alpha or alphas)
            for note in p.notes:
                print(note, file=out)
            tuner = restore_tuner(cfg, data) if study.resumed else build_tuner(p.study, p.trials, data, p.extra)
            study.start_trials(dashboard_url=dashboard, data_alpha=study.data_alpha or alphas,
                               num_trials=len(p.trials) if p.trials else cfg.optuna_trials())
            print(f"study {cfg.study_name}: {study.record['num_trials']} trials -> {cfg.experiment_path}", file=out)
            tuner.fit()   # a crash or a second Ctrl-C raises: the record says "interrupted", --resume continues
            return study.finish(saved_trials(cfg), out)
    finally:
        if owns_ray:
            ray.shutdown()
