"""The tuned-against-tuned evidence (issue 18) behind README's first Results paragraph: exported
once from the study folders, recomputed from the committed CSV (``evidence_summary.py``'s two steps).

Step 1 (``export_tuned``, needs the study folders): every study under the root that ran a tuning
protocol, a two-phase protocol's tuning and evaluation studies read as one (analysis.phases), each
trial one row of ``tuned_trials.csv`` - its study, arm, lr, seed, ``role`` (``tuning`` or
``evaluation``: which seeds pick and which report), outcome and curves per epoch - and
``tuned_studies.json``: each study's protocol (as study.json recorded it), measured alpha,
budget and trial count.

Step 2 (``summarise_tuned``, from the CSV alone): rebuild each study, run ``analysis.tuned`` on it,
and write ``tuned_picks.csv``, ``tuned_comparison.csv`` (Holm over the time and final tests of
every study together: the one primary family declared in docs/design.md and README), ``stable_lr.csv``,
``lr_sensitivity.csv``, ``<study>_lr_sensitivity.png`` and ``tuned.md`` (the three tables per study,
formatted, the comparison with the one family's Holm p).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import warnings

import numpy as np
import pandas as pd

from analysis.figure_tuned import plot_lr_sensitivity
from analysis.load import load_studies
from analysis.phases import phase_labels
from analysis.stats import holm
from analysis.tables import markdown_table
from analysis.tuned import Protocol, Tuned, tuned
from analysis.tuned_report import (COMPARISON_CSV, PICKS_CSV, SENSITIVITY_CSV, STABLE_CSV, comparison_table,
                                   picks_table, stable_table, tuned_csv_tables)

TUNED_CSV, TUNED_JSON = "tuned_trials.csv", "tuned_studies.json"
TUNED_TABLES = (PICKS_CSV, COMPARISON_CSV, STABLE_CSV, SENSITIVITY_CSV)


def _group_name(names: list) -> str:
    """A two-phase protocol's studies ``x_tuning`` and ``x_evaluation`` are study ``x``."""
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(names).rstrip("_-")
    return prefix or " + ".join(names)


def export_tuned(root: str, trial_row) -> tuple[pd.DataFrame, dict]:
    """Every tuning-protocol study under root as rows (``trial_row(name, trial, history)`` builds
    one, as evidence_summary does for the fixed-lr studies) and its metadata."""
    dirs = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(root, "*", "study.json")))
    metas = []
    for d in dirs:
        with open(os.path.join(d, "study.json")) as f:
            metas.append(json.load(f))
    labels, _ = phase_labels(metas, [os.path.basename(d) for d in dirs])
    rows, meta = [], {}
    for label in dict.fromkeys(labels):
        group = [d for d, lab in zip(dirs, labels) if lab == label]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = load_studies(group, warn=False)
        protocol = Protocol.from_meta(study.meta if len(group) > 1 else study.meta["studies"][os.path.basename(group[0])])
        if protocol is None:
            continue
        name = _group_name([os.path.basename(d) for d in group])
        alpha = next(iter((study.meta.get("data_alpha") or {}).values()), None)
        meta[name] = {"studies": [os.path.basename(d) for d in group], "tuning": dataclasses.asdict(protocol),
                      "data_alpha": alpha, "max_epochs": study.meta.get("max_epochs"), "n_trials": len(study.trials),
                      "preset": study.meta.get("preset")}
        hist = {tid: h.sort_values("training_iteration") for tid, h in study.history.groupby("trial_id")}
        for t in study.trials.to_dict("records"):
            row = trial_row(name, t, hist.get(t["trial_id"]))
            row["role"] = "tuning" if int(t["seed"]) in protocol.tuning_seeds else "evaluation"
            rows.append(row)
    return pd.DataFrame(rows), meta


def one_family(comparisons: list) -> pd.DataFrame:
    """Every study's comparison in one table, Holm over all their time and final tests together."""
    df = pd.concat([c for c in comparisons if len(c)], ignore_index=True) if comparisons else pd.DataFrame()
    if df.empty or "p_time" not in df:
        return df
    family = np.r_[df["p_time"].to_numpy(float), df["p_final"].to_numpy(float)]
    adjusted = holm(family)
    df["p_holm_time"], df["p_holm_final"] = adjusted[:len(df)], adjusted[len(df):]
    df["n_family"] = int(np.isfinite(family).sum())
    return df


def summarise_tuned(trials: pd.DataFrame, meta: dict, out: str, rebuild, save) -> dict:
    """Step 2: the tuned tables and figures from ``tuned_trials.csv``; returns {file: DataFrame}."""
    studies = rebuild(trials.drop(columns=["role"]), {n: {**m, "primary": []} for n, m in meta.items()})
    parts = {k: [] for k in TUNED_TABLES}
    results = {}
    for name, study in studies.items():
        protocol = Protocol(**meta[name]["tuning"])
        roles = trials[trials["study"] == name].set_index("trial_id")["role"]
        wrong = roles[(roles == "tuning") != roles.index.map(
            study.trials.set_index("trial_id")["seed"]).isin(protocol.tuning_seeds)]
        if len(wrong):
            raise SystemExit(f"error: {TUNED_CSV} marks {len(wrong)} trial(s) of {name} with a role their seed "
                             f"does not have; allowed: role = tuning exactly for the tuning seeds")
        result = results[name] = tuned(study, protocol)
        for file, df in tuned_csv_tables(result).items():
            if len(df):
                parts[file].append(df.assign(study=name))
        save(plot_lr_sensitivity(result), os.path.join(out, f"{name}_lr_sensitivity.png"))
    tables = {f: pd.concat(p, ignore_index=True) for f, p in parts.items() if p}
    if COMPARISON_CSV in tables:
        tables[COMPARISON_CSV] = one_family(parts[COMPARISON_CSV])
    with open(os.path.join(out, "tuned.md"), "w") as f:
        f.write(tuned_markdown(results, tables.get(COMPARISON_CSV), meta))
    for file, df in tables.items():
        df = df[["study", *[c for c in df.columns if c != "study"]]]
        df.to_csv(os.path.join(out, file), index=False, float_format="%.6g")
        tables[file] = df
        print(f"{file}: {len(df)} rows")
    return tables


def tuned_markdown(results: dict, family: pd.DataFrame, meta: dict) -> str:
    """Each study's picks, comparison (with the one family's Holm p) and stable range, formatted."""
    n = int(family["n_family"].iloc[0]) if family is not None and len(family) else 0
    parts = ["# Tuned against tuned (generated by benchmarks/evidence_summary.py from tuned_trials.csv)\n",
             f"One family of {n} tests (time to target and final quality of every arm against the tuned vae, "
             f"every study), Holm-corrected once; decision rules in tuned_protocol.md.\n"]
    for name, r in results.items():
        comp = family[family["study"] == name].drop(columns=["study", "n_family"]) if n else r.comparison
        r = Tuned(r.protocol, r.picks, comp.reset_index(drop=True), r.stable, r.sensitivity, r.notes)
        alpha = meta[name].get("data_alpha")
        parts += [f"\n## {name}" + (f" (measured α = {alpha:.3g})" if isinstance(alpha, (int, float)) else "") + "\n",
                  "\n### Picks (tuning seeds)\n", markdown_table(picks_table(r)),
                  "\n### Each arm at its pick against the tuned vae (evaluation seeds)\n",
                  markdown_table(comparison_table(r)), "\n### Stable lr range (every seed run there)\n",
                  markdown_table(stable_table(r))]
        parts += ["\n" + "\n".join(f"- {x}" for x in r.notes) + "\n"] if r.notes else []
    return "\n".join(parts) + "\n"


def read_tuned(out: str):
    """(trials, meta) from OUT's tuned CSV and JSON, or None where there are none."""
    csv_path, meta_path = os.path.join(out, TUNED_CSV), os.path.join(out, TUNED_JSON)
    if not os.path.exists(csv_path):
        return None
    with open(meta_path) as f:
        meta = json.load(f)
    trials = pd.read_csv(csv_path)
    counts = trials["study"].value_counts()
    short = [f"{n} ({int(counts.get(n, 0))} of {m['n_trials']})" for n, m in meta.items()
             if counts.get(n, 0) != m.get("n_trials")]
    if short:
        raise SystemExit(f"error: {csv_path} does not hold the trials {TUNED_JSON} counts: {', '.join(short)}; "
                         f"allowed: the files step 1 writes")
    return trials, meta


def write_tuned(root: str, out: str, trial_row) -> None:
    """Step 1 for the tuned studies: the CSV and JSON, where root holds any."""
    trials, meta = export_tuned(root, trial_row)
    if not meta:
        return
    trials.to_csv(os.path.join(out, TUNED_CSV), index=False, float_format="%.7g")
    with open(os.path.join(out, TUNED_JSON), "w") as f:
        json.dump(meta, f, indent=1, default=float)
    print(f"{TUNED_CSV}: {len(trials)} trials from {len(meta)} tuned studies")

