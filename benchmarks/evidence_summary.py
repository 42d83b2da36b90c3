"""The evidence behind README's "Results", regenerated from the studies or from the committed CSV.

    python benchmarks/evidence_summary.py [--root results/evidence] [--out docs/results]
    python benchmarks/evidence_summary.py --from-csv            # only what docs/results/ holds

Step 1 (needs the study folders under --root, from `bash benchmarks/run_evidence.sh`): export
every trial to ``trials.csv`` - one row per trial: its study, parameters and seed, its curves
(val_loss from epoch 0 = before training, val_recon_mu, val_rate, Tune's time_total_s and train_time_s per
epoch), final and best
val_loss, distortion, rate, diverged (and when), and epochs to the baseline's final val_loss -
plus ``studies.json`` (each study's declared primary family, measured alpha, preset). That CSV
is the evidence: small enough to commit, and everything else is computed from it.

Step 2 (always, from ``trials.csv`` alone): rebuild each study with
``analysis.Study.from_history`` and compare it (``analysis.compare``, on val_loss, paired by
seed, Holm over the preset's primary family) into:
- ``primary.csv``: the declared primary comparisons of every study (paired effect, CI, p), corrected
  as ONE family over all the studies that declare the same ``primary_family`` (study.json's
  study_config; default: one family over every study): Holm over the distinct tests (a test of a
  group identical by construction, ≡, counts once), with its size ``n_family``, each test's n and
  the exact p floor a paired sign-flip test has at that n (``p_floor``, 2 / 2^n) beside it; the
  per-study Holm p is kept as ``p_holm_study``;
- ``headline.csv``: each variant's best setting per context (exploratory, selected on the seeds
  it reports) and ``split.csv``: the best gamma chosen on half the seeds, reported on the other;
- ``groups.csv``: every group with its rate, distortion and distortion gap at equal rate;
- ``frontier.csv``: the baseline's rate-distortion points over beta;
- ``clamp.csv``: where the clamp matters - powerlaw_clamp against powerlaw seed by seed, by
  latent_dim, min_decay, gamma and lr, with the share of latent dims the floor holds;
- ``stability.csv``: exploratory - each KL setting against vae at the same lr, latent_dim, beta
  and seed, pooled over latent_dim: paired divergences and the exact McNemar test;
- ``divergence.csv``: diverged trials per study, lr, latent_dim and variant (all settings pooled);
- ``best_gamma.csv``: per synthetic alpha and lr, the gamma with the lowest median final
  val_loss for powerlaw and powerlaw_clamp, against the measured alpha / 2;
- ``alpha.csv``: the natural_patches exponent with a bootstrap CI over patch draws, its
  sensitivity to the fit range and to which photos are measured (computed from the data);
- figures: the rate-distortion plane and gamma against final val_loss, per study;
- the tuned-against-tuned evidence (issue 18; benchmarks/tuned_evidence.py): from the studies under
  --tuned-root, ``tuned_trials.csv`` (tuning and evaluation seeds marked) and ``tuned_studies.json``;
  from them, ``tuned_picks.csv``, ``tuned_comparison.csv``, ``stable_lr.csv``, ``lr_sensitivity.csv``
  and each study's ``<study>_lr_sensitivity.png``.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import os
import warnings

import numpy as np
import pandas as pd

import analysis
from analysis.compare import EPOCHS_TO_TARGET, data_alpha_gamma
from analysis.figures import DPI, plot_divergence, plot_gamma_vs_final, plot_rate_distortion
from analysis.load import best, final
from analysis.report import csv_tables
from analysis.stats import bootstrap_ci, median_inf, paired_differences, wilcoxon_paired
from evidence_family import HEADLINE_FAMILY, family_markdown, one_family
from tuned_evidence import read_tuned, summarise_tuned, write_tuned
from plvae import metrics as M
from plvae.priors import PRIOR_FIELDS, matched_gamma, prior_scale

CURVES = (M.VAL_LOSS, M.VAL_RECON_MU, M.VAL_RATE, "time_total_s", M.TRAIN_TIME_S)
PARAMS = ("variant", *PRIOR_FIELDS, "latent_dim", "lr", "kl_coeff", "seed", "dataset", "data_alpha", "image_size",
          "max_epochs", "data_seed", "warmup_steps", "grad_clip_norm", "channels", "n_train", "batch_size")
TRIALS_CSV, STUDIES_JSON = "trials.csv", "studies.json"
N_RESAMPLES = 2000


# ------------------------------------------------------------------------------ step 1: export
def _col(metric: str, epoch: int) -> str:
    return f"{metric}@{epoch}"


def export_trials(root: str) -> tuple[pd.DataFrame, dict]:
    """Every trial of every study under root as one row (see the module docstring)."""
    rows, meta = [], {}
    for path in sorted(glob.glob(os.path.join(root, "*", "study.json"))):
        study_dir = os.path.dirname(path)
        name = os.path.basename(study_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            study = analysis.load_study(study_dir, warn=False)
        cfg = study.meta.get("study_config") or {}
        alpha, gamma = data_alpha_gamma(study)
        meta[name] = {"preset": study.meta.get("preset"), "primary": cfg.get("primary") or [],
                      "primary_family": cfg.get("primary_family") or HEADLINE_FAMILY,
                      "data_alpha": alpha, "data_gamma": gamma, "status": study.status,
                      "max_epochs": study.meta.get("max_epochs"), "n_trials": len(study.trials)}
        c = analysis.compare(study, n_resamples=200)
        to_target = c.per_trial.set_index("trial_id")[EPOCHS_TO_TARGET]
        hist = {tid: h.sort_values("training_iteration") for tid, h in study.history.groupby("trial_id")}
        for t in study.trials.to_dict("records"):
            rows.append(trial_row(name, t, hist.get(t["trial_id"]), to_target.get(t["trial_id"], math.nan)))
    return pd.DataFrame(rows), meta


def trial_row(name: str, t: dict, h, to_target: float = math.nan) -> dict:
    """One trial as one row: its study, parameters, outcome, and its curves per epoch (``metric@epoch``)."""
    row = {"study": name, "trial_id": t["trial_id"], "status": t["status"],
           **{p: t.get(p) for p in PARAMS}, "epochs": t["epochs"], "diverged": bool(t["diverged"]),
           "diverged_epoch": t["diverged_epoch"],
           "final_val_loss": t.get(final(M.VAL_LOSS)),
           "best_val_loss": t.get(best(M.VAL_LOSS)),
           "final_val_recon_mu": t.get(final(M.VAL_RECON_MU)),
           "final_val_rate": t.get(final(M.VAL_RATE)),
           "epochs_to_target": to_target,
           _col(M.VAL_LOSS, 0): t.get(M.INITIAL_VAL_LOSS)}
    if h is not None:
        for r in h.to_dict("records"):
            for m in CURVES:
                row[_col(m, int(r["training_iteration"]))] = r.get(m)
    return row


# ------------------------------------------------------------------------------ step 2: rebuild
def rebuild(trials: pd.DataFrame, meta: dict) -> dict:
    """{study name: analysis.Study} from trials.csv alone (curves, parameters, study metadata)."""
    studies = {}
    for name, t in trials.groupby("study", sort=True):
        hist, params = [], []
        for r in t.to_dict("records"):
            params.append({"trial_id": r["trial_id"], **{p: r[p] for p in PARAMS if p in r and not _missing(r[p])}})
            epochs = sorted({int(c.split("@")[1]) for c in r if "@" in c and not _missing(r[c])} - {0})
            for e in epochs:
                row = {"trial_id": r["trial_id"], "training_iteration": e,
                       M.DIVERGED: float(bool(r["diverged"]) and not _missing(r["diverged_epoch"])
                                         and e >= r["diverged_epoch"]),
                       M.INITIAL_VAL_LOSS: r[_col(M.VAL_LOSS, 0)]}
                row.update({m: r.get(_col(m, e), math.nan) for m in CURVES})
                hist.append(row)
        m = meta.get(name, {})
        study_meta = {"status": "finished", "metric": M.VAL_LOSS, "study_name": name, "preset": m.get("preset"),
                      "study_config": {"primary": m.get("primary") or []}, "max_epochs": m.get("max_epochs")}
        if m.get("data_alpha") is not None and not _missing(m.get("data_alpha")):
            study_meta["data_alpha"] = {str(t["dataset"].iloc[0]): m["data_alpha"]}
        if m.get("data_gamma") is not None and not _missing(m.get("data_gamma")):
            for p in params:
                p["extra"] = {"data_gamma": m["data_gamma"], "data_alpha": m.get("data_alpha")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            studies[name] = analysis.Study.from_history(pd.DataFrame(hist), pd.DataFrame(params), meta=study_meta)
    return studies


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ------------------------------------------------------------------------------ summaries
def clamp_table(name: str, study: analysis.Study) -> pd.DataFrame:
    """powerlaw_clamp against powerlaw with the same gamma, latent_dim, lr and seed: the median
    paired difference of final val_loss (diverged = +inf), divergences, and how much of the
    latent the floor holds (latent dims with k^-gamma < min_decay)."""
    t = study.trials
    loss = final(M.VAL_LOSS)
    t = t.assign(final=np.where(t["diverged"].astype(bool) | ~np.isfinite(t[loss].astype(float)), np.inf, t[loss]))
    keys = ["gamma", "latent_dim", "lr", "seed"]
    base = t[t.variant == "powerlaw"][keys + ["final", "diverged"]]
    rows = []
    for (gamma, d, md, lr), g in t[t.variant == "powerlaw_clamp"].groupby(["gamma", "latent_dim", "min_decay", "lr"]):
        pairs = g[keys + ["final", "diverged"]].merge(base, on=keys, suffixes=("", "_pl"))
        if pairs.empty:
            continue
        s = prior_scale("powerlaw", int(d), float(gamma)).numpy()
        diff = paired_differences(pairs["final"], pairs["final_pl"])
        e = bootstrap_ci(diff, median_inf, n_resamples=N_RESAMPLES)
        rows.append({"study": name, "gamma": gamma, "latent_dim": int(d), "min_decay": md, "lr": lr,
                     "clamped_dims": int((s < md).sum()), "identical": bool((s >= md).all()), "pairs": len(pairs),
                     "clamp_median": float(np.median(pairs["final"])), "powerlaw_median": float(np.median(pairs["final_pl"])),
                     "diff": e.value, "diff_low": e.low, "diff_high": e.high,
                     "p": wilcoxon_paired(pairs["final"], pairs["final_pl"]).pvalue,
                     "clamp_diverged": int(pairs["diverged"].sum()), "powerlaw_diverged": int(pairs["diverged_pl"].sum())})
    return pd.DataFrame(rows)


def stability_table(name: str, study: analysis.Study) -> pd.DataFrame:
    """Exploratory, pooled over latent_dim: each KL setting (variant, gamma, min_decay, ...) against
    vae at the same lr, latent_dim, beta and seed - divergences in the paired runs and the exact
    McNemar test on the discordant pairs (more pairs than any one latent size has)."""
    from analysis.stats import mcnemar_exact
    from plvae.priors import KL, VARIANTS

    t = study.trials
    keys = [k for k in ("lr", "latent_dim", "kl_coeff", "seed") if k in t]
    base = t[t.variant == "vae"][keys + ["diverged"]]
    params = [p for p in PRIOR_FIELDS if p in t]
    rows = []
    kl = t[t.variant.map(lambda v: v != "vae" and VARIANTS[v].divergence == KL)]
    for (variant, *setting), g in kl.groupby(["variant", *params], dropna=False):
        v = VARIANTS[variant]
        for lr, gl in g.groupby("lr"):
            pairs = gl[keys + ["diverged"]].merge(base, on=keys, suffixes=("", "_vae"))
            if pairs.empty:
                continue
            res = mcnemar_exact(pairs["diverged"].astype(bool), pairs["diverged_vae"].astype(bool))
            rows.append({"study": name, "lr": lr, "variant": variant,
                         **{p: val for p, val in zip(params, setting) if v.uses(p)},
                         "latent_dims": " ".join(str(d) for d in sorted(pairs["latent_dim"].unique())),
                         "pairs": len(pairs), "diverged": int(pairs["diverged"].sum()),
                         "vae_diverged": int(pairs["diverged_vae"].sum()), "p_mcnemar": res.pvalue,
                         "family": "exploratory"})
    return pd.DataFrame(rows)


def divergence_table(name: str, study: analysis.Study) -> pd.DataFrame:
    t = study.trials
    rows = []
    for (lr, d, variant), g in t.groupby(["lr", "latent_dim", "variant"]):
        rows.append({"study": name, "lr": lr, "latent_dim": d, "variant": variant, "trials": len(g),
                     "diverged": int(g["diverged"].sum())})
    return pd.DataFrame(rows)


def best_gamma_table(name: str, study: analysis.Study, alpha: float) -> pd.DataFrame:
    t = study.trials
    loss = final(M.VAL_LOSS)
    t = t.assign(final=np.where(t["diverged"].astype(bool), np.inf, t[loss]))
    if "kl_coeff" in t:
        t = t[np.isclose(t["kl_coeff"].astype(float), 0.1)]
    rows = []
    for (lr, variant), g in t[t.variant.isin(["powerlaw", "powerlaw_clamp"])].groupby(["lr", "variant"]):
        if variant == "powerlaw_clamp":
            g = g[np.isclose(g["min_decay"].astype(float), 1e-3)]
        med = g.groupby("gamma")["final"].median()
        vae = t[(t.variant == "vae") & (t.lr == lr)]["final"]
        rows.append({"study": name, "lr": lr, "variant": variant, "measured_alpha": alpha,
                     "alpha_over_2": matched_gamma(alpha), "best_gamma": float(med.idxmin()),
                     "best_median_final": float(med.min()), "vae_median_final": float(np.median(vae)),
                     "gammas": " ".join(f"{x:g}" for x in med.index),
                     "medians": " ".join(f"{x:.5g}" for x in med.to_numpy())})
    return pd.DataFrame(rows)


def alpha_table(n_draws: int = 20) -> pd.DataFrame:
    """The natural_patches exponent, honestly: over patch draws (data_seed 0..n_draws-1) of the
    training photos, the fit range, and which photos are measured."""
    from plvae.config import TrialConfig
    from plvae.data import NATURAL_PHOTOS, NATURAL_TRAIN_PHOTOS, NATURAL_VAL_PHOTOS, cut_patches
    from plvae.spectrum import eigenspectrum, fit_power_law

    cfg = TrialConfig(dataset="natural_patches", image_size=16, channels=1, n_train=2048)

    def alpha(photos, seed, kmin=2, kmax=None):
        x = cut_patches(list(photos), 2048, cfg, np.random.SeedSequence(seed).spawn(2)[0])
        return fit_power_law(eigenspectrum(x.reshape(len(x), -1)), kmin=kmin, kmax=kmax).alpha

    rows = []
    draws = np.array([alpha(NATURAL_TRAIN_PHOTOS, s) for s in range(n_draws)])
    lo, hi = np.quantile(draws, [0.025, 0.975])
    rows.append({"what": "training photos, the study's draw (data_seed 0; gamma = alpha/2 is matched to this)",
                 "photos": "train", "fit_ranks": "2..128", "alpha": float(draws[0]), "low": math.nan, "high": math.nan})
    rows.append({"what": f"training photos over {n_draws} patch draws (median, 2.5-97.5% of draws)", "photos": "train",
                 "fit_ranks": "2..128", "alpha": float(np.median(draws)), "low": float(lo), "high": float(hi)})
    for kmax in (64, 256):
        rows.append({"what": "training photos, fit range", "photos": "train", "fit_ranks": f"2..{kmax}",
                     "alpha": alpha(NATURAL_TRAIN_PHOTOS, 0, kmax=kmax), "low": math.nan, "high": math.nan})
    for label, photos in (("validation photos", NATURAL_VAL_PHOTOS), ("all photos", NATURAL_PHOTOS)):
        rows.append({"what": label, "photos": label.split()[0], "fit_ranks": "2..128", "alpha": alpha(photos, 0),
                     "low": math.nan, "high": math.nan})
    singles = {p: alpha([p], 0) for p in NATURAL_PHOTOS}
    lo_p, hi_p = min(singles, key=singles.get), max(singles, key=singles.get)
    rows.append({"what": f"single photos: lowest ({lo_p}) to highest ({hi_p})", "photos": "single",
                 "fit_ranks": "2..128", "alpha": float(np.median(list(singles.values()))),
                 "low": singles[lo_p], "high": singles[hi_p]})
    return pd.DataFrame(rows)


def _subset(c, **where):
    """The comparison restricted to some context values (a figure of one latent size)."""
    def keep(df):
        for k, v in where.items():
            if isinstance(df, pd.DataFrame) and k in df.columns:
                df = df[df[k] == v]
        return df
    return dataclasses.replace(c, groups=keep(c.groups), frontier=keep(c.frontier), headline=keep(c.headline),
                               per_trial=keep(c.per_trial), tests=keep(c.tests))


def _save(fig, path: str) -> None:
    if fig is not None:
        fig.savefig(path, format="png", dpi=DPI)


def summarise(trials: pd.DataFrame, meta: dict, out: str, alpha: bool = True) -> None:
    studies = rebuild(trials, meta)
    tables = {k: [] for k in ("primary", "headline", "split", "groups", "frontier", "clamp", "stability",
                              "divergence", "best_gamma")}
    for name, study in studies.items():
        c = analysis.compare(study, n_resamples=N_RESAMPLES)
        csvs = csv_tables(c)
        for key in ("primary", "headline", "split", "groups", "frontier"):
            df = csvs.get(f"{key}.csv")
            if df is not None and len(df):
                tables[key].append(df.assign(study=name))
        tables["clamp"].append(clamp_table(name, study))
        tables["divergence"].append(divergence_table(name, study))
        tables["stability"].append(stability_table(name, study))
        a = meta.get(name, {}).get("data_alpha")
        if name.startswith("synthetic") and a is not None and not _missing(a):
            tables["best_gamma"].append(best_gamma_table(name, study, float(a)))
        _save(plot_rate_distortion(c), os.path.join(out, f"{name}_rate_distortion.png"))
        if "latent_dim" in c.frontier and c.groups["latent_dim"].nunique() > 1:
            for d in sorted(c.frontier["latent_dim"].unique()):   # the latent sizes with a beta frontier
                sub = _subset(c, latent_dim=d)
                _save(plot_rate_distortion(sub), os.path.join(out, f"{name}_d{d}_rate_distortion.png"))
                _save(plot_gamma_vs_final(sub), os.path.join(out, f"{name}_d{d}_gamma_vs_final.png"))
        _save(plot_gamma_vs_final(c), os.path.join(out, f"{name}_gamma_vs_final.png"))
        _save(plot_divergence(c), os.path.join(out, f"{name}_divergence.png"))
    for key, parts in tables.items():
        parts = [p for p in parts if len(p)]
        if not parts:
            continue
        df = pd.concat(parts, ignore_index=True)
        if key == "primary":
            df = one_family(df, meta)
            with open(os.path.join(out, "primary.md"), "w") as f:
                f.write(family_markdown(df))
        df = df[["study", *[c for c in df.columns if c != "study"]]]
        df.to_csv(os.path.join(out, f"{key}.csv"), index=False, float_format="%.6g")
        print(f"{key}.csv: {len(df)} rows")
    if alpha:
        a = alpha_table()
        a.to_csv(os.path.join(out, "alpha.csv"), index=False, float_format="%.4g")
        print("\nalpha.csv\n" + a.to_string(index=False))


def read_inputs(csv_path: str, meta_path: str) -> tuple[pd.DataFrame, dict]:
    """trials.csv and studies.json as step 1 wrote them, or SystemExit with one line: unreadable,
    cut short (no final newline, or fewer rows than studies.json counts per study), or missing the
    columns the rebuild reads."""
    def refuse(why: str):
        raise SystemExit(f"error: {why}; allowed: the {TRIALS_CSV} and {STUDIES_JSON} step 1 writes "
                         f"(run without --from-csv to write them again)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        with open(csv_path, "rb") as f:
            raw = f.read()
        trials = pd.read_csv(csv_path)
    except (OSError, ValueError, pd.errors.ParserError) as e:   # EmptyDataError and JSONDecodeError are ValueErrors
        refuse(f"{e.__class__.__name__}: {' '.join(str(e).split())[:200]}")
    if not isinstance(meta, dict) or not all(isinstance(m, dict) for m in meta.values()):
        refuse(f"{meta_path} is not a JSON object of studies")
    if not raw.endswith(b"\n"):
        refuse(f"{csv_path} is cut short (its last row has no end)")
    need = {"study", "trial_id", "status", "diverged", "diverged_epoch", _col(M.VAL_LOSS, 0)}
    if need - set(trials.columns):
        refuse(f"{csv_path} lacks the column(s) {', '.join(sorted(need - set(trials.columns)))}")
    counts = trials["study"].value_counts()
    short = [f"{name} ({int(counts.get(name, 0))} of {m['n_trials']} trials)" for name, m in meta.items()
             if isinstance(m.get("n_trials"), int) and counts.get(name, 0) != m["n_trials"]]
    if short:
        refuse(f"{csv_path} does not hold the trials {STUDIES_JSON} counts: {', '.join(short)}")
    return trials, meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default="results/evidence", help="the study folders (step 1)")
    ap.add_argument("--out", default="docs/results")
    ap.add_argument("--from-csv", action="store_true", help=f"skip step 1: use OUT/{TRIALS_CSV} and OUT/{STUDIES_JSON}")
    ap.add_argument("--tuned-root", default="results/tuned",
                    help="the tuned-against-tuned study folders (issue 18; step 1, where it holds any)")
    ap.add_argument("--no-alpha", action="store_true", help="skip alpha.csv (it loads the photos)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    csv_path, meta_path = os.path.join(args.out, TRIALS_CSV), os.path.join(args.out, STUDIES_JSON)
    if not args.from_csv:
        if not glob.glob(os.path.join(args.root, "*", "study.json")):
            raise SystemExit(f"error: root={args.root!r} holds no study; allowed: the folder "
                             f"benchmarks/run_evidence.sh wrote, or --from-csv")
        trials, meta = export_trials(args.root)
        trials.to_csv(csv_path, index=False, float_format="%.7g")
        with open(meta_path, "w") as f:
            json.dump(meta, f, indent=1, default=float)
        print(f"{TRIALS_CSV}: {len(trials)} trials from {len(meta)} studies")
        write_tuned(args.tuned_root, args.out, trial_row)
    trials, meta = read_inputs(csv_path, meta_path)
    summarise(trials, meta, args.out, alpha=not args.no_alpha)
    tuned_inputs = read_tuned(args.out)
    if tuned_inputs is not None:
        summarise_tuned(*tuned_inputs, args.out, rebuild, _save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
