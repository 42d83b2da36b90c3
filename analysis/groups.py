"""Groups and contexts: which trials are one configuration, which context they are compared in,
how a group or context is written, and which groups are identical by construction.

Groups are variant x prior parameters (only those a variant uses) within a *context* (dataset,
latent_dim, lr, kl_coeff and any other swept setting); seeds are the replicates. Rows are matched
NaN-equal: a prior parameter a variant does not use is NaN in every one of its rows, and NaN must
match NaN (``same``, ``matching``).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from plvae.priors import PRIOR_FIELDS, VARIANTS, W2, prior_scale

from analysis.columns import (CONTEXT_FIRST, NON_EXPERIMENTAL, REPLICATE_PARAMS, SYMBOLS, missing, num)


def keys(trials: pd.DataFrame, swept: list) -> tuple[list, list]:
    """(context keys, variant keys) of a trials table: the group keys are their concatenation."""
    variant_params = [p for p in PRIOR_FIELDS if p in trials.columns]
    context = [c for c in CONTEXT_FIRST if c in trials.columns]
    context += [c for c in swept if c not in context and c != "variant" and c not in PRIOR_FIELDS
                and c not in REPLICATE_PARAMS and c not in NON_EXPERIMENTAL]
    return context, ["variant", *variant_params]


def group_key(values) -> tuple:
    """A group key with nan as None: tuples holding nan never compare equal (nan != nan)."""
    return tuple(None if missing(v) else v for v in values)


def unkey(group_keys: list, key: tuple) -> dict:
    """A group key back to {name: value}, None as nan."""
    return {k: (math.nan if v is None else v) for k, v in zip(group_keys, key)}


def masked(trials: pd.DataFrame) -> pd.DataFrame:
    """Prior parameters a variant does not use are set to nan, so (for example) the baseline's
    trials at every gamma form one group, and powerlaw's at every min_decay another."""
    out = trials.copy()
    for p in PRIOR_FIELDS:
        if p not in out.columns:
            continue
        unused = out["variant"].map(lambda v, p=p: v in VARIANTS and not VARIANTS[v].uses(p))
        col = pd.Series(pd.to_numeric(out[p], errors="coerce").astype("Float64")
                        .to_numpy(dtype=float, na_value=np.nan), index=out.index)
        out[p] = col.mask(unused.astype(bool))
    return out


def same(a, b) -> bool:
    """a == b, with NaN equal to NaN."""
    try:
        return bool((a == b) or (pd.isna(a) and pd.isna(b)))
    except (TypeError, ValueError):
        return a is b


def matching(df: pd.DataFrame, keys: list, values) -> np.ndarray:
    """A boolean mask of the rows of df whose `keys` equal `values` (NaN-equal); a key df lacks
    is not a condition."""
    mask = np.ones(len(df), dtype=bool)
    for k, v in zip(keys, values):
        if k in df:
            mask &= np.fromiter((same(x, v) for x in df[k]), dtype=bool, count=len(df))
    return mask


def match(df: pd.DataFrame, keys: list, values) -> pd.DataFrame:
    """The rows of df whose `keys` equal `values` (NaN-equal); its columns even when none match."""
    # a boolean array, never an (empty, object-dtype) Series: pandas would take that for columns
    return df.loc[matching(df, keys, values)]


def contexts(df: pd.DataFrame, keys: list) -> list:
    """[(context tuple, rows)] grouped by the keys df has, sorted; one ((), df) without keys."""
    keys = [k for k in keys if k in df]
    if not keys:
        return [((), df)]
    return [(c if isinstance(c, tuple) else (c,), g) for c, g in df.groupby(keys, dropna=False, sort=True)]


def value_text(v) -> str:
    """A number as ``:g`` (not a bool), anything else as str."""
    return f"{v:g}" if isinstance(v, (int, float, np.number)) and not isinstance(v, (bool, np.bool_)) else f"{v}"


def context_text(keys: list, ctx, sep: str = "=", empty: str = "") -> str:
    """A context as text, e.g. 'lr=0.001, latent_dim=16' (``sep=" "``: 'lr 0.001, ...')."""
    ctx = ctx if isinstance(ctx, tuple) else (ctx,)
    return ", ".join(f"{k}{sep}{value_text(v)}" for k, v in zip(keys, ctx)) or empty


def setting_text(rec: dict, params=PRIOR_FIELDS) -> str:
    """The parameters a group sets, e.g. 'γ=1, min_decay=0.001' ('' when none)."""
    return ", ".join(f"{SYMBOLS.get(p, p)}={value_text(rec[p])}" for p in params if p in rec and not missing(rec[p]))


def group_label(variant: str, rec: dict, params=PRIOR_FIELDS) -> str:
    """A group as 'variant (γ=…, …)', or the variant alone when it sets no parameter."""
    s = setting_text(rec, params)
    return variant + (f" ({s})" if s else "")


def objective(variant: str) -> str:
    """'w2' for a variant that optimises a W2 objective, else 'kl'."""
    v = VARIANTS.get(variant)
    return "w2" if v is not None and v.divergence == W2 else "kl"


def _opt(x, kind=float):
    v = num(x)
    return None if math.isnan(v) else kind(v)


def equivalences(group_trials: dict, group_keys: list, context_keys: list) -> dict:
    """{group key: "a ≡ b"} for groups of one context whose configurations are identical by
    construction: the same prior scales s, sampling and divergence (e.g. powerlaw_clamp whose
    floor min_decay is never reached within latent_dim equals powerlaw)."""
    sig = {}
    for key, g in group_trials.items():
        r = g.iloc[0].to_dict()
        v = VARIANTS.get(r["variant"])
        if v is None:
            continue
        try:
            s = prior_scale(r["variant"], int(r.get("latent_dim", 16)), float(num(r.get("gamma"), 0.0)),
                            _opt(r.get("min_decay")), _opt(r.get("clip_dim"), int), _opt(r.get("decay_rate")))
        except (ValueError, TypeError):
            continue
        sampled = v.decayed_sampling and not bool(np.allclose(s.numpy(), 1.0))
        sig[key] = (key[:len(context_keys)], tuple(np.round(s.double().numpy(), 12)), sampled, v.divergence)
    by_sig = {}
    for key, sg in sig.items():
        by_sig.setdefault(sg, []).append(key)
    out = {}
    for ks in by_sig.values():
        if len(ks) < 2:
            continue
        recs = [dict(zip(group_keys, k)) for k in sorted(ks, key=str)]
        label = " ≡ ".join(group_label(r["variant"], r) for r in recs)
        for k in ks:
            out[k] = label
    return out
