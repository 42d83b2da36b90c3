"""The evaluation phase of a two-phase tuning protocol (issue 18): from a finished tuning study
(``tuning.phase: tuning``, tune/tuning.py), the study configuration that runs every arm on the
evaluation seeds at its own pick and at every grid value above it.

Why above: the pick is the reported comparison; the values above it are where an arm's stable
learning-rate range ends (the largest value with at most 1 in 10 runs diverged), so they get the
evaluation seeds too. Values below the pick keep only the tuning seeds: the sensitivity figure shows
them with the seeds they have. Diverged runs stop at their first non-finite loss, so the values
above the pick are cheap where they fail.

    python -m analysis.tuned_plan STUDY_DIR [--out evaluation.yaml]
    python tune/run_study.py --preset <the tuning study's preset> --config evaluation.yaml \\
        --study-name <name>_evaluation
    python -m analysis STUDY_DIR <name>_evaluation_DIR     # one study to the analysis (analysis.phases)

The arms, the knob grid, the trial settings and the protocol come from the tuning study's
study.json; only the phase, the grids and the seeds change. Pure pandas: no Ray.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import yaml

from plvae.config import SWEEPS
from plvae.priors import VARIANTS

from analysis.load import load_study
from analysis.tuned import ARM_FIELDS, STABILISERS, USABLE, Protocol, pick

CONTEXT_SWEEPS = ("latent_dim", "kl_coeff")
KEEP = ("variants", "gammas", "latent_dims", "min_decays", "clip_dims", "decay_rates", "kl_coeffs", "warmup_steps",
        "grad_clip_norms", "gamma_from_data", "data_seed_from_seed", "trial", "metric", "scheduler",
        "cpus_per_trial", "gpus_per_trial", "primary")


def _plain(v):
    """A YAML-friendly scalar (numpy numbers to Python, NaN to None)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _arm_grid(p: dict, knob: str, values: list) -> dict:
    variant = VARIANTS[p["variant"]]
    grid = {"variants": [p["variant"]]}
    for f in ARM_FIELDS[1:] + CONTEXT_SWEEPS:
        if f not in p or (f not in STABILISERS and f not in CONTEXT_SWEEPS and not variant.uses(f)):
            continue
        v = _plain(p[f])
        if f in ("warmup_steps", "latent_dim", "clip_dim") and v is not None:
            v = int(v)
        grid[SWEEPS[f]] = [v]
    grid[SWEEPS[knob]] = values
    return grid


def evaluation_config(study_dir, above=None) -> tuple[dict, list]:
    """(the evaluation study's configuration, notes) from a finished tuning study. ``above``: how
    many grid values above the pick get the evaluation seeds too (None: all of them; 0: the pick
    only - the stable range above it then rests on the tuning seeds, which stable_lr.csv's run
    counts show)."""
    study = load_study(study_dir, warn=False)
    protocol = Protocol.from_meta(study.meta)
    cfg = dict((study.meta.get("study_config") or {}))
    tuning = dict(cfg.get("tuning") or {})
    if study.status != "finished":
        raise ValueError(f"study {study.name!r} has status {study.status!r}; allowed: a finished tuning study "
                         f"(a pick from part of the grid would not be the arm's pick)")
    if protocol is None or tuning.get("phase") != "tuning":
        raise ValueError(f"study {study.name!r} has tuning.phase={tuning.get('phase')!r}; allowed: a study run "
                         f"with tuning.phase: tuning")
    if len(protocol.knobs) != 1:
        raise ValueError(f"tuning.knobs={list(protocol.knobs)} is invalid here; allowed: one knob")
    knob = protocol.knobs[0]
    usable = study.trials[study.trials["status"].isin(USABLE)]
    picks = pick(usable, protocol)
    grid_values = sorted(float(v) for v in study.trials[knob].dropna().unique())
    grids, notes = [], []
    for p in picks.to_dict("records"):
        best = p.get(f"pick_{knob}")
        if best is None or not math.isfinite(float(best)):
            notes.append(f"{p['arm']}: every {knob} diverged on the tuning seeds; not evaluated")
            continue
        values = [v for v in grid_values if v >= float(best) * (1 - 1e-9)]
        values = values if above is None else values[:1 + above]
        grids.append(_arm_grid(p, knob, values))
        notes.append(f"{p['arm']}: pick {knob}={best:g} (tuning median {p['tuning_median']:.5g} over "
                     f"{p['tuning_runs']} runs); evaluated at {values}")
    out = {k: cfg[k] for k in KEEP if k in cfg}
    out["lrs"] = [grid_values[0]] if knob != "lr" else [grids[0]["lrs"][0]] if grids else cfg.get("lrs")
    out["grids"] = grids
    out["tuning"] = {**tuning, "phase": "evaluation"}
    return out, notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.tuned_plan",
                                 description="The evaluation phase's study config from a finished tuning study.")
    ap.add_argument("study", help="the tuning study's folder (tuning.phase: tuning)")
    ap.add_argument("--out", default=None, help="write the YAML here (default: stdout)")
    ap.add_argument("--above", type=int, default=None,
                    help="grid values above each pick that get the evaluation seeds (default: all; 0: the pick only)")
    args = ap.parse_args(argv)
    try:
        if args.above is not None and args.above < 0:
            raise ValueError(f"--above={args.above} is invalid; allowed: an integer >= 0")
        cfg, notes = evaluation_config(Path(args.study), above=args.above)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = "\n".join(f"# {n}" for n in notes) + "\n" + yaml.safe_dump(cfg, sort_keys=False)
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
