"""One test per quantity of a group against its baseline, the declared primary family, and Holm.

A seed fixes initial weights, data order and noise for every variant, so a group is compared with
the baseline seed by seed - Wilcoxon signed-rank on the paired differences with a bootstrap CI of
the median difference, the exact McNemar test for divergence; unpaired tests (Mann-Whitney,
Fisher) only where no seeds pair. Holm corrects over the declared primary family only (or over
all tests, or within each quantity); every other test is exploratory, reported with its raw p.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import stats
from analysis.columns import (DISTORTION_GAP, EXPLORATORY, FINAL, PRIMARY, PRIMARY_QUANTITIES, RATES, SPREAD,
                              TESTED, high, low, p, p_holm, statistic)
from analysis.groups import same, unkey

TEST_COLUMNS = ["_group", "quantity", "test", "paired", "statistic", "p", "n", "n_baseline", "n_pairs", "estimate",
                "baseline_estimate", "diff", "diff_low", "diff_high", "note"]


def quantity_test(i: int, q: str, rec: dict, key, group_keys, g: pd.DataFrame, b: pd.DataFrame, reps: list,
                  min_seeds: int, n_resamples: int, seed: int) -> dict:
    """One test of quantity q, group g against baseline b: paired by seed where seeds pair."""
    row = {"_group": i, **unkey(group_keys, key), "quantity": q, "n": len(g), "n_baseline": len(b),
           "estimate": rec.get(q, math.nan), "baseline_estimate": _group_estimate(q, b), "note": "",
           "paired": False, "n_pairs": 0, "diff": math.nan, "diff_low": math.nan, "diff_high": math.nan}
    pairs = g.merge(b, on=reps, suffixes=("", "_b")) if reps else pd.DataFrame()
    row["n_pairs"] = len(pairs)
    if q == SPREAD:  # a group statistic: no pairing possible
        x, y = g[FINAL].to_numpy(float), b[FINAL].to_numpy(float)
        x, y = x[np.isfinite(x)], y[np.isfinite(y)]
        if len(x) < min_seeds or len(y) < min_seeds:
            return {**row, "test": "brown-forsythe", "statistic": math.nan, "p": math.nan,
                    "note": f"not tested: n < {min_seeds}"}
        res = stats.spread_test(x, y)
        return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue}
    if len(pairs) >= min_seeds:
        row["paired"] = True
        if q in RATES:
            res = stats.mcnemar_exact(pairs[q].astype(bool), pairs[f"{q}_b"].astype(bool))
            row["diff"] = float(pairs[q].astype(float).mean() - pairs[f"{q}_b"].astype(float).mean())
        else:
            d = stats.paired_differences(pairs[q], pairs[f"{q}_b"])
            res = stats.wilcoxon_paired(pairs[q], pairs[f"{q}_b"])
            e = stats.bootstrap_ci(d, stats.median_inf, n_resamples=n_resamples, seed=seed)
            row["diff"], row["diff_low"], row["diff_high"] = e.value, e.low, e.high
        return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue}
    # unpaired only where pairing is impossible (no shared seeds)
    if len(g) < min_seeds or len(b) < min_seeds:
        return {**row, "test": "fisher" if q in RATES else "mann-whitney", "statistic": math.nan, "p": math.nan,
                "note": f"not tested: n < {min_seeds}"}
    if q in RATES:
        res = stats.fisher(int(g[q].sum()), len(g), int(b[q].sum()), len(b))
    else:
        res = stats.mann_whitney(g[q].to_numpy(float), b[q].to_numpy(float))
    return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue,
            "note": "unpaired: no seeds shared with the baseline"}


def gap_test(i: int, rec: dict, key, group_keys, gap: pd.DataFrame, min_seeds: int) -> dict:
    """The distortion gap's test: Wilcoxon signed-rank of the per-seed gaps against 0."""
    row = {"_group": i, **unkey(group_keys, key), "quantity": DISTORTION_GAP, "test": "wilcoxon",
           "paired": True, "n": rec["n"], "n_baseline": len(gap), "n_pairs": len(gap),
           "estimate": rec[DISTORTION_GAP], "baseline_estimate": 0.0, "diff": rec[DISTORTION_GAP],
           "diff_low": rec[low(DISTORTION_GAP)], "diff_high": rec[high(DISTORTION_GAP)], "note": ""}
    if len(gap) < min_seeds:
        return {**row, "statistic": math.nan, "p": math.nan,
                "note": f"not tested: {len(gap)} seed(s) inside the baseline frontier's rate range (< {min_seeds})"}
    res = stats.wilcoxon_paired(gap["gap"], None)
    return {**row, "statistic": res.statistic, "p": res.pvalue, "note": "per-seed frontier, interpolated in log rate"}


def _group_estimate(q: str, g: pd.DataFrame) -> float:
    if q in RATES:
        return float(g[q].astype(float).mean()) if len(g) else math.nan
    if q == SPREAD:
        v = g[FINAL].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        return float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
    v = g[q].to_numpy(dtype=float)
    v = v[~np.isnan(v)]
    return float(statistic(q)(v)) if len(v) else math.nan


def direction(r: dict) -> str:
    """'better' / 'worse' than the baseline (every quantity here is lower-is-better), '' if equal.
    Paired tests go by the median paired difference, others by the two groups' estimates."""
    d = r.get("diff")
    if r.get("paired") and d is not None and not pd.isna(d):
        return "" if d == 0 else ("better" if d < 0 else "worse")
    a, b = r["estimate"], r["baseline_estimate"]
    if a is None or b is None or pd.isna(a) or pd.isna(b) or a == b or \
            (math.isfinite(a) and math.isfinite(b) and np.isclose(a, b, rtol=1e-9, atol=0)):
        return ""
    return "better" if a < b else "worse"


def mark_primary(tests: pd.DataFrame, primary: list, per_trial: pd.DataFrame, data_gamma: float,
                 notes: list) -> list:
    """Row labels of the tests that a declared primary entry names. An entry's `where` fixes trial
    fields (gamma: "data" is the data-matched gamma; "max" / "min" the largest / smallest value in
    the study); every test that matches it is in the family (one per value of its `per` fields)."""
    rows = []
    for entry in primary:
        q = PRIMARY_QUANTITIES.get(entry.get("quantity"))
        sel = tests[(tests["variant"] == entry.get("variant")) & (tests["quantity"] == q)] if q else tests.iloc[:0]
        for field_, want in (entry.get("where") or {}).items():
            if field_ not in sel.columns:
                sel = sel.iloc[:0] if not _fixed_matches(per_trial, field_, want) else sel
                continue
            if want == "data":
                want = data_gamma
            elif want in ("max", "min"):
                col = pd.to_numeric(per_trial[field_], errors="coerce")
                want = col.max() if want == "max" else col.min()
            sel = sel[sel[field_].map(lambda x, w=want: same(x, w) or (
                isinstance(x, (int, float)) and isinstance(w, (int, float)) and np.isclose(x, w)))]
        if sel.empty:
            notes.append(f"primary comparison {entry} matched no test (no such trials?)")
        rows += [r for r in sel.index if r not in rows]
    return rows


def _fixed_matches(per_trial: pd.DataFrame, field_: str, want) -> bool:
    """A `where` field that is not swept matches when the study's one value is it (or unknown)."""
    return field_ not in per_trial.columns or per_trial[field_].map(lambda x: same(x, want)).all()


def correct(tests: list, groups: pd.DataFrame, group_keys: list, primary: list, per_trial: pd.DataFrame,
            data_gamma: float, holm_family: str, significance: float, notes: list) -> pd.DataFrame:
    """The tests as a table with their family, Holm-corrected p, significance and direction; each
    group row gets ``p(q)`` and ``p_holm(q)`` of its tests (in place)."""
    cols = [TEST_COLUMNS[0], *group_keys, *TEST_COLUMNS[1:]]
    tests = pd.DataFrame(tests, columns=cols)
    tests["family"] = EXPLORATORY
    primary_rows = mark_primary(tests, primary, per_trial, data_gamma, notes)
    tests.loc[primary_rows, "family"] = PRIMARY
    tests["p_holm"] = np.nan
    if len(tests):
        if holm_family == "primary":
            if primary_rows:
                tests.loc[primary_rows, "p_holm"] = stats.holm(tests.loc[primary_rows, "p"].to_numpy())
        elif holm_family == "all":
            tests["p_holm"] = stats.holm(tests["p"].to_numpy())
        else:
            for _, idx in tests.groupby("quantity").groups.items():
                tests.loc[idx, "p_holm"] = stats.holm(tests.loc[idx, "p"].to_numpy())
    tests["significant"] = tests["p_holm"] < significance
    tests["direction"] = [direction(r) for r in tests.to_dict("records")]
    for q in TESTED:
        groups[p(q)] = np.nan
        groups[p_holm(q)] = np.nan
    for r in tests.to_dict("records"):
        groups.loc[r["_group"], p(r["quantity"])] = r["p"]
        groups.loc[r["_group"], p_holm(r["quantity"])] = r["p_holm"]
    return tests.drop(columns="_group")
