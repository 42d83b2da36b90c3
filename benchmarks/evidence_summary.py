"""Summary tables of the evidence studies (README, "Results"): one CSV per question, written to
docs/results/, plus the gamma-vs-loss figure of each study copied from its analysis report.

    python benchmarks/evidence_summary.py [--root results/evidence] [--out docs/results]

1. pooled.csv — per study, lr and variant, pooled over gamma and seeds: trials, diverged, the
   median final val_recon_mu (diverged trials count as +inf), and Fisher's exact test of the
   divergence rate and a Mann–Whitney U test of final val_recon_mu against the baseline at the
   same lr. Pooling over the pre-registered gamma range answers "does this prior family help at
   all?" with more power than the per-gamma tests of `python -m analysis` (5 seeds per group
   cannot reach significance after Holm correction; see each study's report).
2. <study>_headline.csv — the headline table of `python -m analysis` for each study.
3. best_gamma.csv — per synthetic study and variant (lr 0.001): the gamma with the lowest median
   final val_recon_mu next to the measured alpha / 2.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import warnings

import numpy as np
import pandas as pd
from scipy.stats import fisher_exact, mannwhitneyu

import analysis
from plvae import metrics as M

FINAL = "final_" + M.VAL_RECON_MU


def final_values(trials: pd.DataFrame) -> pd.Series:
    return trials[FINAL].where(~trials["diverged"].astype(bool) & np.isfinite(trials[FINAL]), np.inf)


def pooled(name: str, trials: pd.DataFrame, baseline: str = "vae") -> pd.DataFrame:
    rows = []
    trials = trials.assign(final=final_values(trials))
    for lr, at_lr in trials.groupby("lr"):
        base = at_lr[at_lr.variant == baseline]
        for variant, g in at_lr.groupby("variant"):
            row = {"study": name, "lr": lr, "variant": variant, "trials": len(g),
                   "diverged": int(g.diverged.sum()), "median_final": float(np.median(g.final)),
                   "p_diverged": np.nan, "p_final": np.nan}
            if variant != baseline and len(base):
                table = [[row["diverged"], len(g) - row["diverged"]],
                         [int(base.diverged.sum()), len(base) - int(base.diverged.sum())]]
                row["p_diverged"] = float(fisher_exact(table)[1])
                row["p_final"] = float(mannwhitneyu(g.final, base.final, alternative="two-sided").pvalue)
            rows.append(row)
    return pd.DataFrame(rows)


def best_gamma(name: str, trials: pd.DataFrame, alpha: float, lr: float = 0.001) -> pd.DataFrame:
    trials = trials.assign(final=final_values(trials))
    rows = []
    for variant, g in trials[(trials.lr == lr) & (trials.variant != "vae")].groupby("variant"):
        med = g.groupby("gamma").final.median()
        rows.append({"study": name, "variant": variant, "measured_alpha": alpha, "alpha_over_2": alpha / 2,
                     "best_gamma": float(med.idxmin()), "best_median_final": float(med.min()),
                     "gammas": " ".join(f"{x:g}" for x in med.index)})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="results/evidence")
    ap.add_argument("--out", default="docs/results")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    pooled_rows, gamma_rows = [], []
    for path in sorted(glob.glob(os.path.join(args.root, "*", "study.json"))):
        study_dir = os.path.dirname(path)
        name = os.path.basename(study_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = analysis.load_study(study_dir, warn=False)
        pooled_rows.append(pooled(name, study.trials))
        # The per-setting headline of `python -m analysis` (best gamma per variant, 95% CIs,
        # Holm-corrected tests against the baseline), as committed tables.
        analysis.headline_table(analysis.compare(study)).to_csv(
            os.path.join(args.out, f"{name}_headline.csv"), index=False)
        alphas = list((study.meta.get("data_alpha") or {}).values())
        if name.startswith("synthetic") and alphas:
            gamma_rows.append(best_gamma(name, study.trials, alphas[0]))
        figure = os.path.join(study_dir, "report", "gamma_vs_final.png")
        if os.path.exists(figure):
            shutil.copy(figure, os.path.join(args.out, f"{name}_gamma_vs_final.png"))
    for fname, rows in (("pooled.csv", pooled_rows), ("best_gamma.csv", gamma_rows)):
        if rows:
            table = pd.concat(rows, ignore_index=True)
            table.to_csv(os.path.join(args.out, fname), index=False, float_format="%.5g")
            print(f"\n{fname}\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
