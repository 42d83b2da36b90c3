"""The command line and presets: argv -> a validated StudyConfig (the plan a dry run prints and a
real run executes is tune/plan.py).

Precedence of settings, lowest first: the dataclass defaults, the preset YAML (``quick`` unless
``--preset``), the user's ``--config`` YAML, then single command-line options. Every option the
user gave is remembered (``args.given``), so --resume can refuse the ones that would change a study.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
from pathlib import Path
from typing import Optional, Sequence

import yaml

from plvae.config import DATASETS, NETS, TrialConfig, is_int
from plvae.priors import VARIANT_NAMES
from tune.errors import StudyError, bad
from tune.study_config import STUDY_METRICS, StudyConfig
from tune.plan import OPTUNA_DEFAULT_CONCURRENCY
from tune.sweeps import INT_SWEEPS, SWEEP_LISTS, SWEEPS, parse_values
from tune.tuning import protocol_seeds_or

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "quick"


# ---------------------------------------------------------------------------- presets and files
def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def read_yaml(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise bad(what, str(path), f"a readable YAML file ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError, ValueError) as e:
        first = (str(e).splitlines() or ["syntax error"])[0]
        raise bad(what, str(path), f"valid YAML ({first})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise bad(what, str(path), "a YAML mapping of study fields")
    return data


def apply_mapping(cfg: StudyConfig, data: dict, source: str, given: Optional[list] = None) -> None:
    """Set StudyConfig fields from a YAML mapping; `trial` entries update the fixed trial fields.
    ``given`` collects (source key, field) for each field set."""
    known = [f.name for f in dataclasses.fields(StudyConfig) if f.name not in ("preset", "config_file")]
    given = [] if given is None else given
    for key, value in data.items():
        if key == "epochs":  # a convenience spelling of trial.max_epochs
            cfg.trial = {**cfg.trial, "max_epochs": value}
            given.append((f"{source}: epochs", "trial.max_epochs"))
        elif key == "trial":
            if not isinstance(value, dict):
                raise bad(f"{source}: trial", value, "a mapping of TrialConfig fields")
            unknown = sorted((k for k in value if k not in TrialConfig.field_names()), key=str)
            if unknown:
                raise StudyError(f"{source}: trial.{unknown[0]}={value[unknown[0]]!r} is not a trial field; "
                                 f"allowed: {', '.join(TrialConfig.field_names())}")
            cfg.trial = {**cfg.trial, **value}
            given += [(f"{source}: trial.{k}", f"trial.{k}") for k in value]
        elif key in known:
            if key in SWEEP_LISTS and isinstance(value, (str, int, float)) and not isinstance(value, bool):
                tfield = next(t for t in SWEEPS if SWEEPS[t] == key)
                kind = str if tfield == "variant" else (int if tfield in INT_SWEEPS else float)
                value = parse_values(key, str(value), kind) if not (key == "variants" and value == "all") else "all"
            setattr(cfg, key, value)
            given.append((f"{source}: {key}", key))
            if key == "tuning" and "seeds" not in data:   # the protocol's seeds replace earlier ones
                cfg.seeds = protocol_seeds_or(value, cfg.seeds)
        else:
            raise StudyError(f"{source}: {key}={value!r} is not a study field; allowed: "
                             f"{', '.join(sorted(known + ['epochs']))}")


def load_preset(name: str) -> StudyConfig:
    names = preset_names()
    if name not in names:
        raise bad("preset", name, ", ".join(names))
    cfg = StudyConfig(preset=name)
    apply_mapping(cfg, read_yaml(str(PRESETS_DIR / f"{name}.yaml"), "preset"), f"preset {name}")
    return cfg


# ---------------------------------------------------------------------------- the command line
class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit status 2."""

    def error(self, message):
        raise StudyError(message)


# option -> (StudyConfig field or "trial.<field>", value kind). Sweep lists are parsed by parse_values.
OPTIONS = {
    "--variants": ("variants", str), "--gammas": ("gammas", float), "--latent-dims": ("latent_dims", int),
    "--min-decays": ("min_decays", float), "--clip-dims": ("clip_dims", int),
    "--decay-rates": ("decay_rates", float), "--lrs": ("lrs", float), "--seeds": ("seeds", int),
    "--warmup-steps": ("warmup_steps", int), "--grad-clip-norms": ("grad_clip_norms", float),
    "--epochs": ("trial.max_epochs", int), "--dataset": ("trial.dataset", str), "--net": ("trial.net", str),
    "--batch-size": ("trial.batch_size", int), "--image-size": ("trial.image_size", int),
    "--channels": ("trial.channels", int), "--n-train": ("trial.n_train", int), "--n-val": ("trial.n_val", int),
    "--kl-coeffs": ("kl_coeffs", float), "--kl-estimator": ("trial.kl_estimator", str),
    "--kl-reduction": ("trial.kl_reduction", str), "--enc-out-dim": ("trial.enc_out_dim", int),
    "--hidden-dims": ("trial.hidden_dims", "intlist"), "--data-dir": ("trial.data_dir", str),
    "--data-alpha": ("trial.data_alpha", float), "--data-seed": ("trial.data_seed", int),
    "--metric": ("metric", str), "--search": ("search", str), "--num-samples": ("num_samples", int),
    "--search-seed": ("search_seed", int), "--scheduler": ("scheduler", str),
    "--grace-period": ("grace_period", int), "--reduction-factor": ("reduction_factor", float),
    "--cpus-per-trial": ("cpus_per_trial", float), "--gpus-per-trial": ("gpus_per_trial", float),
    "--max-concurrent": ("max_concurrent", int), "--max-trials": ("max_trials", int),
    "--num-cpus": ("num_cpus", int), "--num-gpus": ("num_gpus", float), "--address": ("address", str),
    "--storage-path": ("storage_path", str), "--study-name": ("study_name", str),
    "--max-failures": ("max_failures", int), "--keep-checkpoints": ("keep_checkpoints", int),
    "--verbose": ("verbose", int), "--mlflow": ("mlflow", str), "--wandb": ("wandb", str),
}
FLAGS = {"--gamma-from-data": ("gamma_from_data", True), "--data-seed-from-seed": ("data_seed_from_seed", True),
         "--shared-storage": ("shared_storage", True),
         "--no-dashboard": ("dashboard", False), "--no-reuse-actors": ("reuse_actors", False),
         "--no-images": ("images", False), "--allow-cpu-fallback": ("allow_cpu_fallback", True)}

_HELP = {
    # what to sweep
    "--variants": f"comma-separated, or 'all' ({', '.join(VARIANT_NAMES)})",
    "--gammas": "list '0,0.5,1' or range start:stop:step, stop excluded ('0:2:0.1' = 0.0..1.9); with "
                "--gamma-from-data also 'alpha/2', 'alpha', '1.5*alpha'",
    "--latent-dims": "latent dimensions d (list, e.g. '16,64')",
    "--min-decays": "floor of the decay s_k for the clamped variants (list or range)",
    "--clip-dims": "powerlaw_clip: rank after which the decay stays flat (list)",
    "--decay-rates": "exponential / linear: the rate r of the decay (list or range)",
    "--lrs": "Adam learning rates (list); sweep them upward to measure stability",
    "--warmup-steps": "linear learning-rate warm-up over this many optimiser steps (list; 0: off, the default)",
    "--grad-clip-norms": "clip the total gradient norm to this, Lightning's gradient_clip_val (list; 'none': off, "
                         "the default)",
    "--kl-coeffs": "beta values (list or range): sweep them to trace the baseline's rate-distortion frontier",
    "--seeds": "training seeds (list or range): each seed is one paired replicate of every variant",
    "--max-trials": "refuse a study of more trials than this (default 5000)",
    "--gamma-from-data": "measure the data's exponent alpha and add gamma = alpha/2 (the matched prior) to the grid",
    # the trial
    "--epochs": "epochs per trial (TrialConfig.max_epochs; ASHA's max_t)",
    "--dataset": f"the data ({', '.join(DATASETS)})",
    "--net": f"encoder/decoder ({', '.join(NETS)})",
    "--batch-size": "training batch size",
    "--image-size": "side of the square images the net sees",
    "--channels": "1 (grey) or 3 (colour)",
    "--n-train": "generated datasets: training samples",
    "--n-val": "generated datasets: validation samples",
    "--kl-estimator": "mc (log q(z) - log p(z), as the original experiments) or analytic",
    "--kl-reduction": "mean over all elements (as the original experiments) or sum over latent dims",
    "--enc-out-dim": "encoder feature width before the mu / log-var heads (conv, mlp)",
    "--hidden-dims": "mlp: hidden layer widths, e.g. '512,256'",
    "--data-dir": "where torchvision datasets and image folders live (default ~/.cache/plvae)",
    "--data-alpha": "powerlaw_gaussian: exponent of the data's covariance spectrum",
    "--data-seed": "which data is drawn (the training seed is --seeds)",
    "--data-seed-from-seed": "each trial's data_seed is its training seed, so replicates redraw the data too "
                             "(confidence intervals then cover the draw of the data)",
    # scheduler and search
    "--metric": f"what ASHA and Optuna minimise: {', '.join(STUDY_METRICS)}",
    "--search": "grid (deduplicated Cartesian product) or optuna (TPE within one variant over its sweep lists' ranges)",
    "--num-samples": "optuna: number of suggestions, each run at every seed (default 16)",
    "--search-seed": "optuna: the sampler's seed",
    "--scheduler": "asha (early stopping per trial), seed_asha (early stopping per configuration, on the "
                   "median over its seeds: every seed stops together) or fifo (every trial to the end)",
    "--grace-period": "asha: epochs every trial runs before it can be stopped",
    "--reduction-factor": "asha: keep 1 in this many trials at each rung (> 1)",
    # resources
    "--cpus-per-trial": "an integer >= 1; also torch's thread count in the trial",
    "--gpus-per-trial": "a fraction in (0, 1] (Ray packs trials on one GPU) or an integer; 'none' or "
                        "omitted: CPU-only trials",
    "--max-concurrent": f"trials running at once (default: as resources allow; optuna: "
                        f"{OPTUNA_DEFAULT_CONCURRENCY}, so TPE learns from finished trials)",
    "--num-cpus": "local Ray only: CPUs it may use", "--num-gpus": "local Ray only: GPUs it declares",
    "--no-reuse-actors": "start a fresh worker process per trial (default: reuse, torch imported once)",
    "--allow-cpu-fallback": "a trial given a GPU that PyTorch cannot use trains on the CPU (default: it errors, "
                            "naming the driver and CUDA versions); for rehearsals with logical GPUs",
    # cluster and storage
    "--address": "join a running cluster: auto or HOST:PORT (default: start a local Ray)",
    "--storage-path": "results root (default ./results); on a multi-node cluster a URI or shared path",
    "--shared-storage": "the local --storage-path is shared by every node (NFS)",
    "--max-failures": "retries of a trial that raised (it resumes from its last checkpoint)",
    "--keep-checkpoints": "checkpoints kept per trial (the latest ones)",
    # output and resume
    "--study-name": "results go to <storage-path>/<study-name> (default <preset>_<date>-<time>-<hex>)",
    "--verbose": "Tune's console output: 0 (silent) to 3 (every result)",
    "--no-dashboard": "local Ray without its dashboard",
    "--no-images": "no reconstructions or prior samples in TensorBoard (default: 8 of each per epoch, in the trial "
                   "folder)",
    "--wandb": "also log every trial to Weights & Biases through Ray Tune's WandbLoggerCallback: offline (runs "
               "saved under <study>/wandb; `wandb sync` uploads them later) or online (needs WANDB_API_KEY); "
               "needs plvae[wandb]",
    "--mlflow": "also log every trial's params and metrics to this MLflow tracking URI (sqlite:///path/mlflow.db, "
                "http://host:5000; needs plvae[mlflow]); Ray Tune's MLflowLoggerCallback",
}
# Every option in one of these groups, in this order (--help reads top-down as a study is planned).
GROUPS = (
    ("what to sweep", "lists are comma-separated ('0,0.5,1') or ranges start:stop:step, stop excluded",
     ("--variants", "--gammas", "--latent-dims", "--min-decays", "--clip-dims", "--decay-rates", "--lrs",
      "--warmup-steps", "--grad-clip-norms", "--kl-coeffs", "--seeds", "--gamma-from-data", "--max-trials")),
    ("the trial (data, net, loss)", "fixed for every trial of the study; --set reaches any other TrialConfig field",
     ("--epochs", "--dataset", "--image-size", "--channels", "--n-train", "--n-val", "--data-dir", "--data-alpha",
      "--data-seed", "--data-seed-from-seed", "--batch-size", "--net", "--enc-out-dim", "--hidden-dims", "--kl-estimator",
      "--kl-reduction")),
    ("scheduler and search", None,
     ("--metric", "--search", "--num-samples", "--search-seed", "--scheduler", "--grace-period",
      "--reduction-factor")),
    ("resources", None, ("--cpus-per-trial", "--gpus-per-trial", "--max-concurrent", "--num-cpus", "--num-gpus",
                         "--no-reuse-actors", "--allow-cpu-fallback")),
    ("cluster and storage", None, ("--address", "--storage-path", "--shared-storage", "--max-failures",
                                   "--keep-checkpoints")),
    ("output and resume", None, ("--study-name", "--verbose", "--no-dashboard", "--no-images", "--mlflow", "--wandb")),
)
PRINT_CONFIG_HEADER = "# plvae study: the effective configuration; run it with --config FILE\n"


def _shown_default(cfg: StudyConfig, dest: str) -> str:
    """' (default: …)' for --help: the value the default preset (or StudyConfig / TrialConfig) gives
    the option; '' where there is none or it is computed at run time (names, paths)."""
    if dest in ("study_name", "storage_path", "address") or dest.startswith("optuna"):
        return ""
    if dest.startswith("trial."):
        name = dest.split(".", 1)[1]
        v = cfg.trial.get(name, getattr(TrialConfig(), name, None))
    else:
        v = getattr(cfg, dest, None)
    if v is None or v is False or v in ([], [None]) or isinstance(v, dict):
        return ""
    text = ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)
    return f" (default: {text})".replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    # prog: argparse's own, the name it was run as (`plvae-study` installed, `run_study.py` as a script)
    defaults = load_preset(DEFAULT_PRESET)
    p = _Parser(description="Run a Ray Tune study of power-law-prior VAEs. Settings apply "
                "in this order: the preset, --config, then single options.",
                epilog="Installed as `plvae-study`; analyse the results with `plvae-analyze <storage-path>/<study-name>`.")
    study = p.add_argument_group("the study as a whole")
    study.add_argument("--preset", default=None, help=f"a preset in tune/presets ({', '.join(preset_names())}; "
                                                      f"default {DEFAULT_PRESET})")
    study.add_argument("--config", default=None, help="a YAML file of study fields, applied over the preset "
                                                      "(--print-config writes one)")
    study.add_argument("--print-config", action="store_true",
                       help="print the study's effective configuration as YAML (what --config accepts) and exit")
    groups = {}
    for title, description, opts in GROUPS:
        g = p.add_argument_group(title, description)
        groups.update({opt: g for opt in opts})
    for opt, (dest, _) in OPTIONS.items():
        groups[opt].add_argument(opt, dest=dest.replace(".", "__"), default=None,
                                 help=_HELP[opt] + ("" if "default" in _HELP[opt] else _shown_default(defaults, dest)),
                                 metavar=opt.lstrip("-").upper().replace("-", "_"))
    for opt, (dest, _) in FLAGS.items():
        groups[opt].add_argument(opt, dest=dest, action="store_true", default=None, help=_HELP[opt])
    groups["--epochs"].add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                                    help="any TrialConfig field, e.g. --set kl_estimator=analytic (value parsed "
                                         "as YAML; repeatable)")
    out = groups["--study-name"]
    out.add_argument("--resume", action="store_true", help="continue an interrupted study (--study-name, or the "
                                                           "latest one under --storage-path whose driver is gone)")
    out.add_argument("--dry-run", action="store_true", help="print the trials (for --resume: which are finished, "
                                                            "in progress, damaged or missing) and exit without Ray")
    return p


def effective_config(cfg: StudyConfig, explicit_name: bool) -> dict:
    """A validated study as the mapping --config reads: every study field and every fixed trial field
    (TrialConfig defaults included); left out: the provenance fields, and a study name the user did not
    choose (the generated one would make a second run of the file collide with the first); the default
    storage path stays relative (``results``, under the directory the study is run from)."""
    out = {k: v for k, v in cfg.to_dict().items() if k not in ("preset", "config_file")}
    if not explicit_name:
        out.pop("study_name")
    default_storage = StudyConfig.storage_path
    if out.get("storage_path") == os.path.abspath(default_storage):
        # the default, made absolute for this run: written as given, so the file runs on any machine
        out["storage_path"] = default_storage
    trial = {k: v for k, v in cfg.base_trial().to_dict().items() if k not in SWEEPS}
    out["trial"] = {**trial, **out["trial"]}
    return out


def print_config(cfg: StudyConfig, explicit_name: bool) -> str:
    return PRINT_CONFIG_HEADER + yaml.safe_dump(effective_config(cfg, explicit_name), sort_keys=False)


def _parse_scalar(name: str, text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise bad(name, text, {int: "an integer", float: "a number"}.get(kind, kind.__name__)) from None
    if kind is float and value.is_integer() and "." not in text and "e" not in text.lower():
        value = int(value)
    return value


def config_from_args(argv: Optional[Sequence[str]] = None) -> tuple[StudyConfig, argparse.Namespace]:
    """Parse the command line into a validated StudyConfig (raises StudyError). The namespace
    gains ``given`` ((flag, field) pairs set explicitly), ``explicit_name`` and ``notes``."""
    args = build_parser().parse_args(argv)
    given: list = []
    cfg = load_preset(args.preset or DEFAULT_PRESET)
    if args.preset:
        given.append(("--preset", "preset"))
    if args.config:
        apply_mapping(cfg, read_yaml(args.config, "config"), f"--config {args.config}", given)
        cfg.config_file = os.path.abspath(args.config)
    for opt, (dest, kind) in OPTIONS.items():
        text = getattr(args, dest.replace(".", "__"))
        if text is None:
            continue
        name = dest.split(".")[-1]
        given.append((opt, dest))
        if dest.startswith("trial."):
            value = parse_values(name, text, int) if kind == "intlist" else (
                text if kind is str else _parse_scalar(name, text, kind))
            cfg.trial = {**cfg.trial, name: value}
        elif name in SWEEP_LISTS:
            setattr(cfg, name, "all" if (name == "variants" and text == "all") else parse_values(name, text, kind))
        elif name == "gpus_per_trial" and text.lower() == "none":
            cfg.gpus_per_trial = None  # CPU-only trials, over a preset that asks for GPUs
        else:
            setattr(cfg, name, text if kind is str else _parse_scalar(name, text, kind))
    for opt, (dest, value) in FLAGS.items():
        if getattr(args, dest) is not None:
            setattr(cfg, dest, value)
            given.append((opt, dest))
    for item in args.sets:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise bad("set", item, "FIELD=VALUE with FIELD a TrialConfig field")
        if key not in TrialConfig.field_names():
            raise StudyError(f"set: {key}={text!r} is not a trial field; allowed: {', '.join(TrialConfig.field_names())}")
        if key in SWEEPS:
            raise StudyError(f"set: {key}={text!r} is swept; allowed: --{SWEEPS[key].replace('_', '-')}")
        try:   # a '#' YAML would read as a comment is kept literally (data_dir=/x/photos #2), never dropped
            value = text if re.search(r"(^|\s)#", text) else yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise bad("set", item, f"FIELD=VALUE with VALUE valid YAML ({(str(e).splitlines() or [''])[0]})") from None
        cfg.trial = {**cfg.trial, key: value}
        given.append((f"--set {key}", f"trial.{key}"))
    args.given, args.notes = given, []
    args.explicit_name = cfg.study_name is not None
    # A grace period the user never set (the preset's) is clamped to the epochs they asked for.
    if cfg.scheduler != "fifo" and "grace_period" not in {f for _, f in given} and is_int(cfg.grace_period) \
            and is_int(cfg.max_epochs) and 1 <= cfg.max_epochs < cfg.grace_period:
        args.notes.append(f"note: grace_period {cfg.grace_period} (from the preset) clamped to max_epochs="
                          f"{cfg.max_epochs}")
        cfg.grace_period = cfg.max_epochs
    cfg.fill_in().validate()
    return cfg, args
