"""Tuned against tuned (docs/design.md, "What a fair comparison is"; issue 18).

"Trains faster and more stably" is a claim about optimisation, and such claims are judged with
every arm tuned the same way (AlgoPerf's external tuning; Choi et al. 2019, Schmidt et al. 2021):
- an **arm** is a variant with its prior parameters and stabilisers (warm-up, clipping): every
  field of a trial except the tuned knobs (``lr``) and the seeds, within a **context** (dataset,
  latent size, ...);
- each arm's knob is **picked on the tuning seeds** by the median final value (a diverged run
  counts as +inf), with the same grid, so the same budget, for every arm;
- each arm is **reported at its own pick on the evaluation seeds only**, paired by seed with the
  baseline (``vae`` without stabilisers) at the baseline's own pick. A tuning seed in a reported
  comparison is an error, not a warning.

What it reports, never folded into one number:
- **time to a target**: a value 8 in 10 of the tuned baseline's seeds reach by 3/4 of the budget
  (``target_of``). Steps (and seconds from the first training step) to reach it;
  runs that never do are censored at the budget, so the paired Gehan test can say "slower" as
  clearly as "faster"; the speed-up is the ratio of Kaplan-Meier median steps with a bootstrap CI;
- **final quality** on the seeds where both runs finished (n shown), exact Wilcoxon, with the
  order-statistic CI of the median ratio;
- **divergence**: counts and the exact McNemar test;
- **the stable learning-rate range**: the largest knob value with at most 1 in 10 runs diverged
  (all seeds at that value), and the band of values within 5% of the arm's best median.
Holm corrects over the time and final tests of every context together: one family.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from plvae import metrics as M
from plvae.priors import BASELINE, VARIANTS

from analysis.censored import censor, finished_pairs, gehan_paired, km_median, speedup
from analysis.load import TIME_TOTAL, Study, final
from analysis.stats import holm, mcnemar_exact, median_ci, median_inf
from analysis.tuned_time import clock_column, first_reach, flattening, steps_per_epoch, target_of

ARM_FIELDS = ("variant", "gamma", "min_decay", "clip_dim", "decay_rate", "warmup_steps", "grad_clip_norm")
CONTEXT_FIELDS = ("study", "dataset", "data_alpha", "image_size", "channels", "latent_dim", "kl_coeff", "net")
SEED_FIELDS = ("seed", "data_seed")
STABILISERS = ("warmup_steps", "grad_clip_norm")
USABLE = (M.COMPLETED, M.DIVERGED_OUTCOME)   # ran the whole budget, or diverged (an outcome)


@dataclass(frozen=True)
class Protocol:
    """Which seeds tune and which evaluate, what is tuned, and the decision rules, declared before
    the run (a preset's ``tuning:`` section, recorded in study.json)."""

    tuning_seeds: tuple
    evaluation_seeds: tuple
    knobs: tuple = ("lr",)
    metric: str = M.VAL_LOSS
    target_fraction: float = 0.75
    target_reach: float = 0.8
    stable_max_diverged: float = 0.1
    band: float = 0.05
    baseline: str = BASELINE

    def __post_init__(self):
        object.__setattr__(self, "tuning_seeds", tuple(int(s) for s in self.tuning_seeds))
        object.__setattr__(self, "evaluation_seeds", tuple(int(s) for s in self.evaluation_seeds))
        object.__setattr__(self, "knobs", tuple(self.knobs))
        both = sorted(set(self.tuning_seeds) & set(self.evaluation_seeds))
        if both:
            raise ValueError(f"evaluation_seeds={list(self.evaluation_seeds)} is invalid; allowed: seeds disjoint "
                             f"from the tuning seeds (shared: {both})")
        if not self.tuning_seeds or not self.evaluation_seeds:
            raise ValueError("tuning_seeds/evaluation_seeds=[] is invalid; allowed: at least one seed each")
        for name in ("target_fraction", "target_reach"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is invalid; allowed: a number in (0, 1]")

    @classmethod
    def from_meta(cls, meta: dict) -> Optional["Protocol"]:
        """The protocol a study recorded (study.json's ``study_config.tuning``, where the driver keeps
        the study's configuration; or a top-level ``tuning``), or None."""
        t = meta.get("tuning") or (meta.get("study_config") or {}).get("tuning") or {}
        if not t:
            return None
        keys = ("tuning_seeds", "evaluation_seeds", "knobs", "metric", "target_fraction", "target_reach",
                "stable_max_diverged", "band", "baseline")
        return cls(**{k: t[k] for k in keys if k in t})


@dataclass
class Tuned:
    """``picks``: each arm's knob value chosen on the tuning seeds; ``comparison``: each arm against
    the tuned baseline on the evaluation seeds; ``stable``: the stable range per arm; ``sensitivity``:
    the median final value per arm and knob value (the learning-rate sensitivity figure's data)."""

    protocol: Protocol
    picks: pd.DataFrame
    comparison: pd.DataFrame
    stable: pd.DataFrame
    sensitivity: pd.DataFrame
    notes: list


# ------------------------------------------------------------------------------ the pieces
def _present(trials: pd.DataFrame, fields) -> list:
    return [f for f in fields if f in trials.columns]


def _key_cols(trials: pd.DataFrame) -> tuple[list, list]:
    """(context columns that vary, arm columns present)."""
    ctx = [c for c in _present(trials, CONTEXT_FIELDS) if trials[c].nunique(dropna=False) > 1]
    return ctx, _present(trials, ARM_FIELDS)


def final_values(trials: pd.DataFrame, metric: str) -> pd.Series:
    """Each trial's final value of the metric; +inf for a trial that diverged."""
    values = trials[final(metric)].astype(float)
    return values.where(~trials["diverged"].astype(bool), np.inf)


def _is_baseline(trials: pd.DataFrame, baseline: str) -> pd.Series:
    plain = trials["variant"] == baseline
    if "warmup_steps" in trials.columns:
        plain &= trials["warmup_steps"].fillna(0).astype(float) == 0
    if "grad_clip_norm" in trials.columns:
        plain &= trials["grad_clip_norm"].isna()
    return plain


def by_keys(df: pd.DataFrame, cols: list):
    """groupby over cols (NaN is a value), or one group when there are none."""
    if not cols:
        yield (), df
        return
    for key, g in df.groupby(cols, dropna=False, sort=True):
        yield (key if isinstance(key, tuple) else (key,)), g


def arm_label(row) -> str:
    """``vae``, ``vae+warmup 100``, ``powerlaw_clamp (γ=0.85, min_decay=0.001)``."""
    variant = VARIANTS.get(row["variant"])
    parts = [f"{k if k != 'gamma' else 'γ'}={row[k]:g}" for k in ("gamma", "min_decay", "clip_dim", "decay_rate")
             if k in row and pd.notna(row[k]) and variant is not None and variant.uses(k)]
    label = row["variant"] + (f" ({', '.join(parts)})" if parts else "")
    if pd.notna(row.get("warmup_steps")) and float(row.get("warmup_steps") or 0) > 0:
        label += f" + warm-up {int(row['warmup_steps'])}"
    if pd.notna(row.get("grad_clip_norm")):
        label += f" + clip {row['grad_clip_norm']:g}"
    return label


def pick(trials: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Each arm's knob value with the lowest median final value over the tuning seeds (ties: the
    first in knob order). Records the budget (tuning runs per arm) so unequal budgets show."""
    tun = trials[trials["seed"].isin(protocol.tuning_seeds)]
    ctx, arm = _key_cols(trials)
    rows = []
    for key, g in by_keys(tun, ctx + arm):
        values = final_values(g, protocol.metric)
        med = values.groupby([g[k] for k in protocol.knobs], dropna=False).apply(lambda v: float(median_inf(v)))
        finite = med[np.isfinite(med.to_numpy())]
        best = finite.idxmin() if len(finite) else None
        best = best if isinstance(best, tuple) or best is None else (best,)
        rows.append({**dict(zip(ctx + arm, key)),
                     **{f"pick_{k}": (best[i] if best else math.nan) for i, k in enumerate(protocol.knobs)},
                     "tuning_median": float(finite.min()) if len(finite) else math.inf,
                     "tuning_runs": len(g), "grid_points": len(med)})
    picks = pd.DataFrame(rows)
    if len(picks):
        picks.insert(0, "arm", [arm_label(r) for r in picks.to_dict("records")])
    return picks


def _at_pick(trials: pd.DataFrame, p: dict, ctx: list, arm: list, protocol: Protocol) -> pd.DataFrame:
    """The arm's evaluation runs at its pick, one per seed."""
    mask = pd.Series(True, index=trials.index)
    for c in ctx + arm:
        mask &= (trials[c] == p[c]) | (trials[c].isna() & pd.isna(p[c]))
    for k in protocol.knobs:
        mask &= np.isclose(trials[k].astype(float), float(p[f"pick_{k}"]))
    runs = trials[mask & trials["seed"].isin(protocol.evaluation_seeds)]
    leaked = set(runs["seed"]) & set(protocol.tuning_seeds)
    if leaked:   # cannot happen through the mask above; the guard states the rule where it matters
        raise ValueError(f"seed={sorted(leaked)} is invalid in a reported comparison; allowed: evaluation seeds only")
    return runs.drop_duplicates("seed").set_index("seed")


def _time_row(study: Study, a: pd.DataFrame, b: pd.DataFrame, target: float, protocol: Protocol) -> dict:
    """Time to target of one arm against the baseline, paired by seed (a and b aligned)."""
    ea, sa = first_reach(study, a, target, protocol.metric)
    eb, sb = first_reach(study, b, target, protocol.metric)
    budget = float(max(a["max_epochs"].max(), b["max_epochs"].max()))
    ta, ra = censor(ea, budget)
    tb, rb = censor(eb, budget)
    spe = steps_per_epoch(b)
    test, ratio = gehan_paired(ta, ra, tb, rb), speedup(ta, ra, tb, rb)
    ends = pd.concat([a, b])
    end = clock_column(ends, final(M.TRAIN_TIME_S), TIME_TOTAL)   # each run's own clock at its end
    csa, csb = censor(sa, a[end].astype(float)), censor(sb, b[end].astype(float))
    secs = speedup(*csa, *csb)
    scale = spe if math.isfinite(spe) else 1.0
    return {"steps_per_epoch": spe, "reached": int(ra.sum()), "baseline_reached": int(rb.sum()),
            "median_steps": float(km_median(ta, ra)) * scale, "baseline_median_steps": float(km_median(tb, rb)) * scale,
            "speedup": ratio.value, "speedup_low": ratio.low, "speedup_high": ratio.high,
            "median_seconds": float(km_median(*csa)), "baseline_median_seconds": float(km_median(*csb)),
            "speedup_seconds": secs.value, "speedup_seconds_low": secs.low, "speedup_seconds_high": secs.high,
            "p_time": test.pvalue, "time_direction": -test.direction, "time_pairs": test.n}


def _final_row(a: pd.DataFrame, b: pd.DataFrame, protocol: Protocol) -> dict:
    """Final quality on the seeds where both finished, and divergence beside it (never folded)."""
    fa, fb = final_values(a, protocol.metric), final_values(b, protocol.metric)
    fp = finished_pairs(fa.to_numpy(), fb.to_numpy())
    mc = mcnemar_exact(a["diverged"].astype(bool), b["diverged"].astype(bool))
    return {"n_both_finished": fp.n_both, "final_ratio": fp.ratio.value, "final_ratio_low": fp.ratio.low,
            "final_ratio_high": fp.ratio.high, "final_ratio_coverage": fp.ratio.coverage,
            "p_final": fp.test.pvalue, "final_direction": -fp.test.direction,
            "diverged": int(a["diverged"].sum()), "baseline_diverged": int(b["diverged"].sum()),
            "p_diverged": mc.pvalue}


def _context_rows(study: Study, trials: pd.DataFrame, picks: pd.DataFrame, ctx: list, arm: list,
                  protocol: Protocol, notes: list) -> list:
    """Every arm of one context against that context's tuned baseline."""
    base = picks[_is_baseline(picks, protocol.baseline)]
    if base.empty or base[f"pick_{protocol.knobs[0]}"].isna().all():
        notes.append(f"{_ctx_text(picks.iloc[0], ctx)}: no tuned {protocol.baseline} to compare with")
        return []
    b_all = _at_pick(trials, base.iloc[0].to_dict(), ctx, arm, protocol)
    target, *_, note = target_of(study, b_all.reset_index(), protocol)
    notes.append(f"{_ctx_text(picks.iloc[0], ctx)}{note}")
    flat = flattening(study, b_all.reset_index(), protocol.metric)
    if flat is not None:
        notes.append(f"{_ctx_text(picks.iloc[0], ctx)}the tuned {protocol.baseline} over its last epochs "
                     f"{flat['from']}-{flat['to']} ({flat['runs']} finished runs, median): {protocol.metric} "
                     f"{-flat['value']:+.1%}, best so far {-flat['best']:+.1%}")
    rows = []
    for p in picks.drop(index=base.index[:1]).to_dict("records"):
        a_all = _at_pick(trials, p, ctx, arm, protocol)
        seeds = sorted(set(a_all.index) & set(b_all.index))
        a, b = a_all.loc[seeds].reset_index(), b_all.loc[seeds].reset_index()
        row = {**{c: p[c] for c in ctx}, "arm": p["arm"],
               **{f"pick_{k}": p[f"pick_{k}"] for k in protocol.knobs},
               **{f"baseline_pick_{k}": base.iloc[0][f"pick_{k}"] for k in protocol.knobs},
               "n_pairs": len(seeds), "seeds": " ".join(map(str, seeds)), "target": target}
        if seeds:
            row.update(_time_row(study, a, b, target, protocol))
            row.update(_final_row(a, b, protocol))
        rows.append(row)
    return rows


def _ctx_text(row, ctx: list) -> str:
    return ", ".join(f"{c}={row[c]}" for c in ctx) + (": " if ctx else "")


def compare_tuned(study: Study, protocol: Protocol, picks: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Each arm at its pick against the tuned baseline, per context, evaluation seeds only; Holm over
    the time and final tests of every context together (one family)."""
    trials = study.trials[study.trials["status"].isin(USABLE)]
    ctx, arm = _key_cols(study.trials)
    notes, rows = [], []
    for _, pk in by_keys(picks, ctx):
        rows += _context_rows(study, trials, pk, ctx, arm, protocol, notes)
    table = pd.DataFrame(rows)
    if len(table) and "p_time" in table:
        family = np.r_[table["p_time"].to_numpy(float), table["p_final"].to_numpy(float)]
        adjusted = holm(family)
        table["p_holm_time"], table["p_holm_final"] = adjusted[:len(table)], adjusted[len(table):]
    return table, notes


def sensitivity(trials: pd.DataFrame, protocol: Protocol) -> pd.DataFrame:
    """Per context, arm and knob value, over every seed (tuning and evaluation): runs, diverged, and
    the median final value with its order-statistic CI (a diverged run is +inf in both)."""
    ctx, arm = _key_cols(trials)
    knob = protocol.knobs[0]
    rows = []
    for key, g in by_keys(trials[trials["status"].isin(USABLE)], ctx + arm + [knob]):
        values = final_values(g, protocol.metric).to_numpy()
        ci = median_ci(values)
        rows.append({**dict(zip(ctx + arm + [knob], key)), "runs": len(g), "diverged": int(g["diverged"].sum()),
                     "median": ci.value, "low": ci.low, "high": ci.high, "coverage": ci.coverage})
    table = pd.DataFrame(rows)
    if len(table):
        table.insert(0, "arm", [arm_label(r) for r in table.to_dict("records")])
    return table


def stable_range(sens: pd.DataFrame, protocol: Protocol, ctx: list) -> pd.DataFrame:
    """Per arm: the largest knob value with at most ``stable_max_diverged`` of its runs diverged, and
    the band of knob values whose median is within ``band`` of the arm's best median (its width in
    decades)."""
    knob = protocol.knobs[0]
    rows = []
    for key, g in by_keys(sens, ctx + ["arm"]):
        g = g.sort_values(knob)
        ok = g[g["diverged"] <= protocol.stable_max_diverged * g["runs"]]
        best = float(g["median"].min())
        band = g[g["median"] <= (1 + protocol.band) * best] if math.isfinite(best) else g.iloc[:0]
        lo, hi = (float(band[knob].min()), float(band[knob].max())) if len(band) else (math.nan, math.nan)
        top = ok.iloc[-1] if len(ok) else None
        rows.append({**dict(zip(ctx + ["arm"], key)),
                     f"stable_max_{knob}": float(top[knob]) if top is not None else math.nan,
                     "runs_at_stable_max": int(top["runs"]) if top is not None else 0,
                     "diverged_at_stable_max": int(top["diverged"]) if top is not None else 0,
                     f"largest_{knob}_tried": float(g[knob].max()), "best_median": best,
                     f"band_low_{knob}": lo, f"band_high_{knob}": hi,
                     "band_decades": math.log10(hi / lo) if lo > 0 else math.nan})
    return pd.DataFrame(rows)


def tuned(study: Study, protocol: Optional[Protocol] = None) -> Tuned:
    """The whole tuned-against-tuned analysis of a study run under a tuning protocol (study.json's
    ``tuning``, or ``protocol``)."""
    protocol = protocol or Protocol.from_meta(study.meta)
    if protocol is None:
        raise ValueError(f"study {study.name!r} has no tuning protocol; allowed: a study run with a preset's "
                         f"tuning: section, or analysis.tuned.Protocol(...) given here")
    missing = [c for c in ("seed", "variant", *protocol.knobs) if c not in study.trials.columns]
    if missing:
        raise ValueError(f"columns={missing} are missing; allowed: a study whose trials record seed, variant and "
                         f"the tuned knobs")
    ctx, _ = _key_cols(study.trials)
    picks = pick(study.trials[study.trials["status"].isin(USABLE)], protocol)
    comparison, notes = compare_tuned(study, protocol, picks)
    sens = sensitivity(study.trials, protocol)
    return Tuned(protocol, picks, comparison, stable_range(sens, protocol, ctx), sens, notes)


def tuned_of(study: Study, full: bool = True) -> Optional[Tuned]:
    """``tuned(study)`` for a study that recorded a tuning protocol, None for one that did not.
    ``full=False``: the picks, stable range and sensitivity only (no history scan, no tests):
    what the sensitivity figure needs."""
    protocol = Protocol.from_meta(study.meta)
    if protocol is None:
        return None
    if full:
        return tuned(study, protocol)
    ctx, _ = _key_cols(study.trials)
    sens = sensitivity(study.trials, protocol)
    return Tuned(protocol, pick(study.trials[study.trials["status"].isin(USABLE)], protocol), pd.DataFrame(),
                 stable_range(sens, protocol, ctx), sens, [])
