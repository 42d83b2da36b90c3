"""A study's tuning protocol (issue 18): the ``tuning:`` section of a preset or study file.

    tuning:
      tuning_seeds: [100, 101, 102]     # pick each arm's knob values (median final value)
      evaluation_seeds: [0, 1, ..., 9]  # the reported comparison, at each arm's own pick
      knobs: [lr]                       # the swept fields each arm tunes (default [lr])
      target_fraction: 0.75             # optional: the time-to-target target (analysis.tuned.Protocol)
      target_reach: 0.8                 # optional
      phase: both                       # optional: tuning | evaluation | both (the default)

``phase`` splits the protocol into two studies of one protocol: ``tuning`` runs the tuning seeds
only (every arm over its whole grid), ``evaluation`` the evaluation seeds only (each arm at the
values ``python -m analysis.tuned_plan`` derives from the tuning study's picks). The analysis loads
the two together as one study (``analysis.tuned``); ``both`` runs every seed in one study.

When a study has one, its seeds ARE the protocol's: ``seeds`` is derived from it (evaluation seeds,
then tuning seeds) - by the source that sets ``tuning`` (a preset or --config file without its own
``seeds``), and by ``fill_in`` when seeds were left at the default ``[0]``. A ``seeds`` list that
disagrees (set beside it, or later: ``--seeds``) is refused, and so is a grid that sets its own
seeds. The section is kept in the study's config, so
study.json records it and ``analysis.tuned.Protocol.from_meta`` reads it from there. Pure Python:
validated with one-line errors before Ray starts.
"""
from __future__ import annotations

from typing import Optional

from plvae.config import is_finite_number, is_int
from tune.errors import StudyError, bad
from tune.sweeps import SWEEPS

TUNING_KEYS = ("tuning_seeds", "evaluation_seeds", "knobs", "target_fraction", "target_reach", "phase")
PHASES = ("both", "tuning", "evaluation")
DEFAULT_KNOBS = ("lr",)
# What an arm may tune: a swept field that is neither a replicate (seed) nor the arm itself (variant).
KNOB_FIELDS = tuple(f for f in SWEEPS if f not in ("seed", "variant"))
DEFAULT_SEEDS = [0]   # StudyConfig.seeds' default: left as it is, it is replaced by the protocol's seeds


def protocol_seeds(tuning: dict) -> list:
    """The study's seeds under a protocol: evaluation seeds, then tuning seeds (one phase: its own)."""
    phase = tuning.get("phase", "both")
    return list(dict.fromkeys([*(tuning["evaluation_seeds"] if phase != "tuning" else []),
                               *(tuning["tuning_seeds"] if phase != "evaluation" else [])]))


def protocol_seeds_or(tuning, seeds):
    """The protocol's seeds where ``tuning`` names them well enough, else ``seeds`` unchanged (for
    ``validate_tuning`` to judge): a source that sets ``tuning`` without ``seeds`` sets both."""
    try:
        return protocol_seeds(tuning)
    except (KeyError, TypeError):
        return seeds


def _seed_list(name: str, values) -> list:
    if not isinstance(values, list) or not values or not all(is_int(v) and v >= 0 for v in values) \
            or len(set(values)) != len(values):
        raise bad(f"tuning.{name}", values, "a non-empty list of distinct integers >= 0")
    return values


def validate_tuning(tuning: Optional[dict], seeds, grids) -> None:
    """Check a ``tuning`` section (None: no protocol) against the study's seeds and grids; raises
    StudyError (one line). Expects ``fill_in_tuning`` to have run."""
    if tuning is None:
        return
    if not isinstance(tuning, dict):
        raise bad("tuning", tuning, "a mapping of " + ", ".join(TUNING_KEYS))
    for key in tuning:
        if key not in TUNING_KEYS:
            raise bad(f"tuning.{key}", tuning[key], "a tuning key: " + ", ".join(TUNING_KEYS))
    for key in ("tuning_seeds", "evaluation_seeds"):
        if key not in tuning:
            raise bad("tuning", tuning, f"a mapping with {key} (a list of seeds)")
        _seed_list(key, tuning[key])
    shared = sorted(set(tuning["tuning_seeds"]) & set(tuning["evaluation_seeds"]))
    if shared:
        raise bad("tuning.evaluation_seeds", tuning["evaluation_seeds"],
                  f"seeds disjoint from tuning_seeds (shared: {shared}): a tuning seed is never reported")
    if tuning.get("phase", "both") not in PHASES:
        raise bad("tuning.phase", tuning["phase"], "one of " + ", ".join(PHASES))
    knobs = tuning.get("knobs", list(DEFAULT_KNOBS))
    if not isinstance(knobs, list) or not knobs or any(k not in KNOB_FIELDS for k in knobs) \
            or len(set(knobs)) != len(knobs):
        raise bad("tuning.knobs", knobs, "a non-empty list of distinct swept fields: " + ", ".join(KNOB_FIELDS))
    for key in ("target_fraction", "target_reach"):
        if key in tuning and not (is_finite_number(tuning[key]) and 0 < tuning[key] <= 1):
            raise bad(f"tuning.{key}", tuning[key], "a number in (0, 1]")
    if isinstance(seeds, list) and set(seeds) != set(protocol_seeds(tuning)):
        raise bad("seeds", seeds, f"the tuning section's seeds {protocol_seeds(tuning)} (its phase's; "
                                  f"leave seeds out)")
    for i, g in enumerate(grids if isinstance(grids, list) else []):
        if isinstance(g, dict) and "seeds" in g:
            raise bad(f"grids[{i}].seeds", g["seeds"], "no seeds in a grid of a study with a tuning section (its "
                                                       "seeds are the protocol's)")


def fill_in_tuning(tuning, seeds):
    """(tuning, seeds) in their one form: knobs defaulted to [lr], and seeds derived from the
    protocol when they were left at the default. Anything malformed is returned as it is, for
    ``validate_tuning`` to name."""
    if not isinstance(tuning, dict):
        return tuning, seeds
    tuning = {**tuning}
    tuning.setdefault("knobs", list(DEFAULT_KNOBS))
    try:
        derived = protocol_seeds(tuning)
    except (KeyError, TypeError, AttributeError):
        return tuning, seeds
    try:
        same = isinstance(seeds, list) and set(seeds) == set(derived)
    except TypeError:   # an unhashable entry: validate_tuning names it
        same = False
    if seeds == DEFAULT_SEEDS or same:
        seeds = derived
    return tuning, seeds


def check_knobs_swept(tuning: Optional[dict], knob_values) -> None:
    """Each knob must take at least two values somewhere in the study, else nothing is tuned.
    ``knob_values``: {field: set of values over every grid}. An evaluation phase runs each arm at
    its pick (and above), so it may hold one value."""
    if not isinstance(tuning, dict) or tuning.get("phase") == "evaluation":
        return
    for k in tuning.get("knobs", DEFAULT_KNOBS):
        if len(knob_values.get(k, ())) < 2:
            raise StudyError(f"tuning.knobs={list(tuning.get('knobs', DEFAULT_KNOBS))!r} is invalid; allowed: "
                             f"knobs the study sweeps over at least two values ({k} has "
                             f"{sorted(knob_values.get(k, ()), key=str)})")
