"""Eigen-spectrum of a dataset (or of latent codes) and its power-law fit.

Real images spread out as a power law: the covariance eigenvalues, sorted, follow
λ_k ≈ C·k^(−α). This module measures λ_k fast and accurately and fits α.

    eigs = eigenspectrum(X)            # X: (n, d) or (n, C, H, W), numpy or torch
    fit = fit_power_law(eigs)          # least squares in log-log over ranks 2..d//2
    fit.alpha, fit.r2, fit.predict(k)

Why a Gram matrix and not an SVD: the spectrum needs only eigenvalues, and the Gram matrix
(XᵀX when d <= n, XXᵀ otherwise) is one BLAS-3 pass over the data followed by a small symmetric
eigenproblem; a full SVD (what sklearn's PCA does) also builds the singular vectors and is
several times slower (benchmarks/bench_spectrum.py).

Why it is still accurate: the data are centred in float64 and rounded once to float32, the Gram
is accumulated in float64 over blocks of a few thousand rows (so float32 rounding never sums
over more than one block), and the eigensolver runs in float64. The float32 products cost
half of float64 ones; the float64 accumulation costs a few percent. float32 still
leaves a noise floor near 1e-7·λ₁, so a spectrum that reaches below 1e-5·λ₁ (steep, or
rank-deficient data) is redone with float64 products (``precision="auto"``).

Command line: ``python -m plvae.spectrum DATASET [--image-size N ...]`` prints α and R² of a
dataset's training split and saves a log-log figure.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import scipy.stats

# Elements (not bytes) of the work block: 2**24 floats = 64 MiB in float32. Big enough that the
# products run at full BLAS speed, small enough that no full copy of X is ever made.
BLOCK_ELEMENTS = 2 ** 24

# Dtypes of the Gram products (eigenspectrum's `precision`); accumulation is always float64.
PRECISIONS = {"float32": np.float32, "float64": np.float64}

# A float32 Gram puts a noise floor near 1e-7·λ₁ under the eigenvalues: below 1e-5·λ₁ their
# relative error can exceed ~1%. precision="auto" recomputes in float64 when a spectrum reaches
# down there (steep spectra, rank-deficient data), and keeps the fast result otherwise.
FLOAT32_RELIABLE = 1e-5

# Eigenvalues below this fraction of the largest are numerical zeros of a float64 computation
# (rank deficiency): they would dominate a log-log fit, so fits drop them. A float32 Gram's own
# noise floor is higher, ~1e-7·λ₁ (see eigenspectrum's `precision`).
RELATIVE_FLOOR = 1e-12


# ----------------------------------------------------------------------------- eigenspectrum

def _as_2d_array(X) -> np.ndarray:
    """numpy view of X as (n, d): torch tensors are shared, not copied; trailing dims flattened."""
    torch = sys.modules.get("torch")  # a torch tensor can only exist if torch is imported
    if torch is not None and isinstance(X, torch.Tensor):
        t = X.detach()
        if t.dtype in (torch.float16, torch.bfloat16):  # numpy has no bfloat16
            t = t.float()
        X = t.cpu().numpy()
    X = np.asarray(X)
    if X.dtype == np.bool_ or not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise ValueError(f"X.dtype={X.dtype} is invalid; allowed: a real integer or floating dtype")
    if X.ndim < 2:
        raise ValueError(f"X.shape={X.shape} is invalid; allowed: (n, d) or (n, C, H, W)")
    n = X.shape[0]
    d = math.prod(X.shape[1:])
    if n < 2:
        raise ValueError(f"n_samples={n} is invalid; allowed: at least 2 samples (rows of X)")
    if d < 1:
        raise ValueError(f"X.shape={X.shape} is invalid; allowed: at least 1 feature per sample")
    return X.reshape(n, d)  # a view whenever X is contiguous


def _check_finite(X: np.ndarray, mean: np.ndarray) -> None:
    """A NaN or ±inf anywhere makes its column's float64 mean non-finite: an O(d) test.

    Only when it fails do we search that one column for the first bad entry, to name it.
    """
    bad_cols = np.flatnonzero(~np.isfinite(mean))
    if bad_cols.size:
        j = int(bad_cols[0])
        i = int(np.flatnonzero(~np.isfinite(X[:, j]))[0])
        raise ValueError(f"X[{i}, {j}]={X[i, j]} (flattened index) is invalid; allowed: finite numbers")


def _gram(X: np.ndarray, mean: Optional[np.ndarray], dtype=np.float32) -> np.ndarray:
    """float64 Gram of the (optionally) centred X, from `dtype` products over blocks.

    d <= n: G = XcᵀXc (d×d), summed over blocks of rows.
    d >  n: G = XcXcᵀ (n×n), summed over blocks of columns (centring is per column, so it
    commutes with splitting the columns). Either way the non-zero eigenvalues are the same.
    ``A.T @ A`` on one buffer lets numpy call BLAS syrk (half the flops of a general product).
    """
    n, d = X.shape
    by_rows = d <= n
    size, other = (d, n) if by_rows else (n, d)
    step = max(1, min(other, BLOCK_ELEMENTS // size))
    G = np.zeros((size, size), dtype=np.float64)
    buf = np.empty((step, d) if by_rows else (n, step), dtype=dtype)
    for start in range(0, other, step):
        stop = min(start + step, other)
        if by_rows:
            block, out = X[start:stop], buf[: stop - start]
            m = mean
        else:
            block, out = X[:, start:stop], buf[:, : stop - start]
            m = None if mean is None else mean[start:stop]
        if m is None:
            out[...] = block
        else:
            # Subtract in float64, round once to `dtype`: exact centring even for a large mean.
            np.subtract(block, m, out=out, casting="same_kind")
        G += (out.T @ out) if by_rows else (out @ out.T)
    return G


def eigenspectrum(X, center: bool = True, precision: str = "auto") -> np.ndarray:
    """Covariance eigenvalues of X, descending, as float64.

    X: (n, d) samples, or (n, C, H, W) (flattened to d = C·H·W); numpy (any real dtype, memmaps
    included) or a torch tensor (shared, not copied). X is never modified, nor copied whole
    unless its sample axis cannot be flattened without a copy (a non-contiguous view).

    center=True: eigenvalues of the sample covariance Xcᵀ Xc / (n − 1), Xc = X − mean.
    Centred data has rank at most n − 1, so the result has min(n − 1, d) values: when n <= d the
    one structural zero from centring is not returned. center=False: X is taken as already
    centred (e.g. codes of a zero-mean prior): eigenvalues of Xᵀ X / n, min(n, d) values.

    precision: dtype of the products. "float32" is the fast path; its roundoff puts a noise
    floor near 1e-7·λ₁ (eigenvalues below ~1e-5·λ₁ lose accuracy, and the zero eigenvalues of
    rank-deficient data come out at ~1e-7·λ₁ instead of ~1e-16·λ₁, where a fit would take them
    for data). "float64" lowers the floor to ~1e-15·λ₁ for about twice the time of the products.
    "auto" (default): float32, redone in float64 when the smallest eigenvalue returned is below
    FLOAT32_RELIABLE·λ₁ — so results are accurate to ~1% or better at every rank.

    Roundoff can make eigenvalues of a rank-deficient covariance slightly negative; they are
    clipped to 0 (a variance is never negative). Raises ValueError for NaN/inf, fewer than 2
    samples, or a non-numeric dtype.
    """
    if precision not in ("auto", *PRECISIONS):
        raise ValueError(f"precision={precision!r} is invalid; allowed: auto, {', '.join(PRECISIONS)}")
    X = _as_2d_array(X)
    n, d = X.shape
    mean = X.mean(axis=0, dtype=np.float64)  # float64 accumulation; cheap even when unused
    _check_finite(X, mean)
    eigs = _spectrum(X, mean if center else None, "float32" if precision == "auto" else precision)
    if precision == "auto" and eigs[-1] < FLOAT32_RELIABLE * eigs[0]:
        eigs = _spectrum(X, mean if center else None, "float64")
    return eigs


def _spectrum(X: np.ndarray, mean: Optional[np.ndarray], precision: str) -> np.ndarray:
    n, d = X.shape
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked just below
        G = _gram(X, mean, PRECISIONS[precision])
    if not np.all(np.isfinite(G)):  # finite float32 inputs near 1e19 overflow their products
        raise ValueError(f"X has values up to {float(np.abs(X).max()):g}, whose products overflow {precision}; "
                         f"allowed: |X| small enough that X·X fits in {precision} (rescale X)")
    ddof = 0 if mean is None else 1
    # float64 symmetric solver on the small Gram, values only. torch's (MKL syevd) measured as
    # fast as or faster than scipy's / numpy's OpenBLAS ones (0.8-1.3 s vs 1.3-2 s at d = 3072 on
    # 2 cores) and far steadier when other processes load the CPU. plvae depends on torch anyway.
    import torch

    eigs = torch.linalg.eigvalsh(torch.from_numpy(G)).numpy()
    eigs = eigs[::-1][:min(n - ddof, d)] / (n - ddof)
    return np.clip(eigs, 0.0, None)


# ----------------------------------------------------------------------------- power-law fit

@dataclass(frozen=True)
class PowerLawFit:
    """log λ_k = intercept − alpha·log k (natural log), fitted over ranks kmin..kmax (1-based).

    kmin/kmax are the ranks actually used (after dropping numerical zeros), n_points = kmax −
    kmin + 1, ci = (low, high) bootstrap interval on alpha or None.
    """
    alpha: float
    intercept: float
    r2: float
    kmin: int
    kmax: int
    n_points: int
    ci: Optional[tuple[float, float]] = None

    def __post_init__(self):
        if self.ci is not None:  # JSON gives a list back: keep fits comparable and hashable
            object.__setattr__(self, "ci", tuple(float(c) for c in self.ci))

    def predict(self, k):
        """C·k^(−alpha) with C = exp(intercept); k a rank or an array of ranks."""
        return np.exp(self.intercept) * np.asarray(k, dtype=np.float64) ** (-self.alpha)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = None if self.ci is None else list(self.ci)
        return d


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def fit_power_law(eigs, kmin: int = 2, kmax: Optional[int] = None, bootstrap: int = 0,
                  ci: float = 0.95, seed: int = 0, floor: float = RELATIVE_FLOOR) -> PowerLawFit:
    """Fit λ_k ≈ C·k^(−α) by least squares on (log k, log λ_k), k = kmin..kmax (1-based ranks).

    eigs are sorted descending first (a rank is a position in that order). Default kmax is
    d // 2 (d = len(eigs)): the tail of a sample spectrum bends down from finite-sample noise
    and rank deficiency, and rank 1 often carries the mean/DC component, hence kmin = 2.
    Eigenvalues below floor·λ₁ (numerical zeros; default RELATIVE_FLOOR = 1e-12) are dropped,
    which can only lower kmax; the returned fit reports the ranks actually used. (A spectrum
    computed with precision="float32" has its zeros near 1e-7·λ₁: pass floor=1e-6 for it;
    eigenspectrum's default precision="auto" needs no such care.)

    bootstrap > 0: a percentile interval of level ``ci`` on alpha from ``bootstrap`` residual
    resamples — the fitted line plus residuals drawn with replacement, refitted. Ranks are a
    fixed design (every k appears exactly once), which is why residuals, not (k, λ) pairs, are
    resampled. Caveat: neighbouring residuals of a spectrum are correlated (smooth curvature),
    so the interval reflects the scatter about the line, not the sampling error of the data;
    for that, resample the data and recompute the spectrum.
    """
    lam = np.asarray(eigs, dtype=np.float64)
    if lam.ndim != 1 or lam.size == 0:
        raise ValueError(f"eigs.shape={lam.shape} is invalid; allowed: a non-empty 1-D array")
    if not np.all(np.isfinite(lam)):
        raise ValueError(f"eigs[{int(np.flatnonzero(~np.isfinite(lam))[0])}] is not finite; allowed: finite eigenvalues")
    lam = np.sort(lam)[::-1]
    d = lam.size
    if not _is_int(kmin) or not 1 <= kmin <= d:
        raise ValueError(f"kmin={kmin!r} is invalid; allowed: an integer rank in 1..{d} (len(eigs))")
    if kmax is None:
        kmax = d // 2
    elif not _is_int(kmax) or not kmin <= kmax <= d:
        raise ValueError(f"kmax={kmax!r} is invalid; allowed: an integer rank in kmin..len(eigs) = {kmin}..{d}")
    if not _is_int(bootstrap) or bootstrap < 0:
        raise ValueError(f"bootstrap={bootstrap!r} is invalid; allowed: an integer >= 0 (number of resamples)")
    if not isinstance(ci, (int, float)) or not 0 < ci < 1:
        raise ValueError(f"ci={ci!r} is invalid; allowed: a confidence level in (0, 1)")
    if not isinstance(floor, (int, float)) or not 0 <= floor < 1:
        raise ValueError(f"floor={floor!r} is invalid; allowed: a fraction of the largest eigenvalue in [0, 1)")

    usable = int(np.count_nonzero(lam > floor * lam[0])) if lam[0] > 0 else 0
    kmax_used = min(int(kmax), usable)
    n_points = kmax_used - int(kmin) + 1
    if n_points < 2:
        raise ValueError(f"ranks kmin..kmax={kmin}..{kmax} hold {max(n_points, 0)} usable eigenvalues "
                         f"({usable} of {d} are above {floor:g}·λ₁); allowed: a range with at least 2")

    k = np.arange(kmin, kmax_used + 1, dtype=np.float64)
    x, y = np.log(k), np.log(lam[kmin - 1:kmax_used])
    reg = scipy.stats.linregress(x, y)
    interval = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        fitted = reg.intercept + reg.slope * x
        resid = y - fitted
        yb = fitted + rng.choice(resid, size=(bootstrap, n_points), replace=True)
        xc = x - x.mean()
        slopes = (yb - yb.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)  # OLS slope of each resample
        lo, hi = np.quantile(-slopes, [(1 - ci) / 2, (1 + ci) / 2])
        interval = (float(lo), float(hi))
    return PowerLawFit(alpha=float(-reg.slope), intercept=float(reg.intercept), r2=float(reg.rvalue ** 2),
                       kmin=int(kmin), kmax=kmax_used, n_points=n_points, ci=interval)


# ----------------------------------------------------------------------------- datasets, figures

def spectrum_of_dataset(cfg_or_name, *, kmin: int = 2, kmax: Optional[int] = None, bootstrap: int = 0,
                        ci: float = 0.95, seed: int = 0, precision: str = "auto", **cfg_fields):
    """(eigs, fit) of a dataset's training split, loaded as a trial would load it.

    cfg_or_name: a TrialConfig or a dataset name; cfg_fields override TrialConfig fields
    (image_size=32, channels=3, n_train=..., data_alpha=...). uint8 pixels are measured on the
    [0, 1] scale the networks see (eigenvalues / 255²; α does not depend on the scale).
    """
    from plvae.config import TrialConfig

    if isinstance(cfg_or_name, TrialConfig):
        cfg = cfg_or_name.replace(**cfg_fields) if cfg_fields else cfg_or_name
    else:
        cfg = TrialConfig(dataset=cfg_or_name, **cfg_fields)
    eigs, _ = _training_spectrum(cfg, precision)
    return eigs, fit_power_law(eigs, kmin=kmin, kmax=kmax, bootstrap=bootstrap, ci=ci, seed=seed)


def split_spectrum(train, precision: str = "auto") -> np.ndarray:
    """Eigenvalues of a training split as the networks see it (uint8 rescaled to [0, 1]; alpha
    does not depend on the scale): the one measurement behind a study's data alpha, the report's
    data-spectrum figure and ``python -m plvae.spectrum``."""
    eigs = eigenspectrum(train, precision=precision)
    return eigs / 255.0 ** 2 if np.asarray(train).dtype == np.uint8 else eigs


def _training_spectrum(cfg, precision: str) -> tuple[np.ndarray, tuple]:
    """Eigenvalues of cfg's training split and the split's shape."""
    from plvae.data import load_data  # lazy: data.py pulls in torch, Lightning, torchvision

    train = load_data(cfg).train
    return split_spectrum(train, precision), train.shape


def plot_spectrum(eigs, fit: Optional[PowerLawFit], path, title: Optional[str] = None) -> Path:
    """Save a log-log PNG of the eigenvalues, with the fitted line over its rank range.

    Uses matplotlib's Figure directly (Agg canvas, no pyplot): no global state, no display.
    """
    from matplotlib.figure import Figure

    lam = np.sort(np.asarray(eigs, dtype=np.float64))[::-1]
    k = np.arange(1, lam.size + 1)
    pos = lam > 0  # log axes cannot show zeros
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    ax.loglog(k[pos], lam[pos], ".", ms=3, color="0.3", label="eigenvalues")
    if fit is not None:
        kk = np.arange(fit.kmin, fit.kmax + 1)
        label = f"fit: α = {fit.alpha:.3f}"
        if fit.ci is not None:
            label += f" [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}]"
        label += f", R² = {fit.r2:.3f} (k = {fit.kmin}..{fit.kmax})"
        ax.loglog(kk, fit.predict(kk), "-", color="C3", lw=2, label=label)
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue λ_k")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


# ----------------------------------------------------------------------------- command line

class _OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit status 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"error: {' '.join(message.split())}\n")


def _parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="python -m plvae.spectrum",
                                description="Power-law fit of a dataset's covariance spectrum (training split).")
    p.add_argument("dataset", help="a dataset name of plvae.config.DATASETS")
    p.add_argument("--image-size", type=int, help="side of the square images (default: TrialConfig's)")
    p.add_argument("--channels", type=int, help="1 (grey) or 3 (colour)")
    p.add_argument("--n-train", type=int, help="generated datasets: training samples")
    p.add_argument("--data-alpha", type=float, help="powerlaw_gaussian: exponent of the covariance spectrum")
    p.add_argument("--data-dir", help="where file datasets live / are downloaded")
    p.add_argument("--data-seed", type=int, help="which data is drawn")
    p.add_argument("--kmin", type=int, default=2, help="first rank of the fit (1-based, default 2)")
    p.add_argument("--kmax", type=int, default=None, help="last rank of the fit (default d // 2)")
    p.add_argument("--bootstrap", type=int, default=0, help="residual-bootstrap resamples for a CI on alpha")
    p.add_argument("--ci", type=float, default=0.95, help="confidence level of the bootstrap interval")
    p.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                   help="dtype of the Gram products (auto: float32, float64 when the spectrum spans > 1e5)")
    p.add_argument("--out", default=None, help="figure path (default: spectrum_<dataset>.png in the system's temp "
                                               "folder, so a run leaves nothing in the working tree; printed)")
    return p


def main(argv=None) -> int:
    from plvae.config import TrialConfig

    parser = _parser()
    args = parser.parse_args(argv)
    fields = {name: getattr(args, name) for name in ("image_size", "channels", "n_train", "data_alpha",
                                                      "data_dir", "data_seed") if getattr(args, name) is not None}
    try:
        cfg = TrialConfig(dataset=args.dataset, **fields)
        eigs, shape = _training_spectrum(cfg, args.precision)
        fit = fit_power_law(eigs, kmin=args.kmin, kmax=args.kmax, bootstrap=args.bootstrap, ci=args.ci)
        n, d = shape[0], math.prod(shape[1:])
        out = Path(args.out) if args.out else Path(tempfile.gettempdir()) / "plvae" / f"spectrum_{args.dataset}.png"
        plot_spectrum(eigs, fit, out, title=f"{args.dataset}: {n} samples × {d} features")
    except (ValueError, OSError, RuntimeError) as e:  # ConfigError is a ValueError; offline downloads are OSError
        parser.error(str(e).splitlines()[0] if str(e) else type(e).__name__)

    alpha = f"{fit.alpha:.4f}"
    if fit.ci is not None:
        alpha += f"  [{fit.ci[0]:.4f}, {fit.ci[1]:.4f}] ({args.ci:.0%} residual bootstrap, {args.bootstrap} resamples)"
    print(f"dataset: {args.dataset} (train split, {n} samples x {d} features = {tuple(shape[1:])})")
    print(f"alpha: {alpha}")
    print(f"R^2: {fit.r2:.4f}")
    print(f"ranks: {fit.kmin}..{fit.kmax} ({fit.n_points} points of {eigs.size} eigenvalues)")
    print(f"figure: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
