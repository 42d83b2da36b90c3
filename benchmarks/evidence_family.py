"""README's headline family: the declared primary tests of several evidence studies corrected as ONE
family (issue 19), and the Markdown table README's Results quotes, both from primary.csv alone.

Each study's ``compare`` corrects its own primary family; the headline table spans all the studies,
so here the tests are corrected again, once: Holm over the distinct tests (``stats.holm_distinct``:
a test of a group identical by construction, ≡, counts once), per ``primary_family`` (a study's
study_config may name one; by default every study joins ``HEADLINE_FAMILY``). Beside each test:
the n it used (pairs where both finished for the final value) and the exact p floor a paired
sign-flip test has at that n (``stats.min_sign_flip_p``: 2 / 2^n).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.stats import holm_distinct, min_sign_flip_p

HEADLINE_FAMILY = "headline"   # the family every study's primary tests join unless it declares another
SIGNIFICANCE = 0.05


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def one_family(primary: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """The declared primary tests of several studies corrected as one family per ``primary_family``:
    Holm over the distinct tests (≡ duplicates of one study, quantity and context count once)."""
    if primary.empty:
        return primary
    out = primary.rename(columns={"p_holm": "p_holm_study", "significant": "significant_study"})
    out["family"] = [meta.get(s, {}).get("primary_family") or HEADLINE_FAMILY for s in out["study"]]
    ctx = [k for k in ("dataset", "latent_dim", "lr", "kl_coeff") if k in out]
    keys = [(r["study"], r["quantity"], *(str(r[k]) for k in ctx), r["equiv"]) if isinstance(r.get("equiv"), str)
            and r["equiv"] else ("row", i) for i, r in enumerate(out.to_dict("records"))]
    out["p_holm"], out["n_family"] = np.nan, 0
    for _, idx in out.groupby("family").groups.items():
        rows = list(out.index.get_indexer(idx))
        fam_keys = [keys[i] for i in rows]
        p = out["p"].to_numpy(float)[rows]
        out.loc[idx, "p_holm"] = holm_distinct(p, fam_keys)
        out.loc[idx, "n_family"] = len({k for k, v in zip(fam_keys, p) if not math.isnan(v)})
    out["significant"] = out["p_holm"] < SIGNIFICANCE
    n = out["n_both"].where(out["quantity"] == "final", out["n_pairs"]) if "n_both" in out else out["n_pairs"]
    out["n_used"] = n
    out["p_floor"] = [min_sign_flip_p(int(k)) if not _missing(k) and k >= 1 else math.nan for k in n]
    return out


def _g(x, digits: int = 2) -> str:
    """A number as README writes it: 2 significant digits with sign for effects, '–' for none."""
    if _missing(x):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:+.{digits}g}".replace("-", "−")


def _pv(x) -> str:
    return "–" if _missing(x) else f"{x:.2g}"


def family_markdown(primary: pd.DataFrame) -> str:
    """README's primary table, from primary.csv alone: one row per study and lr, every number the
    one family's (Holm over all studies), with n and the exact p floor stated."""
    if primary.empty:
        return ""
    rows = []
    for (study, lr), g in primary.groupby(["study", "lr"], sort=True):
        q = {r["quantity"]: r for r in g[g["variant"] == "powerlaw_clamp"].to_dict("records")}
        cells = {"data": study, "lr": f"{lr:g}"}
        f = q.get("final")
        if f is not None:
            ratio = "" if _missing(f.get("ratio")) else f" (×{f['ratio']:.3g})"
            cells["final: median paired difference [CI, exact coverage]"] = (
                f"{_g(f['diff'])} [{_g(f['diff_low'])}, {_g(f['diff_high'])}; {100 * f['diff_coverage']:.1f}%]{ratio}"
                if not _missing(f.get("diff_coverage")) else _g(f["diff"]) + ratio)
            cells["n both"] = f"{int(f['n_both'])}" if not _missing(f.get("n_both")) else "–"
            cells["p / floor"] = f"{_pv(f['p'])} / {_pv(f['p_floor'])}"
            cells["Holm p (family)"] = _pv(f["p_holm"]) + (f", **{f['direction']}**" if f["significant"] else "")
        t = q.get("epochs_to_target")
        cells["epochs to target: speed-up [CI], Gehan p (Holm)"] = "–" if t is None else (
            (f"×{t['speedup']:.2g} [{t['speedup_low']:.2g}, {t['speedup_high']:.2g}]" if not _missing(t["speedup"])
             else "neither median reached") + f", {_pv(t['p'])} ({_pv(t['p_holm'])})"
            + ({"worse": ", slower", "better": ", faster"}.get(t.get("direction"), "") if t["p"] < SIGNIFICANCE else ""))
        d = q.get("diverged")
        cells["diverged, clamp vs vae: McNemar p (Holm)"] = "–" if d is None else (
            f"{d['estimate'] * d['n']:.0f}/{d['n']} vs {d['baseline_estimate'] * d['n_baseline']:.0f}/{d['n_baseline']}, "
            f"{_pv(d['p'])} ({_pv(d['p_holm'])})")
        gap = q.get("distortion_gap")
        cells["distortion gap, p (Holm)"] = "–" if gap is None or _missing(gap["p"]) else (
            f"{_g(gap['diff'])}, {_pv(gap['p'])} ({'from survivors' if gap.get('from_survivors') else _pv(gap['p_holm'])})")
        rows.append(cells)
    table = pd.DataFrame(rows).fillna("–")
    n = int(primary["n_family"].max())
    lines = [f"One family of {n} distinct tests over {primary['study'].nunique()} studies (≡ duplicates once). "
             f"The exact p floor of a paired test at 10 pairs is 2/2¹⁰ = {min_sign_flip_p(10):.5f}, so the "
             f"smallest Holm p this family can give is {min(1.0, n * min_sign_flip_p(10)):.3g}.", "",
             "| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"
