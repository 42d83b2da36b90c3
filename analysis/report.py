"""The report: the answer in one paragraph, then the tables, then the figures (Markdown).

Every sentence of the answer is generated from the comparison's numbers; when nothing differs
significantly from the baseline it says so, and when the study is too small for a test to ever
reach significance it says that too. Beside report.md, every table is written as a CSV whose
numbers are numeric columns (estimate, low, high, n, p, p_holm), for a reader's own analysis
(``analysis.tables``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd

from plvae import metrics as M
from plvae.priors import matched_gamma

from analysis import stats
from analysis.columns import (BETA, DISTORTION_GAP, DIVERGED, EPOCH, EPOCHS_TO_TARGET, FINAL, LABELS, RATE, high,
                              low, n_of, p, p_holm)
from analysis.compare import Comparison, compare
from analysis.figures import FIGURES, save_figures
from analysis.groups import context_text, contexts, matching
from analysis.load import STATUSES, Study
from analysis.selection import MIN_SPLIT_SEEDS
from analysis.tables import (csv_tables, fmt, fmt_ci, fmt_p, frontier_table, headline_table, markdown_table, pct,
                             primary_table, rate_distortion_table, setting, speed_table, split_table,
                             stability_table, stable_lr_table_fmt, text_table)
from analysis.tuned import tuned_of
from analysis.tuned_report import tuned_csv_tables, tuned_section

# Names callers import from here (the CLI, tests, benchmarks/evidence_summary.py).
__all__ = ["REPORT_DIR", "REPORT_FILE", "answer", "csv_tables", "headline_table", "markdown_table", "text_table",
           "write_report"]
REPORT_DIR = "report"
REPORT_FILE = "report.md"


# ------------------------------------------------------------------------------ the answer

def _primary_sentences(c: Comparison) -> list[str]:
    t = c.primary
    if t.empty:
        return []
    out = [f"Primary comparisons (declared before the study; Holm-corrected over these {len(t)} tests only, "
           f"significance level {c.significance:g}):"]
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
        out.append(f"{r['variant']} ({setting(r)}; {where}): {eff}; {r['test']}, p = {fmt_p(r['p'])}, "
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
    for _, ch in contexts(h, c.context_keys):
        sentences += _context_answer(c, ch, metric_note)
    n_div = int(study.trials["diverged"].sum())
    sentences.append(f"Across the study {n_div} of {len(study.trials)} trials diverged.")
    sentences += _family_sentence(c)
    return " ".join(sentences)


def _context_answer(c: Comparison, ch: pd.DataFrame, metric_note: str) -> list:
    """The sentences about one context's headline: its best variant against the baseline."""
    rows = ch.to_dict("records")
    sentences = []
    base = next((r for r in rows if r["variant"] == c.baseline), None)
    where = context_text(c.context_keys, tuple(rows[0].get(k) for k in c.context_keys), sep=" ")
    if base is None:
        sentences.append(f"In {where} there are no {c.baseline} (baseline) trials, so nothing was tested.")
        return sentences
    contenders = [r for r in rows if r["variant"] != c.baseline and not pd.isna(r["rank"])]
    if not contenders:
        sentences.append(f"In {where} no variant is comparable with the baseline on {c.metric}.")
        return sentences
    top = contenders[0]
    base_ci = fmt_ci(base[FINAL], base[low(FINAL)], base[high(FINAL)])
    top_ci = fmt_ci(top[FINAL], top[low(FINAL)], top[high(FINAL)])
    lead = (f"In {where}, compared at epoch {fmt(top[EPOCH])} (the last epoch every non-diverged trial here "
            f"reached: every number of this context is from it) on {metric_note}, "
            f"the best variant is {top['variant']} ({setting(top)}): median {top_ci} over n = {top['n']} seeds "
            f"against the baseline {c.baseline}'s {base_ci} over n = {base['n']}")
    rel = top["rel_final"]
    lead += f" ({pct(rel)})." if pd.notna(rel) else "."
    if base["rank"] < top["rank"]:
        lead = lead[:-1] + f"; the baseline itself ranks {'first' if base['rank'] == 1 else int(base['rank'])}."
    sentences.append(lead)
    raw, corrected = top.get(p(FINAL)), top.get(p_holm(FINAL))
    n_pairs = _pairs(c, top)
    if top["small"]:
        sentences.append(f"With fewer than {c.min_seeds} seeds in a group this was not tested.")
    elif pd.isna(raw):
        sentences.append("This difference was not tested.")
    elif pd.notna(corrected):
        word = "is significant" if corrected < c.significance else "is not significant"
        sentences.append(f"The difference {word} after Holm correction (paired Wilcoxon over {n_pairs} seeds, "
                         f"Holm-adjusted p = {fmt_p(corrected)}).")
    else:
        sentences.append(f"Exploratory (this setting was chosen after the fact, not declared): paired Wilcoxon "
                         f"over {n_pairs} seeds, raw p = {fmt_p(raw)}, uncorrected.")
    if n_pairs and not top["small"] and stats.min_wilcoxon_p(n_pairs) >= c.significance:
        sentences.append(f"With {n_pairs} paired seeds the smallest p-value a Wilcoxon signed-rank test can give "
                         f"is {stats.min_wilcoxon_p(n_pairs):.2g}, so no difference could reach significance "
                         f"here: run more seeds.")
    e_top, e_base = top[EPOCHS_TO_TARGET], base[EPOCHS_TO_TARGET]
    sentences.append(
        f"Speed: the target {fmt(top['target'])} (unless set: the value 8 in 10 of the baseline's "
        f"seeds reached by 3/4 of the comparison epoch; never reaching it is censored, tested by Gehan) is reached after {fmt(e_top, inf='never')} vs "
        f"{fmt(e_base, inf='never')} epochs (lower median).")
    sentences.append(
        f"Stability: {top[n_of(DIVERGED)]}/{top['n']} {top['variant']} trials diverged vs "
        f"{base[n_of(DIVERGED)]}/{base['n']} for {c.baseline}.")
    if pd.notna(top.get(DISTORTION_GAP)):
        gap = top[DISTORTION_GAP]
        sentences.append(
            f"Rate–distortion: rate {fmt(top[RATE])} nats against the baseline's {fmt(base[RATE])}; at its own rate "
            f"its distortion is {fmt_ci(gap, top[low(DISTORTION_GAP)], top[high(DISTORTION_GAP)])} "
            f"{'above' if gap > 0 else 'below'} the baseline's β frontier.")
    return sentences


def _family_sentence(c: Comparison) -> list:
    """What the tests found overall: none possible, all exploratory, or the significant ones."""
    sentences = []
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
            sentences.append(f"No {family} test is significant after Holm correction (significance level {c.significance:g}).")
        else:
            items = [f"{r['variant']} ({setting(r)}) is {r['direction']} on {LABELS.get(r['quantity'], r['quantity'])}"
                     for r in sig.to_dict("records")[:6]]
            more = f" and {len(sig) - 6} more" if len(sig) > 6 else ""
            sentences.append(f"Significant after Holm correction ({len(sig)} {family} tests): "
                             + "; ".join(items) + more + ".")
    return sentences


def _pairs(c: Comparison, r: dict) -> int:
    t = c.tests
    if t.empty:
        return 0
    m = (t["quantity"] == FINAL).to_numpy() & matching(t, c.group_keys, [r[k] for k in c.group_keys])
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


def _retried(t) -> str:
    """'; N retried (R retries)' when trials failed and Tune retried them from a checkpoint."""
    r = t["retries"] if "retries" in t else None
    if r is None or not (r > 0).any():
        return ""
    return f"; {int((r > 0).sum())} retried from a checkpoint ({int(r.sum())} retries in all)"


def _study_facts(study: Study, c: Comparison) -> list[str]:
    t = study.trials
    counts = t["status"].value_counts().reindex(list(STATUSES), fill_value=0)
    lines = [
        f"- path: `{study.path}`" if study.path else "- path: (in memory)",
        f"- status: {study.status}; scheduler: {study.meta.get('scheduler', '?')}; "
        f"search: {study.meta.get('search', '?')}; preset: {study.meta.get('preset', '?')}",
        f"- trials: {len(t)} (" + ", ".join(f"{k} {v}" for k, v in counts.items() if v) + ")" + _retried(t),
        "- swept: " + ", ".join(f"{p} ({_values(t[p])})" for p in study.swept),
        f"- max epochs: {fmt(t['max_epochs'].max()) if 'max_epochs' in t else '?'}; "
        f"compared on `{c.metric}`; baseline `{c.baseline}`; significance level {c.significance:g}; {c.n_tests} tests, "
        + (f"{len(c.primary)} of them primary (Holm over those)" if c.holm_family == "primary" else
           f"Holm over {'all tests' if c.holm_family == 'all' else 'each quantity'}"),
        f"- seconds to target: on `{c.clock}`, "
        + ("seconds from the trial's first training step (a reused worker's warm-up left out)"
           if c.clock == M.TRAIN_TIME_S else "Tune's seconds since the trial started (including a reused worker's "
                                             "warm-up: this study predates train_time_s)"),
    ]
    if study.data_alpha:
        lines.append("- measured data spectrum exponent α: " + ", ".join(
            f"{k} {fmt(v)} (a matched prior has γ = α/2 = {fmt(matched_gamma(v)) if isinstance(v, (int, float)) else '?'}; "
            f"measured on the training split)"
            for k, v in study.data_alpha.items()))
    if study.skipped:
        lines.append("- skipped or incomplete while loading: " + "; ".join(study.skipped))
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
  — unless set, the value 8 in 10 of the baseline's seeds reached by 3/4 of the comparison epoch
  — never reaching it censored at the comparison epoch (Gehan's paired test, the speed-up as the
  ratio of Kaplan-Meier median epochs); the normalised AUC; the value after the first epoch ÷ the
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
        written, skipped = save_figures(study, c, out, data_spectrum=data_spectrum, reconstructions=True)
    tuned_result = tuned_of(study)   # None without a tuning protocol
    tables = {**csv_tables(c), **tuned_csv_tables(tuned_result)}
    for name, df in tables.items():
        df.to_csv(out / name, index=False)
    parts = [f"# Study `{study.name}`: do power-law priors train faster and more stably?\n",
             "## Answer\n", answer(study, c) + "\n", "## Study\n", "\n".join(_study_facts(study, c)) + "\n"]
    parts += tuned_section(tuned_result) + _table_sections(c, tables)
    if figures:
        parts += _figure_section(written, skipped)
    parts += ["\n## Method\n", _method(c)]
    path = out / REPORT_FILE
    path.write_text("\n".join(parts))
    return path


def _table_sections(c: Comparison, tables: dict) -> list:
    """The report's tables, each under its heading (a table with no rows is left out)."""
    parts = []
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
    lr_tab = stable_lr_table_fmt(c)
    if not lr_tab.empty:
        parts += ["\n### Stable learning-rate region\n", markdown_table(lr_tab)]
    parts += [f"\n## All tests\n\nIn `tests.csv` ({len(c.tests)} rows, numeric columns); the primary family is "
              f"in `primary.csv`. Tables as CSV: " + ", ".join(f"`{n}`" for n in tables) + ".\n"]
    return parts


def _figure_section(written: dict, skipped: dict) -> list:
    """Every figure drawn, under its registry caption, and what was not drawn and why."""
    parts = ["\n## Figures\n"]
    for name, path in written.items():
        parts.append(f"**{FIGURES[name].title}**\n\n![{name}]({Path(path).name})\n")
    if skipped:
        parts.append("Not drawn: " + "; ".join(f"{FIGURES[k].title if k in FIGURES else k} ({v})"
                                                for k, v in skipped.items()) + ".\n")
    return parts


def _method(c: Comparison) -> str:
    """The METHOD text, filled in for this comparison."""
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
    return METHOD.format(metric=c.metric, why=why, context=ctx, family=family,
                         min_seeds=c.min_seeds, rate=M.VAL_RATE, recon_mu=M.VAL_RECON_MU,
                         split_seeds=MIN_SPLIT_SEEDS)

