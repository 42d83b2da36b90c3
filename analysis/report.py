"""The report: the answer in one paragraph, then the tables, then the figures (Markdown).

Every sentence of the answer is generated from the comparison's numbers; when nothing differs
significantly from the baseline it says so, and when the study is too small for a test to ever
reach significance it says that too.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from plvae import metrics as M

from analysis import stats
from analysis.compare import (ASHA_STOPPED, AUC, DIVERGED, EPOCHS_TO_TARGET, FINAL, FIRST_EPOCH_RATIO,
                              LABELS, MAX_INCREASE, SECONDS_TO_TARGET, SPREAD, TOTAL_LOSS, VARIANT_PARAMS,
                              Comparison, compare)
from analysis.load import STATUSES, Study

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
            "rank": r["rank"], "variant": r["variant"], "setting": _setting(r), "n": r["n"],
            f"final {c.metric} [95% CI]": fmt_ci(r[FINAL], r[f"{FINAL}_low"], r[f"{FINAL}_high"]),
            "vs baseline": _pct(r["rel_final"]),
            "p (Holm)": fmt_p(r.get(f"p_holm_{FINAL}")),
            "verdict": r["verdict"],
            "epochs to target": fmt(r[EPOCHS_TO_TARGET], inf="never"),
            "AUC": fmt(r[AUC]),
            "diverged": f"{r[f'n_{DIVERGED}']}/{r['n']}",
            f"total {M.VAL_LOSS}*": fmt(r[TOTAL_LOSS]),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def speed_table(c: Comparison) -> pd.DataFrame:
    g = c.groups
    ctx = _context_cols(c, g)
    rows = []
    for r in g.to_dict("records"):
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": _setting(r), "n": r["n"],
                     "target": fmt(r["target"]), "reached": f"{100 * r['reached']:.0f}%",
                     "epochs to target": fmt_ci(r[EPOCHS_TO_TARGET], r[f"{EPOCHS_TO_TARGET}_low"],
                                                r[f"{EPOCHS_TO_TARGET}_high"], inf="never"),
                     "p": fmt_p(r.get(f"p_holm_{EPOCHS_TO_TARGET}")),
                     "seconds to target": fmt_ci(r[SECONDS_TO_TARGET], r[f"{SECONDS_TO_TARGET}_low"],
                                                 r[f"{SECONDS_TO_TARGET}_high"], inf="never"),
                     "p ": fmt_p(r.get(f"p_holm_{SECONDS_TO_TARGET}")),
                     "normalised AUC": fmt_ci(r[AUC], r[f"{AUC}_low"], r[f"{AUC}_high"]),
                     "p  ": fmt_p(r.get(f"p_holm_{AUC}")),
                     "epoch-1 / initial": fmt_ci(r[FIRST_EPOCH_RATIO], r[f"{FIRST_EPOCH_RATIO}_low"],
                                                 r[f"{FIRST_EPOCH_RATIO}_high"]),
                     "p   ": fmt_p(r.get(f"p_holm_{FIRST_EPOCH_RATIO}"))})
    return pd.DataFrame(rows)


def stability_table(c: Comparison) -> pd.DataFrame:
    g = c.groups
    ctx = _context_cols(c, g)
    rows = []
    for r in g.to_dict("records"):
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": _setting(r), "n": r["n"],
                     "diverged": f"{r[f'n_{DIVERGED}']}/{r['n']} "
                                 f"({fmt_ci(r[DIVERGED], r[f'{DIVERGED}_low'], r[f'{DIVERGED}_high'], pct=True)})",
                     "p": fmt_p(r.get(f"p_holm_{DIVERGED}")),
                     "std across seeds": fmt_ci(r[SPREAD], r[f"{SPREAD}_low"], r[f"{SPREAD}_high"]),
                     "CV": fmt(r["cv"]),
                     "p ": fmt_p(r.get(f"p_holm_{SPREAD}")),
                     "largest rise": fmt_ci(r[MAX_INCREASE], r[f"{MAX_INCREASE}_low"], r[f"{MAX_INCREASE}_high"]),
                     "p  ": fmt_p(r.get(f"p_holm_{MAX_INCREASE}")),
                     "ASHA-stopped": f"{r[f'n_{ASHA_STOPPED}']}/{r['n']}",
                     "p   ": fmt_p(r.get(f"p_holm_{ASHA_STOPPED}")),
                     f"total {M.VAL_LOSS}*": fmt(r[TOTAL_LOSS]),
                     "flag": f"n < {c.min_seeds}: not tested" if r["small"] else ""})
    return pd.DataFrame(rows)


def tests_table(c: Comparison) -> pd.DataFrame:
    t = c.tests
    ctx = _context_cols(c, t)
    rows = []
    for r in t.to_dict("records"):
        rows.append({**{k: fmt(r[k]) for k in ctx}, "variant": r["variant"], "setting": _setting(r),
                     "quantity": LABELS.get(r["quantity"], r["quantity"]), "test": r["test"],
                     "n vs baseline": f"{r['n']} vs {r['n_baseline']}",
                     "estimate": fmt(r["estimate"], inf="never" if "target" in r["quantity"] else "∞"),
                     "baseline": fmt(r["baseline_estimate"], inf="never" if "target" in r["quantity"] else "∞"),
                     "p": fmt_p(r["p"]), "p (Holm)": fmt_p(r["p_holm"]),
                     "result": (f"significant, {r['direction']}" if r["significant"] else
                                (r["note"] or "not significant"))})
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

def answer(study: Study, c: Comparison) -> str:
    """The study's answer in one paragraph, generated from the numbers."""
    h = c.headline
    if h.empty:
        return "No finished trials: nothing to compare yet."
    sentences = []
    metric_note = (f"{c.metric}, the reconstruction error at z = μ (comparable across priors)"
                   if c.metric == M.VAL_RECON_MU else c.metric)
    ctx_groups = list(h.groupby(c.context_keys, dropna=False, sort=True)) if c.context_keys else [((), h)]
    for _, ch in ctx_groups:
        rows = ch.to_dict("records")
        base = next((r for r in rows if r["variant"] == c.baseline), None)
        where = _context_text(c, rows[0])
        if base is None:
            sentences.append(f"In {where} there are no {c.baseline} (baseline) trials, so nothing was tested.")
            continue
        contenders = [r for r in rows if r["variant"] != c.baseline]
        if not contenders:
            sentences.append(f"In {where} only the baseline {c.baseline} ran.")
            continue
        top = contenders[0]
        base_ci = fmt_ci(base[FINAL], base[f"{FINAL}_low"], base[f"{FINAL}_high"])
        top_ci = fmt_ci(top[FINAL], top[f"{FINAL}_low"], top[f"{FINAL}_high"])
        lead = (f"In {where}, compared on {metric_note} after at most {study.trials['epochs'].max()} epochs, "
                f"the best variant is {top['variant']} ({_setting(top)}): median final {top_ci} "
                f"against the baseline {c.baseline}'s {base_ci}")
        rel = top["rel_final"]
        lead += f" ({_pct(rel)})." if pd.notna(rel) else "."
        if base["rank"] < top["rank"]:
            lead = lead[:-1] + f"; the baseline itself ranks {'first' if base['rank'] == 1 else base['rank']}."
        sentences.append(lead)
        p = top.get(f"p_holm_{FINAL}")
        if top["small"]:
            sentences.append(f"With fewer than {c.min_seeds} seeds in a group this was not tested.")
        elif pd.isna(p):
            sentences.append("This difference was not tested.")
        elif p < c.alpha:
            sentences.append(f"The difference is significant after Holm correction (Mann–Whitney U, "
                             f"Holm-adjusted p = {fmt_p(p)} over {c.n_tests} tests, n = {top['n']} vs {base['n']}).")
        else:
            sentences.append(f"There is no significant difference after Holm correction (Mann–Whitney U, "
                             f"Holm-adjusted p = {fmt_p(p)} over {c.n_tests} tests, n = {top['n']} vs {base['n']}).")
        pmin = stats.min_mann_whitney_p(int(top["n"]), int(base["n"]))
        m = c.n_tests if c.holm_family == "all" else int((c.tests["quantity"] == FINAL).sum())
        if not top["small"] and pmin * max(m, 1) >= c.alpha:
            sentences.append(f"With {top['n']} vs {base['n']} seeds the smallest p-value a Mann–Whitney test "
                             f"can give is {pmin:.2g}" + (f" ({min(1, pmin * m):.2g} after Holm correction over "
                                                          f"{m} tests)" if m > 1 else "")
                             + ", so no difference could reach significance here: run more seeds"
                             + (" or compare fewer groups." if m > 1 else "."))
        e_top, e_base = top[EPOCHS_TO_TARGET], base[EPOCHS_TO_TARGET]
        sentences.append(
            f"Speed: the target {fmt(top['target'])} (unless set: the median final value of the baseline's non-diverged trials) is "
            f"reached after {fmt(e_top, inf='never')} vs {fmt(e_base, inf='never')} epochs (lower median), "
            f"normalised AUC {fmt(top[AUC])} vs {fmt(base[AUC])}.")
        sentences.append(
            f"Stability: {top[f'n_{DIVERGED}']}/{top['n']} {top['variant']} trials diverged vs "
            f"{base[f'n_{DIVERGED}']}/{base['n']} for {c.baseline}.")
    n_div = int(study.trials["diverged"].sum())
    sentences.append(f"Across the study {n_div} of {len(study.trials)} trials diverged.")
    sig = c.significant()
    if c.n_tests == 0:
        sentences.append("No test could be made (groups too small or no baseline).")
    elif sig.empty:
        sentences.append(f"No variant differs significantly from the baseline in any of the {c.n_tests} "
                         f"tests (speed, stability and final value; Holm-corrected, α = {c.alpha:g}).")
    else:
        items = [f"{r['variant']} ({_setting(r)}) is {r['direction']} on {LABELS.get(r['quantity'], r['quantity'])}"
                 for r in sig.to_dict("records")[:6]]
        more = f" and {len(sig) - 6} more" if len(sig) > 6 else ""
        sentences.append(f"Significant after Holm correction ({len(sig)} of {c.n_tests} tests): "
                         + "; ".join(items) + more + ".")
    return " ".join(sentences)


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
        f"compared on `{c.metric}`; baseline `{c.baseline}`; α = {c.alpha:g}; "
        f"Holm over {'all tests' if c.holm_family == 'all' else 'each quantity'} ({c.n_tests} tests)",
    ]
    if study.data_alpha:
        lines.append("- measured data spectrum exponent α: " + ", ".join(
            f"{k} {fmt(v)} (a matched prior has γ = α/2 = {fmt(v / 2) if isinstance(v, (int, float)) else '?'})"
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
  baseline in the same context. Errored and unfinished trials are left out.
- **Speed.** Epochs (and seconds, Tune's `time_total_s`) until the metric first reaches the target
  — unless set, the median final value of the baseline's non-diverged trials — with never = ∞ (lower median, so a group where
  half the trials reach it stays finite); the normalised AUC (area under the curve from epoch 0
  to the last epoch ÷ (epochs × initial value): 1 = no progress, lower = faster); and the value
  after the first epoch ÷ the pre-training value.
- **Stability.** Divergence rate (`diverged` reported, or a non-finite loss); std and CV of the
  final value across seeds; the largest relative epoch-to-epoch rise of the curve (0 = monotone,
  ∞ = diverged); the share ASHA stopped early; and, when lr is swept, the largest lr up to which
  no trial diverged. A diverged trial's final value, AUC and largest rise count as ∞ (worse than
  any finished run, so no group can look good by losing its bad seeds); std and CV use the
  finite final values.
- **Statistics.** Medians with bootstrap 95% CIs (scipy.stats.bootstrap, BCa; constant samples
  get a zero-width interval); rates with Wilson intervals. Tests against the baseline:
  Mann–Whitney U (two-sided) for per-trial quantities, Fisher's exact test for rates,
  Brown–Forsythe for the spread; p-values Holm-corrected {family}. Groups with fewer than
  {min_seeds} usable trials are flagged and not tested. With n seeds per group a Mann–Whitney
  test cannot go below 2 / C(2n, n) (0.1 at n = 3, 0.029 at n = 4, 0.008 at n = 5).
"""


def write_report(study: Study, comparison: Optional[Comparison] = None, out=None, figures: bool = True,
                 data_spectrum: bool = True, **compare_kw) -> Path:
    """Write ``report.md`` and its figures into ``out`` (default ``<study path>/report``).

    Returns the report's path. ``compare_kw`` go to ``compare`` when no comparison is given."""
    c = comparison or compare(study, **compare_kw)
    if out is None:
        if study.path is None:
            raise ValueError("out=None is invalid for a study without a path; allowed: a folder to write into")
        out = Path(study.path) / REPORT_DIR
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = ({}, {})
    if figures:
        from analysis.figures import FIGURES, save_figures
        written, skipped = save_figures(study, c, out, data_spectrum=data_spectrum)

    parts = [f"# Study `{study.name}`: do power-law priors train faster and more stably?\n",
             "## Answer\n", answer(study, c) + "\n", "## Study\n", "\n".join(_study_facts(study, c)) + "\n",
             f"## Headline: variants ranked by final `{c.metric}` (best setting each)\n",
             markdown_table(headline_table(c)),
             f"\n\\* total loss against each variant's own prior: shown, not comparable across variants.\n",
             "## Speed\n", markdown_table(speed_table(c)),
             "\np-values are Holm-corrected; the target is per context: "
             + ", ".join(f"{fmt(v)}" for v in c.targets.values()) + ".\n",
             "## Stability\n", markdown_table(stability_table(c))]
    lr_tab = stable_lr_md(c)
    if not lr_tab.empty:
        parts += ["\n### Stable learning-rate region\n", markdown_table(lr_tab)]
    parts += ["\n## All tests\n", markdown_table(tests_table(c))]
    if figures:
        from analysis.figures import FIGURES
        parts.append("\n## Figures\n")
        for name, path in written.items():
            parts.append(f"**{FIGURES[name]}**\n\n![{name}]({Path(path).name})\n")
        if skipped:
            parts.append("Not drawn: " + "; ".join(f"{FIGURES.get(k, k)} ({v})" for k, v in skipped.items()) + ".\n")
    ctx = ", ".join(c.context_keys) or "none"
    not_comparable = (f"each variant's total loss ({M.VAL_LOSS}) is measured against its own prior, and decayed "
                      f"sampling shrinks the noise the decoder sees, so total losses are not comparable across "
                      f"variants; the reconstruction error at z = μ ({M.VAL_RECON_MU}) is.")
    if c.metric == M.DEFAULT_STUDY_METRIC:
        why = (not_comparable[0].upper() + not_comparable[1:] + " It is compared, and the total loss is shown "
               "beside it (columns marked *).")
    else:
        why = (f"Compared on {c.metric} as asked. Beware: {not_comparable} The default, "
               f"{M.DEFAULT_STUDY_METRIC}, is the fair comparison; the total loss is shown in the columns marked *.")
    why += (" `powerlaw_clamp` is a reparameterisation of the standard VAE, so any gain is an optimisation "
            "effect: speed and stability, which is what is measured here.")
    parts += ["\n## Method\n", METHOD.format(metric=c.metric, why=why, context=ctx,
                                             family="over all tests" if c.holm_family == "all" else
                                             "within each quantity", min_seeds=c.min_seeds)]
    path = out / REPORT_FILE
    path.write_text("\n".join(parts))
    return path
