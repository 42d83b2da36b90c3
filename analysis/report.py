"""The report: the answer in one paragraph, then the tables, then the figures (Markdown).

Every sentence of the answer is generated from the comparison's numbers; when nothing differs
significantly from the baseline it says so, and when the study is too small for a test to ever
reach significance it says that too. Beside report.md, every table is written as a CSV whose
numbers are numeric columns (estimate, low, high, n, p, p_holm), for a reader's own analysis.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from plvae import metrics as M
from plvae.priors import PRIOR_FIELDS as VARIANT_PARAMS, matched_gamma

from analysis import stats
from analysis.columns import (ASHA_STOPPED, AUC, BETA, DISTORTION, DISTORTION_GAP, DIVERGED, EPOCH,
                              EPOCHS_TO_TARGET, FINAL, FIRST_EPOCH_RATIO, LABELS, MAX_INCREASE, RATE,
                              SECONDS_TO_TARGET, SPREAD, TOTAL_LOSS)
from analysis.compare import Comparison, compare
from analysis.load import STATUSES, Study
from analysis.selection import MIN_SPLIT_SEEDS

REPORT_DIR = "report"
REPORT_FILE = "report.md"


# ------------------------------------------------------------------------------ formatting

def fmt(x, digits: int = 4, inf: str = "∞") -> str:
    """A number for a table: 4 significant digits, '–' for missing, ``inf`` for infinity."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "–"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if math.isinf(x):
            return inf if x > 0 else "-" + inf
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def fmt_ci(value, low, high, inf: str = "∞", pct: bool = False) -> str:
    if pct:
        f = lambda v: "–" if v is None or pd.isna(v) else f"{100 * v:.0f}%"  # noqa: E731
    else:
        f = lambda v: fmt(v, inf=inf)  # noqa: E731
    if low is None or pd.isna(low) or high is None or pd.isna(high):
        return f(value)
    return f"{f(value)} [{f(low)}, {f(high)}]"


def fmt_p(p) -> str:
    if p is None or pd.isna(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def _pct(x) -> str:
    if x is None or pd.isna(x):
        return "–"
    return f"{100 * x:+.1f}%" if math.isfinite(x) else ("+∞" if x > 0 else "-∞")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of already formatted cells (no tabulate dependency)."""
    if df.empty:
        return "_(none)_\n"
    cols = [str(c) for c in df.columns]
    cells = [[str(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines) + "\n"


def text_table(df: pd.DataFrame) -> str:
    """A plain aligned table for the terminal."""
    if df.empty:
        return "(none)"
    cols = [str(c) for c in df.columns]
    rows = [[str(v) for v in row] for row in df.itertuples(index=False)]
    w = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    out = ["  ".join(c.ljust(w[i]) for i, c in enumerate(cols)), "  ".join("-" * x for x in w)]
    out += ["  ".join(v.ljust(w[i]) for i, v in enumerate(r)) for r in rows]
    return "\n".join(out)


def _setting(r: dict) -> str:
    """The prior parameters a group uses, e.g. 'γ=1, min_decay=0.001' ('–' for the baseline)."""
    names = {"gamma": "γ"}
    parts = [f"{names.get(p, p)}={r[p]:g}" for p in VARIANT_PARAMS if p in r and not pd.isna(r[p])]
    return ", ".join(parts) or "–"


def _context_cols(c: Comparison, df: pd.DataFrame) -> list:
    """Context columns worth showing: those with more than one value."""
    return [k for k in c.context_keys if k in df and df[k].nunique(dropna=False) > 1]


def _context_text(c: Comparison, r: dict) -> str:
    parts = []
    for k in c.context_keys:
        v = r.get(k)
        parts.append(f"{k} {v:g}" if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else f"{k} {v}")
    return ", ".join(parts)


# ------------------------------------------------------------------------------ tables

def headline_table(c: Comparison, markdown: bool = True) -> pd.DataFrame:
    """Variants ranked (best setting each): final metric with CI, change vs baseline, Holm p,
    speed and stability at a glance, and the total loss beside (not comparable)."""
    h = c.headline
    if h.empty:
        return pd.DataFrame()
    ctx = _context_cols(c, h)
    rows = []
    for r in h.to_dict("records"):
        row = {k: fmt(r[k]) for k in ctx}
        row.update({
            "rank": "–" if pd.isna(r["rank"]) else int(r["rank"]), "variant": r["variant"], "setting": _setting(r), "n": r["n"],
            "epoch": fmt(r[EPOCH]),
            f"{c.metric} [95% CI]": fmt_ci(r[FINAL], r[f"{FINAL}_low"], r[f"{FINAL}_high"]),
            "vs baseline": _pct(r["rel_final"]),
            "p": fmt_p(r.get(f"p_{FINAL}")),
            "p (Holm)": fmt_p(r.get(f"p_holm_{FINAL}")),
            "verdict": r["verdict"],
            "epochs to target": fmt(r[EPOCHS_TO_TARGET], inf="never"),
            "diverged": f"{r[f'n_{DIVERGED}']}/{r['n']}",
            "rate (nats)": fmt(r[RATE]),
            "distortion": fmt(r[DISTORTION]),
            "gap at equal rate": fmt(r[DISTORTION_GAP]),
        })
        if r.get("equiv"):
            row["setting"] += " ≡"
        rows.append(row)
    return pd.DataFrame(rows)


def _numeric(df: pd.DataFrame, cols: list) -> pd.DataFrame:
    """The named columns that exist, in order (a CSV for machines: numbers stay numbers)."""
    return df[[k for k in dict.fromkeys(cols) if k in df.columns]].reset_index(drop=True)


def csv_tables(c: Comparison) -> dict:
    """{file name: DataFrame} of the comparison's tables with numeric columns (no formatted
    strings such as '0.0115 [0.0109, 0.0128]'): what write_report writes beside report.md."""
    keys = c.group_keys
    est = lambda q: [q, f"{q}_low", f"{q}_high"]  # noqa: E731
    group_cols = [*keys, "is_baseline", "objective", "equiv", "n", EPOCH, *est(FINAL), "rel_final",
                  f"p_{FINAL}", f"p_holm_{FINAL}", *est(EPOCHS_TO_TARGET), *est(AUC), "n_diverged",
                  *est(DIVERGED), *est(RATE), *est(DISTORTION), *est(DISTORTION_GAP), "n_gap",
                  f"p_{DISTORTION_GAP}", TOTAL_LOSS, "target", "small"]
    test_cols = [*keys, "quantity", "family", "test", "paired", "n", "n_baseline", "n_pairs", "estimate",
                 "baseline_estimate", "diff", "diff_low", "diff_high", "statistic", "p", "p_holm", "significant",
                 "direction", "note"]
    out = {
        "headline.csv": _numeric(c.headline, ["rank", "verdict", *group_cols]),
        "groups.csv": _numeric(c.groups, group_cols + [q for q in c.groups.columns if q.startswith("p_")]),
        "tests.csv": _numeric(c.tests, test_cols),
        "primary.csv": _numeric(c.primary, test_cols),
        "per_trial.csv": c.per_trial.copy(),
    }
    if len(c.frontier):
        out["frontier.csv"] = c.frontier.copy()
    if len(c.split):
        out["split.csv"] = c.split.copy()
    return out


def primary_table(c: Comparison) -> pd.DataFrame:
    """The declared primary comparisons: paired effect with its CI, raw and Holm p."""
    t = c.primary
    if t.empty:
        return pd.DataFrame()
    ctx = [k for k in c.context_keys if k in t and (t[k].nunique(dropna=False) > 1 or k in ("lr", "latent_dim"))]
    rows = []
    for r in t.to_dict("records"):
        q = r["quantity"]
        inf = "never" if "target" in q else "∞"
        if q == DIVERGED:
            effect = f"{fmt(r['estimate'])} vs {fmt(r['baseline_estimate'])} diverged"
        else:
            effect = fmt_ci(r["diff"], r["diff_low"], r["diff_high"], inf=inf)
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": _setting(r),
                     "quantity": LABELS.get(q, q), "test": r["test"] + (" (paired)" if r["paired"] else ""),
                     "pairs": r["n_pairs"], "median paired difference [95% CI]" if q != DIVERGED else "effect": effect,
                     "variant / baseline": f"{fmt(r['estimate'], inf=inf)} / {fmt(r['baseline_estimate'], inf=inf)}",
                     "p": fmt_p(r["p"]), "p (Holm)": fmt_p(r["p_holm"]),
                     "result": (f"significant, {r['direction']}" if r["significant"] else
                                (r["note"] or "not significant"))})
    return pd.DataFrame(rows)


def rate_distortion_table(c: Comparison) -> pd.DataFrame:
    """Where each group sits on the rate-distortion trade-off, and its gap to the baseline frontier."""
    g = c.groups
    if g.empty or not g[RATE].notna().any():
        return pd.DataFrame()
    ctx = _context_cols(c, g)
    rows = []
    for r in g.to_dict("records"):
        if r["is_baseline"] and BETA in r and len(c.frontier):
            continue  # the frontier table lists the baseline's points
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"] + (" (W2)" if r["objective"] == "w2" else ""),
                     "setting": _setting(r) + (" ≡" if r.get("equiv") else ""), "n": r["n"],
                     "rate, nats [95% CI]": fmt_ci(r[RATE], r[f"{RATE}_low"], r[f"{RATE}_high"]),
                     "distortion [95% CI]": fmt_ci(r[DISTORTION], r[f"{DISTORTION}_low"], r[f"{DISTORTION}_high"]),
                     "gap at equal rate [95% CI]": fmt_ci(r[DISTORTION_GAP], r[f"{DISTORTION_GAP}_low"],
                                                          r[f"{DISTORTION_GAP}_high"]),
                     "seeds inside frontier": r["n_gap"], "p": fmt_p(r.get(f"p_{DISTORTION_GAP}"))})
    return pd.DataFrame(rows)


def frontier_table(c: Comparison) -> pd.DataFrame:
    f = c.frontier
    if f.empty:
        return pd.DataFrame()
    ctx = [k for k in c.frontier_keys if k in f and f[k].nunique(dropna=False) > 1]
    return pd.DataFrame([{**{k: fmt(r[k]) for k in ctx}, "β (kl_coeff)": fmt(r[BETA]), "n": r["n"],
                          "diverged": r["n_diverged"],
                          "rate, nats [95% CI]": fmt_ci(r[RATE], r[f"{RATE}_low"], r[f"{RATE}_high"]),
                          "distortion [95% CI]": fmt_ci(r[DISTORTION], r[f"{DISTORTION}_low"], r[f"{DISTORTION}_high"])}
                         for r in f.to_dict("records")])


def split_table(c: Comparison) -> pd.DataFrame:
    sp = c.split
    if sp.empty:
        return pd.DataFrame()
    ctx = [k for k in c.context_keys if k in sp and sp[k].nunique(dropna=False) > 1]
    return pd.DataFrame([{**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "chosen setting": _setting(r),
                          "seeds (choose / report)": f"{r['n_choose']} / {r['n_report']}",
                          f"{c.metric} on report seeds": fmt(r[FINAL]), "baseline": fmt(r["baseline_final"]),
                          "median paired difference [95% CI]": fmt_ci(r["diff"], r["diff_low"], r["diff_high"]),
                          "p (exploratory)": fmt_p(r["p"])} for r in sp.to_dict("records")])


def speed_table(c: Comparison) -> pd.DataFrame:
    g = c.groups
    ctx = _context_cols(c, g)
    rows = []
    for r in g.to_dict("records"):
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": _setting(r), "n": r["n"],
                     "target": fmt(r["target"]), "reached": f"{100 * r['reached']:.0f}%",
                     "epochs to target": fmt_ci(r[EPOCHS_TO_TARGET], r[f"{EPOCHS_TO_TARGET}_low"],
                                                r[f"{EPOCHS_TO_TARGET}_high"], inf="never"),
                     "p": fmt_p(r.get(f"p_{EPOCHS_TO_TARGET}")),
                     "seconds to target": fmt_ci(r[SECONDS_TO_TARGET], r[f"{SECONDS_TO_TARGET}_low"],
                                                 r[f"{SECONDS_TO_TARGET}_high"], inf="never"),
                     "p ": fmt_p(r.get(f"p_{SECONDS_TO_TARGET}")),
                     "normalised AUC": fmt_ci(r[AUC], r[f"{AUC}_low"], r[f"{AUC}_high"]),
                     "p  ": fmt_p(r.get(f"p_{AUC}")),
                     "epoch-1 / initial": fmt_ci(r[FIRST_EPOCH_RATIO], r[f"{FIRST_EPOCH_RATIO}_low"],
                                                 r[f"{FIRST_EPOCH_RATIO}_high"]),
                     "p   ": fmt_p(r.get(f"p_{FIRST_EPOCH_RATIO}"))})
    return pd.DataFrame(rows)


def stability_table(c: Comparison) -> pd.DataFrame:
    g = c.groups
    ctx = _context_cols(c, g)
    rows = []
    for r in g.to_dict("records"):
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": _setting(r), "n": r["n"],
                     "diverged": f"{r[f'n_{DIVERGED}']}/{r['n']} "
                                 f"({fmt_ci(r[DIVERGED], r[f'{DIVERGED}_low'], r[f'{DIVERGED}_high'], pct=True)})",
                     "p": fmt_p(r.get(f"p_{DIVERGED}")),
                     "std across seeds": fmt_ci(r[SPREAD], r[f"{SPREAD}_low"], r[f"{SPREAD}_high"]),
                     "CV": fmt(r["cv"]),
                     "p ": fmt_p(r.get(f"p_{SPREAD}")),
                     "largest rise": fmt_ci(r[MAX_INCREASE], r[f"{MAX_INCREASE}_low"], r[f"{MAX_INCREASE}_high"]),
                     "p  ": fmt_p(r.get(f"p_{MAX_INCREASE}")),
                     "ASHA-stopped": f"{r[f'n_{ASHA_STOPPED}']}/{r['n']}",
                     "p   ": fmt_p(r.get(f"p_{ASHA_STOPPED}")),
                     f"total {M.VAL_LOSS}*": fmt(r[TOTAL_LOSS]),
                     "flag": f"n < {c.min_seeds}: not tested" if r["small"] else ""})
    return pd.DataFrame(rows)


def stable_lr_md(c: Comparison) -> pd.DataFrame:
    s = c.stable_lr
    if s is None or s.empty:
        return pd.DataFrame()
    ctx = [k for k in c.context_keys if k != "lr" and k in s and s[k].nunique(dropna=False) > 1]
    return pd.DataFrame([{**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": _setting(r),
                          "lrs tried": r["lrs"], "largest stable lr": fmt(r["max_stable_lr"]),
                          "first diverging lr": fmt(r["first_diverging_lr"]), "n": r["n"]}
                         for r in s.to_dict("records")])


# ------------------------------------------------------------------------------ the answer

def _primary_sentences(c: Comparison) -> list[str]:
    t = c.primary
    if t.empty:
        return []
    out = [f"Primary comparisons (declared before the study; Holm-corrected over these {len(t)} tests only, "
           f"α = {c.significance:g}):"]
    for r in t.to_dict("records"):
        q = r["quantity"]
        where = ", ".join(f"{k} {fmt(r[k])}" for k in c.context_keys if k in ("lr", "latent_dim", BETA) and k in r)
        inf = "never" if "target" in q else "∞"
        if q == DIVERGED:
            eff = (f"diverged in {fmt(r['estimate'] * r['n'])}/{r['n']} against the baseline's "
                   f"{fmt(r['baseline_estimate'] * r['n_baseline'])}/{r['n_baseline']}")
        elif q == DISTORTION_GAP:
            eff = (f"distortion {fmt_ci(r['diff'], r['diff_low'], r['diff_high'])} from the baseline's frontier at "
                   f"equal rate ({r['n_pairs']} seeds inside its rate range)")
        else:
            eff = (f"{LABELS.get(q, q)} {fmt(r['estimate'], inf=inf)} against {fmt(r['baseline_estimate'], inf=inf)}, "
                   f"median paired difference {fmt_ci(r['diff'], r['diff_low'], r['diff_high'], inf=inf)} "
                   f"over {r['n_pairs']} seeds")
        verdict = (f"significant ({r['direction']})" if r["significant"] else
                   (r["note"] if r["note"].startswith("not tested") else "not significant"))
        out.append(f"{r['variant']} ({_setting(r)}; {where}): {eff}; {r['test']}, p = {fmt_p(r['p'])}, "
                   f"Holm p = {fmt_p(r['p_holm'])}: {verdict}.")
    return out


def answer(study: Study, c: Comparison) -> str:
    """The study's answer, generated from the numbers: the primary family first (when declared),
    then each context's best variant (exploratory unless it is in the family)."""
    h = c.headline
    if h.empty:
        return "No finished trials: nothing to compare yet."
    sentences = _primary_sentences(c)
    metric_note = (f"{c.metric}, the objective every KL variant shares" if c.metric == M.VAL_LOSS else c.metric)
    ctx_groups = list(h.groupby(c.context_keys, dropna=False, sort=True)) if c.context_keys else [((), h)]
    for _, ch in ctx_groups:
        rows = ch.to_dict("records")
        base = next((r for r in rows if r["variant"] == c.baseline), None)
        where = _context_text(c, rows[0])
        if base is None:
            sentences.append(f"In {where} there are no {c.baseline} (baseline) trials, so nothing was tested.")
            continue
        contenders = [r for r in rows if r["variant"] != c.baseline and not pd.isna(r["rank"])]
        if not contenders:
            sentences.append(f"In {where} no variant is comparable with the baseline on {c.metric}.")
            continue
        top = contenders[0]
        base_ci = fmt_ci(base[FINAL], base[f"{FINAL}_low"], base[f"{FINAL}_high"])
        top_ci = fmt_ci(top[FINAL], top[f"{FINAL}_low"], top[f"{FINAL}_high"])
        lead = (f"In {where}, compared on {metric_note} at epoch {fmt(top[EPOCH])}, "
                f"the best variant is {top['variant']} ({_setting(top)}): median {top_ci} "
                f"against the baseline {c.baseline}'s {base_ci}")
        rel = top["rel_final"]
        lead += f" ({_pct(rel)})." if pd.notna(rel) else "."
        if base["rank"] < top["rank"]:
            lead = lead[:-1] + f"; the baseline itself ranks {'first' if base['rank'] == 1 else int(base['rank'])}."
        sentences.append(lead)
        p, p_holm = top.get(f"p_{FINAL}"), top.get(f"p_holm_{FINAL}")
        n_pairs = _pairs(c, top)
        if top["small"]:
            sentences.append(f"With fewer than {c.min_seeds} seeds in a group this was not tested.")
        elif pd.isna(p):
            sentences.append("This difference was not tested.")
        elif pd.notna(p_holm):
            word = "is significant" if p_holm < c.significance else "is not significant"
            sentences.append(f"The difference {word} after Holm correction (paired Wilcoxon over {n_pairs} seeds, "
                             f"Holm-adjusted p = {fmt_p(p_holm)}).")
        else:
            sentences.append(f"Exploratory (this setting was chosen after the fact, not declared): paired Wilcoxon "
                             f"over {n_pairs} seeds, raw p = {fmt_p(p)}, uncorrected.")
        if n_pairs and not top["small"] and stats.min_wilcoxon_p(n_pairs) >= c.significance:
            sentences.append(f"With {n_pairs} paired seeds the smallest p-value a Wilcoxon signed-rank test can give "
                             f"is {stats.min_wilcoxon_p(n_pairs):.2g}, so no difference could reach significance "
                             f"here: run more seeds.")
        e_top, e_base = top[EPOCHS_TO_TARGET], base[EPOCHS_TO_TARGET]
        sentences.append(
            f"Speed: the target {fmt(top['target'])} (unless set: the baseline's median final value, its diverged "
            f"trials counted as never reaching it) is reached after {fmt(e_top, inf='never')} vs "
            f"{fmt(e_base, inf='never')} epochs (lower median).")
        sentences.append(
            f"Stability: {top[f'n_{DIVERGED}']}/{top['n']} {top['variant']} trials diverged vs "
            f"{base[f'n_{DIVERGED}']}/{base['n']} for {c.baseline}.")
        if pd.notna(top.get(DISTORTION_GAP)):
            gap = top[DISTORTION_GAP]
            sentences.append(
                f"Rate–distortion: rate {fmt(top[RATE])} nats against the baseline's {fmt(base[RATE])}; at its own rate "
                f"its distortion is {fmt_ci(gap, top[f'{DISTORTION_GAP}_low'], top[f'{DISTORTION_GAP}_high'])} "
                f"{'above' if gap > 0 else 'below'} the baseline's β frontier.")
    n_div = int(study.trials["diverged"].sum())
    sentences.append(f"Across the study {n_div} of {len(study.trials)} trials diverged.")
    if c.n_tests == 0:
        sentences.append("No test could be made (groups too small or no baseline).")
    elif c.primary.empty and c.holm_family == "primary":
        n_low = int((c.tests["p"] < c.significance).sum())
        sentences.append(f"No primary comparisons were declared: all {c.n_tests} tests are exploratory, "
                         f"{n_low} with a raw p below {c.significance:g} (uncorrected; expect about "
                         f"{c.significance * c.n_tests:.0f} by chance).")
    else:
        sig = c.significant()
        family = "primary" if c.holm_family == "primary" else "all"
        if sig.empty:
            sentences.append(f"No {family} test is significant after Holm correction (α = {c.significance:g}).")
        else:
            items = [f"{r['variant']} ({_setting(r)}) is {r['direction']} on {LABELS.get(r['quantity'], r['quantity'])}"
                     for r in sig.to_dict("records")[:6]]
            more = f" and {len(sig) - 6} more" if len(sig) > 6 else ""
            sentences.append(f"Significant after Holm correction ({len(sig)} {family} tests): "
                             + "; ".join(items) + more + ".")
    return " ".join(sentences)


def _pairs(c: Comparison, r: dict) -> int:
    t = c.tests
    if t.empty:
        return 0
    m = t["quantity"] == FINAL
    for k in c.group_keys:
        m &= t[k].map(lambda x, v=r[k]: (pd.isna(x) and pd.isna(v)) or x == v)
    return int(t.loc[m, "n_pairs"].iloc[0]) if m.any() else 0


# ------------------------------------------------------------------------------ the report

def _values(col: pd.Series, most: int = 8) -> str:
    """The distinct values of a swept column, shortened to 'first, ..., last (n values)'."""
    vals = list(col.dropna().unique())
    try:
        vals = sorted(vals)
    except TypeError:
        vals = sorted(vals, key=str)
    if len(vals) <= most:
        return ", ".join(fmt(v) for v in vals)
    return f"{', '.join(fmt(v) for v in vals[:3])}, …, {fmt(vals[-1])}: {len(vals)} values"


def _study_facts(study: Study, c: Comparison) -> list[str]:
    t = study.trials
    counts = t["status"].value_counts().reindex(list(STATUSES), fill_value=0)
    lines = [
        f"- path: `{study.path}`" if study.path else "- path: (in memory)",
        f"- status: {study.status}; scheduler: {study.meta.get('scheduler', '?')}; "
        f"search: {study.meta.get('search', '?')}; preset: {study.meta.get('preset', '?')}",
        f"- trials: {len(t)} (" + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ")",
        "- swept: " + ", ".join(f"{p} ({_values(t[p])})" for p in study.swept),
        f"- max epochs: {fmt(t['max_epochs'].max()) if 'max_epochs' in t else '?'}; "
        f"compared on `{c.metric}`; baseline `{c.baseline}`; α = {c.significance:g}; {c.n_tests} tests, "
        + (f"{len(c.primary)} of them primary (Holm over those)" if c.holm_family == "primary" else
           f"Holm over {'all tests' if c.holm_family == 'all' else 'each quantity'}"),
    ]
    if study.data_alpha:
        lines.append("- measured data spectrum exponent α: " + ", ".join(
            f"{k} {fmt(v)} (a matched prior has γ = α/2 = {fmt(matched_gamma(v)) if isinstance(v, (int, float)) else '?'}; "
            f"measured on the training split)"
            for k, v in study.data_alpha.items()))
    if study.skipped:
        lines.append(f"- skipped or incomplete while loading: " + "; ".join(study.skipped))
    for n in c.notes:
        lines.append(f"- note: {n}")
    return lines


METHOD = """\
- **Why {metric}.** {why}
- **Groups.** variant × prior parameters (γ, min_decay, clip_dim, decay_rate — only those a variant
  uses) within a context ({context}); seeds are the replicates. Each group is compared with the
  baseline in the same context. Errored and unfinished trials are left out. Groups identical by
  construction (the same prior scales, sampling and divergence, e.g. `powerlaw_clamp` whose floor
  is never reached within latent_dim) are marked ≡: they are one configuration, not two results.
- **Equal budgets.** Each group is compared with the baseline at the last epoch every compared
  (non-diverged) trial of both reached (the `epoch` column), never on the "final" values of runs of
  different lengths (ASHA stops trials at different rungs).
- **Speed.** Epochs (and seconds, Tune's `time_total_s`) until the metric first reaches the target
  — unless set, the baseline's median final value, its diverged trials counted as never reaching
  it — with never = ∞ (lower median); the normalised AUC; the value after the first epoch ÷ the
  pre-training value.
- **Stability.** Divergence rate (`diverged` reported, or a non-finite loss); std and CV of the
  final value across seeds; the largest relative epoch-to-epoch rise; the share ASHA stopped
  early; and, when lr is swept, the largest lr up to which no trial diverged. A diverged trial's
  final value, AUC and largest rise count as ∞ (no group can look good by losing its bad seeds).
- **Rate–distortion.** Rate = closed-form KL from the posterior to the prior summed over latent
  dims (nats per example, `{rate}`), distortion = `{recon_mu}`. Where the study sweeps the
  baseline's β (kl_coeff), its frontier is traced; a group's *gap at equal rate* is, seed by seed,
  its distortion minus the same seed's frontier interpolated (linear in log rate, never
  extrapolated) at its rate. Below 0 is a better trade-off; a lower distortion bought with a
  higher rate is a move along the curve, not a gain.
- **Statistics.** A seed fixes initial weights, data order and noise for every variant, so each
  group is compared with the baseline seed by seed: the Wilcoxon signed-rank test on the paired
  differences, with a bootstrap 95% CI of their median; the exact McNemar test on the discordant
  pairs for divergence; Brown–Forsythe for the spread. Unpaired tests (Mann–Whitney U, Fisher)
  only where no seeds pair. Medians with bootstrap 95% CIs; rates with Wilson intervals. {family}
  Groups with fewer than {min_seeds} usable trials are flagged and not tested. With n pairs a
  Wilcoxon test cannot go below 2 / 2^n (0.0625 at n = 5, 0.002 at n = 10).
- **Selection.** The headline picks each variant's best setting on the same seeds it reports,
  which flatters the winner; with {split_seeds} or more seeds `split.csv` chooses the setting on half the
  seeds and reports it on the other half.
"""


def write_report(study: Study, comparison: Optional[Comparison] = None, out=None, figures: bool = True,
                 data_spectrum: bool = True, **compare_kw) -> Path:
    """Write ``report.md``, its figures and its tables as CSV (numeric columns) into ``out``
    (default ``<study path>/report``). Returns the report's path. ``compare_kw`` go to
    ``compare`` when no comparison is given."""
    c = comparison or compare(study, **compare_kw)
    if out is None:
        if study.path is None:
            raise ValueError("out=None is invalid for a study without a path; allowed: a folder to write into")
        out = Path(study.path) / REPORT_DIR
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = ({}, {})
    if figures:
        from analysis.figures import save_figures
        written, skipped = save_figures(study, c, out, data_spectrum=data_spectrum)
    tables = csv_tables(c)
    for name, df in tables.items():
        df.to_csv(out / name, index=False)

    parts = [f"# Study `{study.name}`: do power-law priors train faster and more stably?\n",
             "## Answer\n", answer(study, c) + "\n", "## Study\n", "\n".join(_study_facts(study, c)) + "\n"]
    prim = primary_table(c)
    if not prim.empty:
        parts += ["## Primary comparisons (declared; Holm over this family only)\n", markdown_table(prim)]
    parts += [f"\n## Headline: variants ranked by `{c.metric}` (best setting each)\n",
              markdown_table(headline_table(c)),
              "\np: paired test against the baseline, raw (exploratory unless the row is in the primary family, "
              "whose Holm p is shown); ≡: identical by construction to another group.\n"]
    split = split_table(c)
    if not split.empty:
        parts += ["\n### The best setting chosen on half the seeds, reported on the other half\n", markdown_table(split)]
    rd = rate_distortion_table(c)
    if not rd.empty:
        parts += ["\n## Rate–distortion\n", markdown_table(rd)]
        fr = frontier_table(c)
        if not fr.empty:
            parts += ["\n### The baseline's frontier over β\n", markdown_table(fr)]
    parts += ["\n## Speed\n", markdown_table(speed_table(c)),
              "\np-values are raw (exploratory); the target is per context: "
              + ", ".join(f"{fmt(v)}" for v in list(c.targets.values())[:12])
              + (" …" if len(c.targets) > 12 else "") + ".\n",
              "## Stability\n", markdown_table(stability_table(c))]
    lr_tab = stable_lr_md(c)
    if not lr_tab.empty:
        parts += ["\n### Stable learning-rate region\n", markdown_table(lr_tab)]
    parts += [f"\n## All tests\n\nIn `tests.csv` ({len(c.tests)} rows, numeric columns); the primary family is "
              f"in `primary.csv`. Tables as CSV: " + ", ".join(f"`{n}`" for n in tables) + ".\n"]
    if figures:
        from analysis.figures import FIGURES
        parts.append("\n## Figures\n")
        for name, path in written.items():
            parts.append(f"**{FIGURES[name]}**\n\n![{name}]({Path(path).name})\n")
        from analysis.reconstructions import save_reconstructions
        recon_path, reason = save_reconstructions(study, c, out)
        if recon_path is not None:
            parts.append(f"**Reconstructions of each variant's best trial (last checkpoint)**\n\n"
                         f"![reconstructions]({recon_path.name})\n")
        else:
            skipped = {**skipped, "reconstructions": reason}
        if skipped:
            parts.append("Not drawn: " + "; ".join(f"{FIGURES.get(k, k)} ({v})" for k, v in skipped.items()) + ".\n")
    ctx = ", ".join(c.context_keys) or "none"
    shared = ("every KL variant is an exact reparameterisation of the same β-VAE (u = z/s), so the total loss "
              "(recon + kl_coeff · KL) is one objective for all of them: the comparable measure of how fast and "
              "how well training goes. A variant changes only how the optimiser sees it.")
    if c.metric == M.VAL_LOSS:
        why = shared[0].upper() + shared[1:] + (" `powerlaw_wae` optimises a squared-W2 objective: it is not ranked or "
                                                "tested on total loss, only placed in the rate–distortion plane.")
    else:
        why = (f"Compared on {c.metric} as asked. Beware: {shared} The default, {M.VAL_LOSS}, is the fair "
               f"comparison; {M.VAL_RECON_MU} alone rewards moving along the rate–distortion curve.")
    if c.holm_family == "primary":
        family = ("Holm corrects over the declared primary family only; every other test is exploratory, "
                  "reported with its raw p-value.")
    else:
        family = f"p-values Holm-corrected {'over all tests' if c.holm_family == 'all' else 'within each quantity'}."
    parts += ["\n## Method\n", METHOD.format(metric=c.metric, why=why, context=ctx, family=family,
                                             min_seeds=c.min_seeds, rate=M.VAL_RATE, recon_mu=M.VAL_RECON_MU,
                                             split_seeds=MIN_SPLIT_SEEDS)]
    path = out / REPORT_FILE
    path.write_text("\n".join(parts))
    return path
