"""What the best trial of each headline variant actually draws: originals against its
reconstructions (at z = mu), from the trial's last checkpoint.

Each headline row (``compare``'s best setting per variant and context) names a group; its best
trial is the group's trial with the lowest final value of the study's metric. That trial's last
``checkpoint_*/*.ckpt`` (a Lightning checkpoint) is loaded with ``PowerLawVAE.load_from_checkpoint``
and its validation data rebuilt from its TrialConfig (``trial_config`` + ``plvae.data.load_data``).
Data is rebuilt per distinct data key only; the first ``n`` validation images (the validation
split is not shuffled) are the same for every variant that shares the data.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from analysis.columns import FINAL
from analysis.compare import Comparison
from analysis.groups import group_label, matching
from analysis.load import Study
from analysis.trial_fields import trial_config
from analysis.tune_files import TRIAL_ID

FIGURE_NAME = "reconstructions"
MAX_ROWS = 12   # headline rows drawn at most (one per variant and context)


def best_trials(study: Study, comparison: Comparison) -> pd.DataFrame:
    """One row per headline row: its variant, its group's best trial id and that trial's last
    checkpoint folder (None when the trial kept none)."""
    per, head = comparison.per_trial, comparison.headline
    rows = []
    if per is None or head is None or per.empty or head.empty:
        return pd.DataFrame(columns=["variant", TRIAL_ID, "last_checkpoint"])
    keys = [k for k in comparison.group_keys if k in per.columns and k in head.columns]
    ckpts = study.trials.set_index(TRIAL_ID).get("last_checkpoint")
    for _, h in head.iterrows():
        group = per[matching(per, keys, [h[k] for k in keys])]
        if group.empty:
            continue
        tid = group.assign(_f=group[FINAL].astype(float).fillna(np.inf)).sort_values("_f", kind="stable")[TRIAL_ID].iloc[0]
        ckpt = ckpts.get(tid) if ckpts is not None else None
        rows.append({"variant": h["variant"], TRIAL_ID: tid,
                     "label": group_label(h["variant"], h, [k for k in keys if k != "variant"]),
                     "last_checkpoint": None if ckpt is None or pd.isna(ckpt) else str(ckpt)})
    return pd.DataFrame(rows)


def _checkpoint_file(folder: Optional[str]) -> Optional[Path]:
    if not folder:
        return None
    files = sorted(Path(folder).glob("*.ckpt"))
    return files[0] if files else None


def reconstruct(study: Study, trial_id: str, checkpoint: Path, n: int = 8, _data_cache: Optional[dict] = None):
    """(originals, reconstructions at z = mu) of the first n validation images of a trial, from
    its checkpoint, as CPU tensors (n, C, H, W)."""
    import torch

    from plvae.data import data_key, load_data
    from plvae.model import PowerLawVAE

    cfg = trial_config(study, trial_id)
    cache = {} if _data_cache is None else _data_cache
    key = data_key(cfg)
    if key not in cache:
        cache[key] = load_data(cfg)
    val = np.asarray(cache[key].val[:n])
    x = torch.from_numpy(val.astype(np.float32) / 255.0 if val.dtype == np.uint8 else val.astype(np.float32))
    model = PowerLawVAE.load_from_checkpoint(str(checkpoint), map_location="cpu", cfg=cfg)
    model.eval()
    with torch.no_grad():
        return x, model(x)


def plot_reconstructions(study: Study, comparison: Comparison, n: int = 8):
    """A figure: for each headline variant's best trial, its reconstructions of the first n validation
    images under the originals. Returns (figure, None), or (None, reason) when nothing can be drawn
    (no headline, or no trial kept a checkpoint)."""
    from matplotlib.figure import Figure

    from plvae.callbacks import image_grid

    best = best_trials(study, comparison).head(MAX_ROWS)
    if best.empty:
        return None, "no headline rows to draw"
    have = [(r, _checkpoint_file(r["last_checkpoint"])) for r in best.to_dict("records")]
    missing = [r["label"] for r, f in have if f is None]
    have = [(r, f) for r, f in have if f is not None]
    if not have:
        return None, "no checkpoint in the best trials' folders (" + ", ".join(missing[:4]) + ")"
    cache, panels, last_key = {}, [], None
    from plvae.data import data_key

    for r, f in have:
        try:
            x, recon = reconstruct(study, r[TRIAL_ID], f, n, cache)
        except Exception as e:  # noqa: BLE001 - a damaged checkpoint or missing data: skip that row, say why
            missing.append(f"{r['label']} ({type(e).__name__}: {' '.join(str(e).split())[:80]})")
            continue
        key = data_key(trial_config(study, r[TRIAL_ID]))
        value_range = (float(x.min()), float(x.max()))
        if key != last_key:
            panels.append(("originals", image_grid(x, value_range=value_range)))
            last_key = key
        panels.append((f"{r['label']} (trial {r[TRIAL_ID]})", image_grid(recon, value_range=value_range)))
    if len(panels) < 2:
        return None, "no checkpoint could be loaded (" + "; ".join(missing[:4]) + ")"
    fig = Figure(figsize=(1.0 * n + 1, 1.25 * len(panels)))
    axes = fig.subplots(len(panels), 1, squeeze=False)
    for ax, (title, grid) in zip(axes[:, 0], panels):
        img = grid.permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                  vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=8, loc="left")
        ax.axis("off")
    if missing:
        fig.text(0.01, 0.0, "not drawn: " + "; ".join(missing[:4]), fontsize=6, va="bottom")
    fig.suptitle("Reconstructions at z = mu of each variant's best trial (last checkpoint)", fontsize=9)
    fig.tight_layout()
    return fig, None


def save_reconstructions(study: Study, comparison: Comparison, out, n: int = 8) -> tuple[Optional[Path], Optional[str]]:
    """Draw and save ``reconstructions.png`` into out: (its path, None) or (None, the reason)."""
    fig, reason = plot_reconstructions(study, comparison, n)
    if fig is None:
        return None, reason
    path = Path(out) / f"{FIGURE_NAME}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path, None
