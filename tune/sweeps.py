"""The sweeps of a study: which TrialConfig fields are swept, the grid (counted in linear time,
built with hash-based de-duplication), gammas relative to the data's alpha, and Optuna's space.

Which variant uses which field comes from the variant rows of ``plvae.priors.VARIANTS`` (their
``uses_<field>`` flags): nothing here lists variants by name.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
from typing import Optional

from plvae.config import SWEEPS, ConfigError, TrialConfig
from plvae.priors import VARIANTS, Variant, matched_gamma
from tune.errors import StudyError, bad

# Swept TrialConfig field -> the StudyConfig list holding its values, in grid order.
SWEEP_LISTS = tuple(SWEEPS.values())
INT_SWEEPS = {"latent_dim", "clip_dim", "seed", "warmup_steps"}
# Swept fields where None (written none, null or off in a list) is a value: the option is off.
OPTIONAL_SWEEPS = {"grad_clip_norm"}
_OFF = ("none", "null", "off")
TRIAL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrialConfig)
                  if f.default is not dataclasses.MISSING}
# Without --max-trials a study refuses a grid larger than this: a typo in a range (0:2:0.00001)
# is one line, not minutes of building trials and gigabytes of memory.
DEFAULT_MAX_TRIALS = 5000

# A gamma given relative to the data's measured exponent (with gamma_from_data): "alpha/2",
# "alpha", "1.5*alpha". Resolved to numbers once alpha is measured.
ALPHA_GAMMA = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?alpha\s*(?:/\s*(\d+(?:\.\d*)?))?\s*$")


def resolve_gamma(value, alpha: float) -> float:
    """A gamma entry as a number: itself, or a multiple of alpha ('alpha/2' -> round(alpha/2, 2))."""
    if not isinstance(value, str):
        return value
    m = ALPHA_GAMMA.match(value)
    return round(float(m.group(1) or 1) * alpha / float(m.group(2) or 1), 2)


def data_gamma(alphas: dict) -> dict:
    """--gamma-from-data: the trials' extra tags {"data_alpha", "data_gamma"}, gamma = alpha/2
    (plvae.priors.matched_gamma) from the measured alpha."""
    alpha = next(iter(alphas.values()))  # the data fields are fixed in a study: one dataset
    gamma = matched_gamma(alpha)
    if not math.isfinite(alpha) or gamma < 0:
        raise StudyError(f"gamma_from_data: measured alpha={alpha:.3f} gives gamma={gamma} < 0; allowed: "
                         "data whose spectrum decays (alpha > 0)")
    return {"data_alpha": alpha, "data_gamma": gamma}


def resolved_gammas(gammas: list, extra: dict) -> list:
    """A gamma list with its 'alpha/2'-style entries resolved and the data-matched gamma added."""
    return sorted({resolve_gamma(g, extra["data_alpha"]) for g in gammas} | {extra["data_gamma"]})


# ---------------------------------------------------------------------------- the grid
def _axes(grid, variant: Variant, alpha: float) -> list[list]:
    """The value list of each swept field for one variant of one grid: a field the variant does not
    use keeps its TrialConfig default instead of multiplying the grid with identical trials."""
    axes = []
    for tfield, lst in SWEEPS.items():
        if tfield == "variant":
            axes.append([variant.name])
        elif not variant.uses(tfield):
            axes.append([TRIAL_DEFAULTS[tfield]])
        elif tfield == "gamma":
            axes.append(list(dict.fromkeys(resolve_gamma(g, alpha) for g in grid.gammas)))
        else:
            axes.append(getattr(grid, lst))
    return axes


def count_trials(grids: list, alpha: float = 1.0) -> int:
    """The number of distinct trials in the union of the grids, without building one: per variant
    the product of its axes' lengths, and the union by inclusion-exclusion over the grids'
    intersections (a grid is a box, the intersection of boxes is the box of the axes'
    intersections). Linear in the number of values for a study's handful of grids."""
    boxes = {}   # grid index -> {variant: [set of values per axis]}
    for i, g in enumerate(grids):
        boxes[i] = {v: [set(a) for a in _axes(g, VARIANTS[v], alpha)] for v in dict.fromkeys(g.variants)}
    if len(grids) > 12:   # inclusion-exclusion is 2^n: past a dozen grids, count the distinct points
        return _count_points(boxes)
    total = 0
    for r in range(1, len(grids) + 1):
        for subset in itertools.combinations(range(len(grids)), r):
            common = set.intersection(*(set(boxes[i]) for i in subset))
            n = sum(math.prod(len(set.intersection(*(boxes[i][v][k] for i in subset))) for k in range(len(SWEEPS)))
                    for v in common)
            total += n if r % 2 else -n
    return total


ENUMERATE_LIMIT = 2_000_000   # points a count by enumeration visits at most


def _count_points(boxes: dict) -> int:
    """The distinct points of many boxes, by enumerating them (sets of value tuples); past
    ENUMERATE_LIMIT points the sum of the boxes' sizes (an upper bound: such a study is refused anyway)."""
    sizes = [math.prod(len(a) for a in axes) for b in boxes.values() for axes in b.values()]
    if sum(sizes) > ENUMERATE_LIMIT:
        return sum(sizes)
    seen = set()
    for b in boxes.values():
        for v, axes in b.items():
            seen.update((v, *p) for p in itertools.product(*(sorted(a, key=repr) for a in axes)))
    return len(seen)


def grid_trials(grids: list, fixed: dict, extra: Optional[dict] = None, data_seed_from_seed: bool = False) -> list[dict]:
    """Every distinct trial of the union of the grids, as a full, flat, validated TrialConfig dict.
    Trials share their fixed fields, so the swept values alone identify one (a hash set: linear).
    With ``data_seed_from_seed`` each trial's data_seed is its seed (a replicate redraws the data)."""
    alpha = (extra or {}).get("data_alpha", 1.0)
    tags = {**fixed.get("extra", {}), **(extra or {})}
    out, seen = [], set()
    for grid in grids:
        for variant in dict.fromkeys(grid.variants):
            for values in itertools.product(*_axes(grid, VARIANTS[variant], alpha)):
                if values in seen:
                    continue
                seen.add(values)
                swept = dict(zip(SWEEPS, values))
                if data_seed_from_seed:
                    swept["data_seed"] = swept["seed"]
                out.append(TrialConfig.from_dict({**fixed, **swept, "extra": tags}).to_dict())
    return out


def probe_value(fixed: dict, tfield: str, value, where: str = "") -> None:
    """Validate one sweep value by building a TrialConfig that uses it (on a variant that needs it)."""
    probe = {**fixed, tfield: value}
    variant = next(v for v in VARIANTS.values() if v.uses(tfield))
    if tfield != "variant":
        probe["variant"] = variant.name
        if variant.uses("clip_dim") and tfield != "clip_dim":
            probe["clip_dim"] = 1
        if variant.uses("decay_rate") and tfield != "decay_rate":
            probe["decay_rate"] = 0.0
    try:
        TrialConfig.from_dict(probe)
    except ConfigError as e:
        raise StudyError(where + str(e)) from None


# ---------------------------------------------------------------------------- optuna
class OptunaSpace:
    """Optuna's define-by-run space within one arm (the study's one variant; issue 18): gamma
    uniform, min_decay log-uniform, the other swept lists categorical, each asked only where the
    variant uses it (the others keep their TrialConfig default), so every suggestion is a full,
    consistent TrialConfig dict. The seed is never asked: it is the first seed here, and
    ``tune.optuna_study.SeedRepeater`` runs each suggestion at every seed. A class, not a closure: the searcher
    is pickled with the experiment state for --resume."""

    def __init__(self, cfg: dict, extra: dict):
        self.cfg, self.extra = cfg, extra

    def __call__(self, trial) -> dict:
        c = self.cfg
        fixed = {}

        def ask(tfield, suggest):
            values = c[SWEEPS[tfield]]
            if len(values) > 1:
                suggest(tfield, values)
            else:
                fixed[tfield] = values[0]

        ask("variant", lambda n, v: trial.suggest_categorical(n, v))
        variant = VARIANTS[trial.params.get("variant", fixed.get("variant"))]
        for tfield in SWEEPS:
            if tfield == "variant":
                continue
            if tfield == "seed":   # a replicate, not a knob: tune.optuna_study.SeedRepeater runs every seed
                fixed["seed"] = c["seeds"][0]
                continue
            if not variant.uses(tfield):
                fixed[tfield] = TRIAL_DEFAULTS[tfield]
            elif tfield == "gamma":
                ask(tfield, lambda n, v: trial.suggest_float(n, min(v), max(v)))
            elif tfield == "min_decay":
                ask(tfield, lambda n, v: trial.suggest_float(n, min(v), max(v), log=True))
            else:
                ask(tfield, lambda n, v: trial.suggest_categorical(n, v))
        if c.get("data_seed_from_seed"):
            fixed["data_seed"] = fixed["seed"]
        tags = {**c["trial"].get("extra", {}), **self.extra}
        # The whole TrialConfig dict (validated), sampled values included: Ray merges it over
        # the sampled values, so params.json is a full, flat trial config, as for the grid.
        return TrialConfig.from_dict({**c["trial"], **trial.params, **fixed, "extra": tags}).to_dict()


# ---------------------------------------------------------------------------- parsing values
def parse_values(name: str, text: str, kind=float) -> list:
    """'0,0.5,1' or a range 'start:stop:step' (stop excluded, like numpy.arange; '0:2:0.1' is
    0.0, 0.1, ..., 1.9) or a mix '0:1:0.25,1.5'. kind is float, int or str."""
    if not isinstance(text, str):
        return text
    allowed = ("comma-separated numbers or ranges start:stop:step (stop excluded, step > 0)"
               if kind is not str else "comma-separated names")
    optional = any(SWEEPS[f] == name for f in OPTIONAL_SWEEPS)
    allowed += "; 'none' (off)" if optional else ""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise bad(name, text, allowed)
        if optional and part.lower() in _OFF:
            out.append(None)
            continue
        if kind is str or (name == "gammas" and ALPHA_GAMMA.match(part)):
            out.append(part)
            continue
        if ":" in part:
            bits = part.split(":")
            if len(bits) != 3:
                raise bad(name, text, allowed)
            try:
                start, stop, step = (kind(b) for b in bits)
            except ValueError:
                raise bad(name, text, allowed) from None
            if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)) or step <= 0:
                raise bad(name, text, allowed)
            n = math.ceil((stop - start) / step - 1e-9)
            if n < 1:
                raise bad(name, text, allowed + f"; {part!r} is empty")
            if n > 10 * DEFAULT_MAX_TRIALS * 100:   # no list of a billion values is ever built
                raise bad(name, text, allowed + f"; {part!r} has {n} values")
            out.extend(kind(round(start + i * step, 10)) for i in range(n))
        else:
            try:
                out.append(kind(part))
            except ValueError:
                raise bad(name, text, allowed + (" (integers)" if kind is int else "")) from None
    return out
