"""The tuned-against-tuned section of a study's report (analysis.tuned), for a study run under a
tuning protocol (its ``tuning:`` section, recorded in study.json): the tables as CSV (numeric
columns) and as Markdown. The sensitivity figure is a row of the figure registry (analysis.figures).
Every number comes from the evaluation seeds, each arm at its own pick; the tuning seeds only pick.
"""
from __future__ import annotations

from typing import Optional

import pandas as pd

from analysis.tables import fmt, fmt_ci, fmt_p, markdown_table
from analysis.tuned import CONTEXT_FIELDS, Tuned

# The CSVs this section adds beside report.md.
PICKS_CSV, COMPARISON_CSV, STABLE_CSV, SENSITIVITY_CSV = ("tuned_picks.csv", "tuned_comparison.csv",
                                                          "stable_lr.csv", "lr_sensitivity.csv")


def tuned_csv_tables(result: Optional[Tuned]) -> dict:
    """{file name: DataFrame} of the tuned analysis (numeric columns); {} without a protocol."""
    if result is None:
        return {}
    return {PICKS_CSV: result.picks.copy(), COMPARISON_CSV: result.comparison.copy(),
            STABLE_CSV: result.stable.copy(), SENSITIVITY_CSV: result.sensitivity.copy()}


def _ctx(df: pd.DataFrame) -> list:
    return [c for c in CONTEXT_FIELDS if c in df.columns]


def _times(r: dict, unit: str, inf: str = "never") -> str:
    return f"{fmt(r[f'median_{unit}'], inf=inf)} vs {fmt(r[f'baseline_median_{unit}'], inf=inf)}"


def comparison_table(result: Tuned) -> pd.DataFrame:
    """The comparison, formatted: time to target (steps and seconds, speed-up with its CI, Gehan p),
    final quality on the seeds both finished (ratio with its CI, n, Wilcoxon p), divergence (k/n
    against the baseline's, McNemar p), Holm over the time and final tests of every context."""
    t, knob = result.comparison, result.protocol.knobs[0]
    if t.empty:
        return t
    rows = []
    for r in t.to_dict("records"):
        timed = "median_steps" in r and pd.notna(r.get("median_steps"))
        rows.append({**{c: fmt(r[c]) for c in _ctx(t)}, "arm": r["arm"], knob: fmt(r[f"pick_{knob}"]),
                     f"baseline {knob}": fmt(r[f"baseline_pick_{knob}"]), "seeds": r["n_pairs"],
                     "steps to target (arm vs base)": _times(r, "steps") if timed else "–",
                     "speed-up [CI]": fmt_ci(r.get("speedup"), r.get("speedup_low"), r.get("speedup_high")),
                     "seconds (arm vs base)": _times(r, "seconds") if timed else "–",
                     "speed-up s [CI]": fmt_ci(r.get("speedup_seconds"), r.get("speedup_seconds_low"),
                                               r.get("speedup_seconds_high")),
                     "Gehan p (Holm)": f"{fmt_p(r.get('p_time'))} ({fmt_p(r.get('p_holm_time'))})",
                     "final ratio [CI]": fmt_ci(r.get("final_ratio"), r.get("final_ratio_low"),
                                                r.get("final_ratio_high")),
                     "n both finished": fmt(r.get("n_both_finished")),
                     "Wilcoxon p (Holm)": f"{fmt_p(r.get('p_final'))} ({fmt_p(r.get('p_holm_final'))})",
                     "diverged (arm vs base)": f"{fmt(r.get('diverged'))} vs {fmt(r.get('baseline_diverged'))} "
                                               f"of {r['n_pairs']}",
                     "McNemar p": fmt_p(r.get("p_diverged"))})
    return pd.DataFrame(rows)


def picks_table(result: Tuned) -> pd.DataFrame:
    p, knobs = result.picks, result.protocol.knobs
    if p.empty:
        return p
    return pd.DataFrame([{**{c: fmt(r[c]) for c in _ctx(p)}, "arm": r["arm"],
                          **{f"pick {k}": fmt(r[f"pick_{k}"]) for k in knobs},
                          "median on tuning seeds": fmt(r["tuning_median"]), "tuning runs": r["tuning_runs"],
                          "grid points": r["grid_points"]} for r in p.to_dict("records")])


def stable_table(result: Tuned) -> pd.DataFrame:
    s, knob = result.stable, result.protocol.knobs[0]
    if s.empty:
        return s
    return pd.DataFrame([{**{c: fmt(r[c]) for c in _ctx(s)}, "arm": r["arm"],
                          f"largest stable {knob}": fmt(r[f"stable_max_{knob}"]),
                          "diverged there": f"{r['diverged_at_stable_max']}/{r['runs_at_stable_max']}",
                          f"largest {knob} tried": fmt(r[f"largest_{knob}_tried"]),
                          f"{knob} band within {result.protocol.band:.0%} of best":
                              f"{fmt(r[f'band_low_{knob}'])}–{fmt(r[f'band_high_{knob}'])}",
                          "band (decades)": fmt(r["band_decades"])} for r in s.to_dict("records")])


def tuned_section(result: Optional[Tuned]) -> list:
    """The report's Markdown section (a list of parts); [] without a protocol."""
    if result is None:
        return []
    p = result.protocol
    knobs = ", ".join(p.knobs)
    parts = ["## Tuned against tuned\n",
             f"Each arm's {knobs} is picked on the tuning seeds {list(p.tuning_seeds)} (lowest median final "
             f"{p.metric}, a diverged run counting as ∞; the same grid, so the same budget, for every arm); "
             f"every comparison below is on the evaluation seeds {list(p.evaluation_seeds)} only, each arm at its "
             f"own pick, paired by seed with the tuned {p.baseline}. Time to target: runs that never reach it are "
             f"censored (paired Gehan test; speed-up = ratio of Kaplan–Meier medians, bootstrap CI; > 1 is "
             f"faster). Final: the seeds where both runs finished (exact Wilcoxon; ratio of arm to baseline, < 1 "
             f"is lower). Divergence beside it (exact McNemar), never folded in. Holm over the time and final "
             f"tests of every context together (one family).\n",
             "### Picks (tuning seeds)\n", markdown_table(picks_table(result)),
             "\n### Each arm at its pick against the tuned baseline (evaluation seeds)\n",
             markdown_table(comparison_table(result)),
             f"\n### Stable {knobs} range (every seed; at most {p.stable_max_diverged:.0%} diverged)\n",
             markdown_table(stable_table(result))]
    if result.notes:
        parts.append("\n" + "\n".join(f"- {n}" for n in result.notes) + "\n")
    parts.append(f"\nTables as CSV: `{PICKS_CSV}`, `{COMPARISON_CSV}`, `{STABLE_CSV}`, `{SENSITIVITY_CSV}`; the "
                 f"sensitivity figure is `lr_sensitivity.png`.\n")
    return parts
