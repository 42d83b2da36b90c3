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
from analysis.censored import censor, finished_pairs, gehan_paired, logrank, speedup
from analysis.columns import (CLOCK, COVERAGE, DISTORTION_GAP, EPOCH, EPOCHS_TO_TARGET, EXPLORATORY, FINAL,
                              FROM_SURVIVORS, N_BOTH, PRIMARY, PRIMARY_QUANTITIES, RATES, SPEEDUP, SPREAD, TESTED,
                              TIMES, ci, high, low, p, p_holm, statistic)
from analysis.groups import same, unkey

TEST_COLUMNS = ["_group", "quantity", "test", "paired", "statistic", "p", "n", "n_baseline", "n_pairs", N_BOTH,
                "estimate", "baseline_estimate", "diff", "diff_low", "diff_high", COVERAGE, "sign", *ci(SPEEDUP),
                *ci("ratio"), FROM_SURVIVORS, "note"]


def quantity_test(i: int, q: str, rec: dict, key, group_keys, g: pd.DataFrame, b: pd.DataFrame, reps: list,
                  min_seeds: int, n_resamples: int, seed: int) -> dict:
    """One test of quantity q, group g against baseline b: paired by seed where seeds pair. Final
    values are compared on the pairs where both finished; times to target under censoring."""
    row = {"_group": i, **unkey(group_keys, key), "quantity": q, "n": len(g), "n_baseline": len(b),
           "estimate": rec.get(q, math.nan), "baseline_estimate": _group_estimate(q, b), "note": "",
           "paired": False, "n_pairs": 0, N_BOTH: math.nan, "diff": math.nan, "diff_low": math.nan,
           "diff_high": math.nan, COVERAGE: math.nan, "sign": math.nan, FROM_SURVIVORS: False}
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
        if q in TIMES:
            return _time_test(row, q, pairs[q], pairs[f"{q}_b"], _budget(q, pairs, g), _budget(q, pairs, g, "_b"),
                              paired=True)
        if q == FINAL:
            return _final_test(row, pairs[FINAL], pairs[f"{FINAL}_b"], min_seeds)
        if q in RATES:
            res = stats.mcnemar_exact(pairs[q].astype(bool), pairs[f"{q}_b"].astype(bool))
            row["diff"] = float(pairs[q].astype(float).mean() - pairs[f"{q}_b"].astype(float).mean())
        else:
            res = stats.wilcoxon_paired(pairs[q], pairs[f"{q}_b"])
            _difference(row, stats.median_ci(stats.paired_differences(pairs[q], pairs[f"{q}_b"])))
        return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue}
    return _unpaired_test(row, q, g, b, min_seeds)


def _unpaired_test(row: dict, q: str, g: pd.DataFrame, b: pd.DataFrame, min_seeds: int) -> dict:
    """Where no seeds pair: Fisher for rates, log-rank for times, Mann-Whitney on finished runs."""
    if len(g) < min_seeds or len(b) < min_seeds:
        return {**row, "test": "fisher" if q in RATES else "mann-whitney", "statistic": math.nan, "p": math.nan,
                "note": f"not tested: n < {min_seeds}"}
    note = "unpaired: no seeds shared with the baseline"
    if q in TIMES:
        return {**_time_test(row, q, g[q], b[q], _budget(q, g, g), _budget(q, b, g), paired=False), "note": note}
    if q in RATES:
        res = stats.fisher(int(g[q].sum()), len(g), int(b[q].sum()), len(b))
    else:
        x, y = g[q].to_numpy(float), b[q].to_numpy(float)
        if q == FINAL:   # final quality of the runs that finished; divergence is its own test
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            note += "; finished runs only"
        res = stats.mann_whitney(x, y)
    return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue, "note": note}


def _budget(q: str, frame: pd.DataFrame, g: pd.DataFrame, suffix: str = "") -> np.ndarray:
    """Where each run of a time to target is censored: the comparison epoch, or for seconds the run's
    own clock at that epoch."""
    if q == EPOCHS_TO_TARGET:
        return np.full(len(frame), float(g[EPOCH].iloc[0]))
    return frame[f"{CLOCK}{suffix}"].to_numpy(float)


def _time_test(row: dict, q: str, x, y, budget_x, budget_y, paired: bool) -> dict:
    """Time to target under censoring: Gehan's paired test (log-rank unpaired), a run that never
    reaches the target censored at its budget, and the speed-up: the ratio of Kaplan-Meier medians."""
    tx, rx = censor(np.asarray(x, float), budget_x)
    ty, ry = censor(np.asarray(y, float), budget_y)
    res = gehan_paired(tx, rx, ty, ry) if paired else logrank(tx, rx, ty, ry)
    sp = speedup(tx, rx, ty, ry, paired=paired)
    if paired:
        _difference(row, stats.median_ci(stats.paired_differences(x, y)))
    return {**row, "test": res.test, "statistic": res.statistic, "p": res.pvalue, "sign": res.direction,
            SPEEDUP: sp.value, low(SPEEDUP): sp.low, high(SPEEDUP): sp.high,
            "note": "never reached: censored at the comparison epoch" + (" (its clock)" if q != EPOCHS_TO_TARGET else "")}


def _final_test(row: dict, x, y, min_seeds: int) -> dict:
    """Final quality on the pairs where both runs finished (n_both), never folded with divergence."""
    fp = finished_pairs(x, y)
    row.update({N_BOTH: fp.n_both, "ratio": fp.ratio.value, "ratio_low": fp.ratio.low, "ratio_high": fp.ratio.high})
    _difference(row, fp.difference)
    if fp.n_both < min_seeds:
        return {**row, "test": "wilcoxon", "statistic": math.nan, "p": math.nan,
                "note": f"not tested: {fp.n_both} pair(s) where both finished (< {min_seeds})"}
    return {**row, "test": fp.test.test, "statistic": fp.test.statistic, "p": fp.test.pvalue,
            "sign": fp.test.direction, "note": f"on the {fp.n_both} pairs where both finished"}


def _difference(row: dict, e) -> None:
    """The median paired difference with its order-statistic CI and that CI's exact coverage."""
    row["diff"], row["diff_low"], row["diff_high"], row[COVERAGE] = e.value, e.low, e.high, e.coverage


def gap_test(i: int, rec: dict, key, group_keys, gap: pd.DataFrame, min_seeds: int) -> dict:
    """The distortion gap's test: Wilcoxon signed-rank of the per-seed gaps against 0. A gap to a
    frontier traced from survivors (fewer than 8 in 10 baseline seeds finished) is flagged."""
    survivors = bool(gap[FROM_SURVIVORS].any()) if FROM_SURVIVORS in gap and len(gap) else False
    row = {"_group": i, **unkey(group_keys, key), "quantity": DISTORTION_GAP, "test": "wilcoxon",
           "paired": True, "n": rec["n"], "n_baseline": len(gap), "n_pairs": len(gap),
           "estimate": rec[DISTORTION_GAP], "baseline_estimate": 0.0, "diff": rec[DISTORTION_GAP],
           "diff_low": rec[low(DISTORTION_GAP)], "diff_high": rec[high(DISTORTION_GAP)],
           COVERAGE: rec.get(COVERAGE + "_gap", math.nan), FROM_SURVIVORS: survivors, "note": ""}
    if len(gap) < min_seeds:
        return {**row, "statistic": math.nan, "p": math.nan,
                "note": f"not tested: {len(gap)} seed(s) inside the baseline frontier's rate range (< {min_seeds})"}
    res = stats.wilcoxon_paired(gap["gap"], None)
    note = "per-seed frontier, interpolated in log rate"
    if survivors:
        note += "; frontier from survivors (< 8 in 10 baseline seeds finished): never in a declared family"
    return {**row, "statistic": res.statistic, "p": res.pvalue, "note": note}


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
    sign = r.get("sign")
    if sign is not None and not pd.isna(sign):   # the test's own direction (Gehan, both-finished pairs)
        return "" if sign == 0 else ("better" if sign < 0 else "worse")
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


def correct(tests: list, groups: pd.DataFrame, group_keys: list, context_keys: list, primary: list,
            per_trial: pd.DataFrame, data_gamma: float, holm_family: str, significance: float,
            notes: list) -> pd.DataFrame:
    """The tests as a table with their family, Holm-corrected p, significance and direction; each
    group row gets ``p(q)`` and ``p_holm(q)`` of its tests (in place). Tests of groups identical by
    construction (≡) count once in a family (``stats.holm_distinct``); a test on a frontier traced
    from survivors is never in the declared family."""
    cols = [TEST_COLUMNS[0], *group_keys, *TEST_COLUMNS[1:]]
    tests = pd.DataFrame(tests, columns=cols)
    tests[FROM_SURVIVORS] = tests[FROM_SURVIVORS].fillna(False).astype(bool)
    tests["family"] = EXPLORATORY
    primary_rows = mark_primary(tests, primary, per_trial, data_gamma, notes)
    dropped = [r for r in primary_rows if tests.loc[r, FROM_SURVIVORS]]
    if dropped:
        notes.append(f"{len(dropped)} declared test(s) use a frontier traced from survivors (fewer than 8 in 10 "
                     f"baseline seeds finished): left out of the primary family, reported as exploratory.")
    primary_rows = [r for r in primary_rows if r not in dropped]
    tests.loc[primary_rows, "family"] = PRIMARY
    tests["p_holm"] = np.nan
    keys = [distinct_key(r, context_keys, groups) for r in tests.to_dict("records")]
    if len(tests):
        if holm_family == "primary":
            families = [primary_rows] if primary_rows else []
        elif holm_family == "all":
            families = [list(tests.index)]
        else:
            families = [list(idx) for idx in tests.groupby("quantity").groups.values()]
        for rows in families:
            tests.loc[rows, "p_holm"] = stats.holm_distinct(tests.loc[rows, "p"].to_numpy(), [keys[r] for r in rows])
    tests["significant"] = tests["p_holm"] < significance
    tests["equiv"] = [groups.loc[g, "equiv"] if "equiv" in groups else "" for g in tests["_group"]]
    tests["direction"] = [direction(r) for r in tests.to_dict("records")]
    for q in TESTED:
        groups[p(q)] = np.nan
        groups[p_holm(q)] = np.nan
    for r in tests.to_dict("records"):
        groups.loc[r["_group"], p(r["quantity"])] = r["p"]
        groups.loc[r["_group"], p_holm(r["quantity"])] = r["p_holm"]
    return tests.drop(columns="_group")


def distinct_key(r: dict, context_keys: list, groups: pd.DataFrame) -> tuple:
    """What a test is about: its quantity, context and group - the group's ≡ class where it has one,
    so tests of groups identical by construction are one test."""
    equiv = groups.loc[r["_group"], "equiv"] if "equiv" in groups else ""
    return (r["quantity"], tuple(str(r[k]) for k in context_keys), equiv or ("group", r["_group"]))
