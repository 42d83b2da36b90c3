"""TrialConfig's fields in a table and back: the dtypes the trials table gives them, which of them a
study swept, and the TrialConfig a trial ran with, rebuilt from its row."""
from __future__ import annotations

import json
import typing

import numpy as np
import pandas as pd

from plvae.config import TrialConfig

from analysis.columns import KEY_PARAMS, STUDY
from analysis.tune_files import TRIAL_ID

if typing.TYPE_CHECKING:
    from analysis.load import Study


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """Give TrialConfig fields their declared dtypes (float, int, bool, str; Optional -> nullable);
    lists become tuples and dicts JSON strings, so every column is hashable for grouping."""
    hints = typing.get_type_hints(TrialConfig)
    for col in df.columns:
        s = df[col]
        if s.map(lambda v: isinstance(v, (list, tuple))).any():
            df[col] = s.map(lambda v: tuple(v) if isinstance(v, (list, tuple)) else v)
            continue
        if s.map(lambda v: isinstance(v, dict)).any():
            df[col] = s.map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v)
            continue
        hint = hints.get(col)
        base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Union else hint
        try:
            if base is float:
                df[col] = pd.to_numeric(s, errors="coerce").astype(float)
            elif base is int:
                v = pd.to_numeric(s, errors="coerce")
                df[col] = v.astype("int64") if v.notna().all() else v.astype("Int64")
            elif base is bool and s.notna().all():
                df[col] = s.astype(bool)
        except (TypeError, ValueError):
            pass
    return df


def swept_params(trials: pd.DataFrame) -> list[str]:
    """Config fields with more than one distinct value among the trials (variant always), and the
    ``study`` column of several studies loaded together, first: each study is its own context."""
    fields = [c for c in trials.columns if c in TrialConfig.field_names() or c in ("variant", STUDY)]
    out = []
    for c in fields:
        try:
            n = trials[c].nunique(dropna=False)
        except TypeError:
            n = trials[c].astype(str).nunique()
        if c == "variant" or n > 1:
            out.append(c)
    return sorted(out, key=lambda c: (KEY_PARAMS.index(c) if c in KEY_PARAMS else len(KEY_PARAMS), c))


def trial_config(study: "Study", trial_id: str) -> TrialConfig:
    """The TrialConfig a trial ran with, rebuilt from its row of the trials table (for
    re-running a trial or loading its data in a notebook)."""
    row = study.trials.loc[study.trials[TRIAL_ID] == trial_id]
    if row.empty:
        raise ValueError(f"trial_id={trial_id!r} is not in this study")
    row = row.iloc[0]
    hints = typing.get_type_hints(TrialConfig)
    d = {}
    for name in TrialConfig.field_names():
        if name not in row.index:
            continue
        v = row[name]
        if name == "extra" and isinstance(v, str):
            v = json.loads(v)
        elif isinstance(v, tuple):
            v = list(v)
        elif v is None or (not isinstance(v, (list, dict)) and pd.isna(v)):
            v = None
        elif isinstance(v, np.generic):
            v = v.item()
        if v is None and typing.get_origin(hints[name]) is not typing.Union:
            continue  # a missing required field: keep TrialConfig's default
        if hints[name] is float and isinstance(v, int):
            v = float(v)
        d[name] = v
    return TrialConfig.from_dict(d)
