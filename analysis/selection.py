"""Selection and summaries over groups: each variant's best group (the headline) with its verdict,
the best setting chosen on half the seeds and reported on the other half (``split``), the stable
learning-rate region, and the γ = 0 check."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from plvae.priors import BASELINE, KL, VARIANTS

from analysis import stats
from analysis.columns import DIVERGED, EXPLORATORY, FINAL, p, p_holm
from analysis.groups import contexts, objective

MIN_SPLIT_SEEDS = 6


def gamma_zero_check(per_trial: pd.DataFrame, baseline: str, context_keys: list, reps: list) -> list:
    """gamma = 0 must give exactly the baseline (docs/design.md) for the KL variants with s_k = k^-gamma:
    compare their final values seed by seed with the standard VAE's - a free check of the whole
    pipeline whenever a study includes gamma = 0."""
    if baseline != BASELINE or "gamma" not in per_trial or not reps:
        return []
    keys = context_keys + reps
    base = per_trial[per_trial["variant"] == BASELINE].set_index(keys)[FINAL]
    out = []
    for variant, g in per_trial[(per_trial["gamma"] == 0)].groupby("variant", sort=True):
        v = VARIANTS.get(variant)
        if v is None or not v.uses("gamma") or v.divergence != KL or variant == BASELINE:
            continue
        joined = g.set_index(keys)[FINAL].to_frame("v").join(base.rename("b"), how="inner").dropna()
        if joined.empty:
            continue
        diff = float((joined["v"] - joined["b"]).abs().max())
        scale = float(joined["b"].abs().max()) or 1.0
        verdict = "reproduces the baseline" if diff <= 1e-6 * scale else "does NOT reproduce the baseline"
        out.append(f"check: {variant} at γ = 0 {verdict} (largest |Δ final| = {diff:.3g} over "
                   f"{len(joined)} matched seed(s)); docs/design.md requires γ = 0 to equal the baseline.")
    return out


def headline(groups: pd.DataFrame, context_keys: list, baseline: str, min_seeds: int,
              significance: float, total_loss: bool) -> pd.DataFrame:
    """Each variant's best group per context (lowest median final value among groups with enough
    seeds, divergence rate breaking ties), ranked within the context. Contexts holding only the
    baseline (a beta sweep's other betas) are left out; on a total loss W2 groups are listed after
    the ranking, unranked (another objective)."""
    if groups.empty:
        return groups
    rows = []
    for _, cg in contexts(groups, context_keys):
        if (cg["variant"] == baseline).all():
            continue
        best_rows = []
        for variant, vg in cg.groupby("variant", sort=True):
            pool = vg[vg["n"] >= min_seeds] if (vg["n"] >= min_seeds).any() else vg
            pool = pool.assign(_f=pool[FINAL].fillna(np.inf)).sort_values(["_f", DIVERGED], kind="stable")
            best_rows.append(pool.iloc[0].drop(labels="_f"))
        ranked = pd.DataFrame(best_rows)
        other = (ranked["objective"] != objective(baseline)) if total_loss else pd.Series(False, index=ranked.index)
        ranked_kl = ranked[~other]
        # ties go to the baseline: a variant ranks above it only by being better
        ranked_kl = ranked_kl.assign(_f=ranked_kl[FINAL].fillna(np.inf), _b=~ranked_kl["is_baseline"].astype(bool))
        ranked_kl = ranked_kl.sort_values(["_f", DIVERGED, "_b"], kind="stable").drop(columns=["_f", "_b"])
        ranked_kl.insert(0, "rank", list(range(1, len(ranked_kl) + 1)))
        rest = ranked[other].copy()
        rest.insert(0, "rank", [np.nan] * len(rest))
        out = pd.concat([ranked_kl, rest])
        flags = [False] * len(ranked_kl) + [True] * len(rest)
        out["verdict"] = [verdict(r, baseline, significance, o) for r, o in zip(out.to_dict("records"), flags)]
        rows.append(out)
    return pd.concat(rows, ignore_index=True) if rows else groups.iloc[:0].assign(rank=[], verdict=[])


def verdict(r: dict, baseline: str, significance: float, other_objective: bool = False) -> str:
    """The final value's verdict (on the pairs where both finished) and, beside it, divergence's
    (McNemar): never one ranking; where they disagree both are said ("worse, but stabler")."""
    if r["variant"] == baseline:
        return "baseline"
    if other_objective:
        return "other objective (W2): see the rate-distortion view"
    if r.get("small"):
        return "not tested (few seeds)"
    text = _verdict_of(r, FINAL, significance, ("better", "worse"), ("lower", "higher"))
    div = _verdict_of(r, DIVERGED, significance, ("stabler", "less stable"), ("stabler", "less stable"))
    if not div.startswith(("stabler", "less stable")):
        return text
    clash = (text.startswith(("better", "lower")) and div.startswith("less")) or \
        (text.startswith(("worse", "higher")) and div.startswith("stabler"))
    return f"{text}, but {div}" if clash else f"{text}; {div}"


def _verdict_of(r: dict, q: str, significance: float, words: tuple, raw_words: tuple) -> str:
    """One quantity's verdict from its Holm p (in the corrected family) or raw p (exploratory)."""
    corrected, raw = r.get(p_holm(q)), r.get(p(q))
    # the sign of the test's own effect (the median paired difference on both-finished pairs, or the
    # difference of divergence rates): a ratio of medians is undefined when a median is infinite
    lower = r.get(f"direction_{q}") == "better"
    if corrected is not None and not pd.isna(corrected):   # in the corrected family
        if corrected < significance:
            return words[0] if lower else words[1]
        return "no significant difference"
    if raw is None or pd.isna(raw):
        return "not tested"
    if raw < significance:
        return (raw_words[0] if lower else raw_words[1]) + " (exploratory, uncorrected)"
    return "no difference (exploratory)"


def split(per_trial: pd.DataFrame, context_keys: list, variant_keys: list, baseline: str,
           reps: list, total_loss: bool, n_resamples: int, seed: int) -> pd.DataFrame:
    """Selection without double dipping: per context and variant with several settings, the
    setting with the lowest median final value on the first half of the seeds, reported on the
    second half against the baseline's same seeds (paired). Needs MIN_SPLIT_SEEDS shared seeds."""
    if "seed" not in per_trial.columns or per_trial.empty:
        return pd.DataFrame()
    rows = []
    params = [k for k in variant_keys if k != "variant"]
    for ctx, cp in contexts(per_trial, context_keys):
        base = cp[cp["variant"] == baseline]
        seeds = sorted(set(base["seed"]))
        if len(seeds) < MIN_SPLIT_SEEDS:
            continue
        choose, report = set(seeds[:len(seeds) // 2]), set(seeds[len(seeds) // 2:])
        for variant, vp in cp[cp["variant"] != baseline].groupby("variant", sort=True):
            if total_loss and objective(variant) != objective(baseline):
                continue
            settings = list(vp.groupby(params, dropna=False, sort=True)) if params else [((), vp)]
            if len(settings) < 2:
                continue
            scored = [(float(np.median(s[s["seed"].isin(choose)][FINAL])) if s["seed"].isin(choose).any()
                       else math.inf, k, s) for k, s in settings]
            score, key, chosen = min(scored, key=lambda z: z[0])
            key = key if isinstance(key, tuple) else (key,)
            rep = chosen[chosen["seed"].isin(report)].merge(base[base["seed"].isin(report)], on=reps, suffixes=("", "_b"))
            if len(rep) < 3:
                continue
            d = stats.paired_differences(rep[FINAL], rep[f"{FINAL}_b"])
            e = stats.bootstrap_ci(d, stats.median_inf, n_resamples=n_resamples, seed=seed)
            res = stats.wilcoxon_paired(rep[FINAL], rep[f"{FINAL}_b"])
            rows.append({**dict(zip(context_keys, ctx)), "variant": variant, **dict(zip(params, key)),
                         "n_choose": len(choose), "n_report": len(rep), "chosen_on": float(score),
                         FINAL: float(np.median(rep[FINAL])), "baseline_final": float(np.median(rep[f"{FINAL}_b"])),
                         "diff": e.value, "diff_low": e.low, "diff_high": e.high, "p": res.pvalue,
                         "family": EXPLORATORY})
    return pd.DataFrame(rows)


def stable_lr_table(per_trial: pd.DataFrame, context_keys: list, variant_keys: list) -> pd.DataFrame:
    """Per group (all keys but lr): the largest lr up to which no trial diverged (every lr at or
    below it trained without divergence), and the smallest lr at which some trial diverged."""
    keys = [k for k in context_keys if k != "lr"] + variant_keys
    rows = []
    for key, g in per_trial.groupby(keys, dropna=False, sort=True):
        rates = g.groupby("lr")[DIVERGED].agg(["mean", "size"]).sort_index()
        stable, first_bad = math.nan, math.nan
        for lr, r in rates.iterrows():
            if r["mean"] > 0:
                first_bad = float(lr)
                break
            stable = float(lr)
        rows.append({**dict(zip(keys, key if isinstance(key, tuple) else (key,))),
                     "lrs": ", ".join(f"{lr:g}" for lr in rates.index),
                     "max_stable_lr": stable, "first_diverging_lr": first_bad,
                     "n": int(rates["size"].sum())})
    return pd.DataFrame(rows)
