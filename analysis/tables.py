"""Cell formatting and every table of the report: formatted for Markdown / the terminal, and as
CSV with numeric columns. Each formatted table is built from one column spec: a list of
``Col(header, cell)``, where ``cell(row, comparison)`` gives the formatted value."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import pandas as pd

from plvae import metrics as M

from analysis.columns import (ASHA_STOPPED, AUC, BETA, COVERAGE, DISTORTION, DISTORTION_GAP, DIVERGED, EPOCH,
                              EPOCHS_TO_TARGET, FINAL, FIRST_EPOCH_RATIO, FROM_SURVIVORS, LABELS, MAX_INCREASE,
                              N_BOTH, RATE, SECONDS_TO_TARGET, SPEEDUP, SPREAD, TOTAL_LOSS, ci, high, low, n_of, p,
                              p_holm)
from analysis.compare import Comparison
from analysis.groups import setting_text

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


def pct(x) -> str:
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



def setting(r: dict) -> str:
    """The prior parameters a group uses, e.g. 'γ=1, min_decay=0.001' ('–' for the baseline)."""
    return setting_text(r) or "–"


def _context_cols(keys: list, df: pd.DataFrame, always=()) -> list:
    """Context columns worth showing: those with more than one value (or named in ``always``)."""
    return [k for k in keys if k in df and (df[k].nunique(dropna=False) > 1 or k in always)]


# ------------------------------------------------------------------------------ column specs

@dataclass(frozen=True)
class Col:
    """One column of a formatted table: its header (text, or from the comparison) and its cell."""

    header: Union[str, Callable]
    cell: Callable


def _table(c: Comparison, df: pd.DataFrame, ctx: list, cols: list) -> pd.DataFrame:
    """A formatted table: the context columns that vary, then one column per spec entry."""
    headers = [*ctx, *(col.header(c) if callable(col.header) else col.header for col in cols)]
    rows = [[*(fmt(r[k]) for k in ctx), *(col.cell(r, c) for col in cols)] for r in df.to_dict("records")]
    return pd.DataFrame(rows, columns=headers)


def _est(q: str, inf: str = "∞", pct: bool = False) -> Callable:
    return lambda r, c: fmt_ci(r[q], r[low(q)], r[high(q)], inf=inf, pct=pct)


def _p(q: str) -> Callable:
    return lambda r, c: fmt_p(r.get(p(q)))


def _of_n(q: str) -> Callable:
    return lambda r, c: f"{r[n_of(q)]}/{r['n']}"


VARIANT = Col("variant", lambda r, c: r["variant"])
SETTING = Col("setting", lambda r, c: setting(r))
N = Col("n", lambda r, c: r["n"])
EQUIV = " ≡"

HEADLINE = [
    Col("rank", lambda r, c: "–" if pd.isna(r["rank"]) else int(r["rank"])), VARIANT,
    Col("setting", lambda r, c: setting(r) + (EQUIV if r.get("equiv") else "")), N,
    Col("epoch", lambda r, c: fmt(r[EPOCH])),
    Col(lambda c: f"{c.metric} [95% CI]", _est(FINAL)),
    Col("vs baseline (both finished)", lambda r, c: pct(r["rel_final"])),
    Col("n both", lambda r, c: fmt(r.get(N_BOTH))),
    Col("p", _p(FINAL)),
    Col("p (Holm)", lambda r, c: fmt_p(r.get(p_holm(FINAL)))),
    Col("verdict", lambda r, c: r["verdict"]),
    Col("epochs to target", lambda r, c: fmt(r[EPOCHS_TO_TARGET], inf="never")),
    Col("speed-up", lambda r, c: fmt(r.get(SPEEDUP))),
    Col("diverged", _of_n(DIVERGED)),
    Col("p diverged", _p(DIVERGED)),
    Col("rate (nats)", lambda r, c: fmt(r[RATE])),
    Col("distortion", lambda r, c: fmt(r[DISTORTION])),
    Col("gap at equal rate", lambda r, c: fmt(r[DISTORTION_GAP])),
]
RATE_DISTORTION = [
    Col("variant", lambda r, c: r["variant"] + (" (W2)" if r["objective"] == "w2" else "")),
    Col("setting", lambda r, c: setting(r) + (EQUIV if r.get("equiv") else "")), N,
    Col("rate, nats [95% CI]", _est(RATE)),
    Col("distortion [95% CI]", _est(DISTORTION)),
    Col("gap at equal rate [95% CI]", _est(DISTORTION_GAP)),
    Col("seeds inside frontier", lambda r, c: r["n_gap"] if not r.get(FROM_SURVIVORS) else f"{r['n_gap']} (from survivors)"),
    Col("p", _p(DISTORTION_GAP)),
]
FRONTIER = [
    Col("β (kl_coeff)", lambda r, c: fmt(r[BETA])), N, Col("diverged", lambda r, c: r[n_of(DIVERGED)]),
    Col("traced", lambda r, c: "from survivors" if r.get(FROM_SURVIVORS) else "yes"),
    Col("rate, nats [95% CI]", _est(RATE)), Col("distortion [95% CI]", _est(DISTORTION)),
]
SPLIT = [
    VARIANT, Col("chosen setting", lambda r, c: setting(r)),
    Col("seeds (choose / report)", lambda r, c: f"{r['n_choose']} / {r['n_report']}"),
    Col(lambda c: f"{c.metric} on report seeds", lambda r, c: fmt(r[FINAL])),
    Col("baseline", lambda r, c: fmt(r["baseline_final"])),
    Col("median paired difference [95% CI]", lambda r, c: fmt_ci(r["diff"], r["diff_low"], r["diff_high"])),
    Col("p (exploratory)", lambda r, c: fmt_p(r["p"])),
]
SPEED = [
    VARIANT, SETTING, N, Col("target", lambda r, c: fmt(r["target"])),
    Col("reached", lambda r, c: f"{100 * r['reached']:.0f}%"),
    Col(LABELS[EPOCHS_TO_TARGET], _est(EPOCHS_TO_TARGET, inf="never")), Col("p", _p(EPOCHS_TO_TARGET)),
    Col("speed-up (KM medians) [95% CI]", _est(SPEEDUP)),
    Col(LABELS[SECONDS_TO_TARGET], _est(SECONDS_TO_TARGET, inf="never")), Col("p", _p(SECONDS_TO_TARGET)),
    Col(LABELS[AUC], _est(AUC)), Col("p", _p(AUC)),
    Col(LABELS[FIRST_EPOCH_RATIO], _est(FIRST_EPOCH_RATIO)), Col("p", _p(FIRST_EPOCH_RATIO)),
]
STABILITY = [
    VARIANT, SETTING, N,
    Col("diverged", lambda r, c: f"{_of_n(DIVERGED)(r, c)} ({_est(DIVERGED, pct=True)(r, c)})"),
    Col("p", _p(DIVERGED)),
    Col(LABELS[SPREAD], _est(SPREAD)), Col("CV", lambda r, c: fmt(r["cv"])), Col("p", _p(SPREAD)),
    Col(LABELS[MAX_INCREASE], _est(MAX_INCREASE)), Col("p", _p(MAX_INCREASE)),
    Col("ASHA-stopped", _of_n(ASHA_STOPPED)), Col("p", _p(ASHA_STOPPED)),
    Col(f"total {M.VAL_LOSS}*", lambda r, c: fmt(r[TOTAL_LOSS])),
    Col("flag", lambda r, c: f"n < {c.min_seeds}: not tested" if r["small"] else ""),
]
STABLE_LR = [
    VARIANT, SETTING, Col("lrs tried", lambda r, c: r["lrs"]),
    Col("largest stable lr", lambda r, c: fmt(r["max_stable_lr"])),
    Col("first diverging lr", lambda r, c: fmt(r["first_diverging_lr"])), N,
]

# ------------------------------------------------------------------------------ tables


def headline_table(c: Comparison, markdown: bool = True) -> pd.DataFrame:
    """Variants ranked (best setting each): final metric with CI, change vs baseline, Holm p,
    speed and stability at a glance, and the total loss beside (not comparable)."""
    h = c.headline
    if h.empty:
        return pd.DataFrame()
    return _table(c, h, _context_cols(c.context_keys, h), HEADLINE)


def rate_distortion_table(c: Comparison) -> pd.DataFrame:
    """Where each group sits on the rate-distortion trade-off, and its gap to the baseline frontier."""
    g = c.groups
    if g.empty or not g[RATE].notna().any():
        return pd.DataFrame()
    shown = g[[not (r["is_baseline"] and BETA in r and len(c.frontier)) for r in g.to_dict("records")]]
    return _table(c, shown, _context_cols(c.context_keys, g), RATE_DISTORTION)  # the frontier lists the baseline


def frontier_table(c: Comparison) -> pd.DataFrame:
    f = c.frontier
    if f.empty:
        return pd.DataFrame()
    return _table(c, f, _context_cols(c.frontier_keys, f), FRONTIER)


def split_table(c: Comparison) -> pd.DataFrame:
    sp = c.split
    if sp.empty:
        return pd.DataFrame()
    return _table(c, sp, _context_cols(c.context_keys, sp), SPLIT)


def speed_table(c: Comparison) -> pd.DataFrame:
    return _table(c, c.groups, _context_cols(c.context_keys, c.groups), SPEED)


def stability_table(c: Comparison) -> pd.DataFrame:
    return _table(c, c.groups, _context_cols(c.context_keys, c.groups), STABILITY)


def stable_lr_table_fmt(c: Comparison) -> pd.DataFrame:
    """The stable learning-rate region per group, formatted (empty unless lr is swept)."""
    s = c.stable_lr
    if s is None or s.empty:
        return pd.DataFrame()
    return _table(c, s, _context_cols([k for k in c.context_keys if k != "lr"], s), STABLE_LR)


stable_lr_md = stable_lr_table_fmt   # its old name (it returns a DataFrame, not Markdown)


def primary_table(c: Comparison) -> pd.DataFrame:
    """The declared primary comparisons: paired effect with its CI, raw and Holm p."""
    t = c.primary
    if t.empty:
        return pd.DataFrame()
    ctx = _context_cols(c.context_keys, t, always=("lr", "latent_dim"))
    rows = []
    for r in t.to_dict("records"):
        q = r["quantity"]
        inf = "never" if "target" in q else "∞"
        if q == DIVERGED:
            effect = f"{fmt(r['estimate'])} vs {fmt(r['baseline_estimate'])} diverged"
        else:
            effect = fmt_ci(r["diff"], r["diff_low"], r["diff_high"], inf=inf)
            if not pd.isna(r.get(COVERAGE)):
                effect += f" ({100 * r[COVERAGE]:.1f}% exact)"
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": setting(r),
                     "quantity": LABELS.get(q, q), "test": r["test"] + (" (paired)" if r["paired"] else ""),
                     "pairs": r["n_pairs"], "both finished": fmt(r.get(N_BOTH)), "median paired difference [95% CI]" if q != DIVERGED else "effect": effect,
                     "variant / baseline": f"{fmt(r['estimate'], inf=inf)} / {fmt(r['baseline_estimate'], inf=inf)}",
                     "p": fmt_p(r["p"]), "p (Holm)": fmt_p(r["p_holm"]),
                     "result": (f"significant, {r['direction']}" if r["significant"] else
                                (r["note"] or "not significant"))})
    return pd.DataFrame(rows)


def _numeric(df: pd.DataFrame, cols: list) -> pd.DataFrame:
    """The named columns that exist, in order (a CSV for machines: numbers stay numbers)."""
    return df[[k for k in dict.fromkeys(cols) if k in df.columns]].reset_index(drop=True)


def csv_tables(c: Comparison) -> dict:
    """{file name: DataFrame} of the comparison's tables with numeric columns (no formatted
    strings such as '0.0115 [0.0109, 0.0128]'): what write_report writes beside report.md."""
    keys = c.group_keys
    group_cols = [*keys, "is_baseline", "objective", "equiv", "n", EPOCH, *ci(FINAL), "rel_final", N_BOTH,
                  p(FINAL), p_holm(FINAL), *ci(EPOCHS_TO_TARGET), *ci(SPEEDUP), *ci(AUC), n_of(DIVERGED),
                  *ci(DIVERGED), *ci(RATE), *ci(DISTORTION), *ci(DISTORTION_GAP), "n_gap",
                  FROM_SURVIVORS, p(DISTORTION_GAP), TOTAL_LOSS, "target", "small"]
    test_cols = [*keys, "equiv", "quantity", "family", "test", "paired", "n", "n_baseline", "n_pairs", N_BOTH, "estimate",
                 "baseline_estimate", "diff", "diff_low", "diff_high", COVERAGE, *ci(SPEEDUP), *ci("ratio"),
                 FROM_SURVIVORS, "statistic", "p", "p_holm", "significant", "direction", "note"]
    out = {
        "headline.csv": _numeric(c.headline, ["rank", "verdict", *group_cols]),
        "groups.csv": _numeric(c.groups, group_cols + [q for q in c.groups.columns if q.startswith(p(""))]),
        "tests.csv": _numeric(c.tests, test_cols),
        "primary.csv": _numeric(c.primary, test_cols),
        "per_trial.csv": c.per_trial.copy(),
    }
    if len(c.frontier):
        out["frontier.csv"] = c.frontier.copy()
    if len(c.split):
        out["split.csv"] = c.split.copy()
    return out


