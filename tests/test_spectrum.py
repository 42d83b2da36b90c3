"""plvae.spectrum: eigenvalues against numpy's float64 reference, exponent recovery, the fit's
rank handling and bootstrap, input checks, the figure and the command line."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from plvae import spectrum
from plvae.spectrum import PowerLawFit, eigenspectrum, fit_power_law, plot_spectrum

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def powerlaw_samples(n: int, d: int, alpha: float, seed: int = 0, mean: float = 0.5) -> np.ndarray:
    """Gaussian samples with covariance spectrum k^-alpha in a random orthonormal basis."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = np.arange(1, d + 1, dtype=np.float64) ** -alpha
    return (rng.standard_normal((n, d)) * np.sqrt(lam)) @ q.T + mean


def reference(X: np.ndarray, center: bool = True) -> np.ndarray:
    X = X.reshape(len(X), -1).astype(np.float64)
    C = np.cov(X, rowvar=False) if center else X.T @ X / len(X)
    return np.linalg.eigvalsh(np.atleast_2d(C))[::-1]


def assert_spectrum_close(eigs: np.ndarray, ref: np.ndarray) -> None:
    # float32 products, float64 accumulation and solve: errors are a few float32 eps (6e-8)
    # times λ₁ in absolute terms, so atol = 2e-6·λ₁ with 30× headroom; rtol covers the top.
    np.testing.assert_allclose(eigs, ref[:len(eigs)], rtol=1e-5, atol=2e-6 * ref[0])


# ----------------------------------------------------------------------------- eigenspectrum

@pytest.mark.parametrize("precision", ["float32", "float64", "auto"])
@pytest.mark.parametrize("n, d", [(300, 40), (41, 40), (40, 40), (50, 200), (2, 7)])
def test_eigenspectrum_matches_numpy_cov(n, d, precision):
    """Both paths (XᵀX for d <= n, XXᵀ for d > n); centred data has min(n - 1, d) eigenvalues."""
    X = np.random.default_rng(n * d).standard_normal((n, d)) * np.linspace(3, 0.1, d) + 5.0
    eigs = eigenspectrum(X, precision=precision)
    ref = reference(X)
    assert eigs.dtype == np.float64 and eigs.shape == (min(n - 1, d),)
    assert np.all(np.diff(eigs) <= 0) and np.all(eigs >= 0)
    assert_spectrum_close(eigs, ref)
    if n - 1 < d:  # what was left out is the structural zero of centring
        assert abs(ref[n - 1]) < 1e-10 * ref[0]


@pytest.mark.parametrize("n, d", [(120, 30), (20, 90)])
def test_uncentred_is_second_moment(n, d):
    X = np.random.default_rng(1).standard_normal((n, d)) + 0.3
    eigs = eigenspectrum(X, center=False)
    assert eigs.shape == (min(n, d),)
    assert_spectrum_close(eigs, reference(X, center=False))


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("n, d", [(1000, 37), (23, 301)])
def test_blocks_and_ragged_last_block(monkeypatch, n, d, precision):
    """Tiny blocks force many passes (rows or columns) with a short last one."""
    monkeypatch.setattr(spectrum, "BLOCK_ELEMENTS", 7 * max(n, d) // 3)
    X = powerlaw_samples(n, d, 1.0, seed=3)
    assert_spectrum_close(eigenspectrum(X, precision=precision), reference(X))


def test_torch_images_uint8_and_memmap(tmp_path):
    X = np.random.default_rng(2).integers(0, 256, size=(64, 3, 4, 5), dtype=np.uint8)
    ref = reference(X)
    assert_spectrum_close(eigenspectrum(X), ref)                     # uint8, (n, C, H, W)
    assert_spectrum_close(eigenspectrum(torch.from_numpy(X).float().requires_grad_()), ref)
    assert_spectrum_close(eigenspectrum(torch.from_numpy(X).to(torch.bfloat16)), ref)  # exact: ints < 256
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=X.shape)
    mm[:] = X
    assert_spectrum_close(eigenspectrum(mm), ref)
    before = X.copy()
    eigenspectrum(X)
    np.testing.assert_array_equal(X, before)                         # input untouched


def test_large_mean_is_centred_in_float64():
    """A mean 1000× the spread: rounding x to float32 before centring would cost ~1e-4 relative
    error on the small eigenvalues; centring in float64 first keeps it at float32's ~1e-7."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((500, 30)) * np.linspace(1, 0.01, 30) + 1000.0
    ref = reference(X)
    np.testing.assert_allclose(eigenspectrum(X), ref, rtol=1e-5)


def test_precision_and_the_noise_floor():
    """Rank-5 data in 40 dims: the float32 zeros sit near 1e-7·λ₁, the float64 ones near 1e-16;
    "auto" notices the spectrum reaching below 1e-5·λ₁ and gives the float64 result."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((400, 5)) @ rng.standard_normal((5, 40)) + 3.0
    e32, e64 = eigenspectrum(X, precision="float32"), eigenspectrum(X, precision="float64")
    np.testing.assert_allclose(e64[:5], reference(X)[:5], rtol=1e-12)
    assert e64[5] < 1e-13 * e64[0]
    assert 1e-10 * e32[0] < e32[5] < 1e-5 * e32[0]
    np.testing.assert_array_equal(eigenspectrum(X), e64)
    # The default floor would fit float32 noise; floor=1e-6 drops it, as documented.
    assert fit_power_law(e32, kmax=20).kmax == 20
    assert fit_power_law(e32, kmax=20, floor=1e-6).kmax == 5
    assert fit_power_law(eigenspectrum(X), kmax=20).kmax == 5


def test_auto_keeps_float32_when_it_is_accurate():
    X = powerlaw_samples(500, 40, 1.0, seed=6)  # λ_40 / λ_1 ≈ 0.02: far above float32's floor
    e32 = eigenspectrum(X, precision="float32")
    np.testing.assert_array_equal(eigenspectrum(X), e32)
    assert not np.array_equal(e32, eigenspectrum(X, precision="float64"))  # the paths do differ


@pytest.mark.parametrize("bad, message", [
    (np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, 4.0]]), r"X\[1, 0\]=nan .*allowed: finite"),
    (np.array([[0.0, 1.0], [2.0, np.inf], [3.0, 4.0]]), r"X\[1, 1\]=inf .*allowed: finite"),
    (np.ones((1, 5)), r"n_samples=1 is invalid; allowed: at least 2"),
    (np.ones(5), r"X.shape=\(5,\) is invalid"),
    (np.ones((4, 0)), r"X.shape=\(4, 0\) is invalid"),
    (np.ones((4, 3), dtype=complex), r"X.dtype=complex128 is invalid"),
    (np.array([[1e30, 0.0], [-1e30, 1.0], [0.0, 2.0]]), r"up to 1e\+30, whose products overflow float32"),
])
def test_eigenspectrum_rejects_bad_input(bad, message):
    with pytest.raises(ValueError, match=message) as err:
        eigenspectrum(bad)
    assert "\n" not in str(err.value)


def test_eigenspectrum_rejects_bad_precision():
    with pytest.raises(ValueError, match=r"precision='float16' is invalid; allowed: auto, float32, float64"):
        eigenspectrum(np.ones((3, 2)), precision="float16")


# ----------------------------------------------------------------------------- power-law fit

@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0])
def test_exponent_recovered_from_samples(alpha):
    """n = 20000 samples in d = 64 dims, fit over ranks 2..32. Each log λ_k has sampling noise
    ≈ sqrt(2/n) = 0.01, which gives a slope standard error ≈ 0.002 over 31 points (10 seeds:
    worst error 0.004); finite-n bias is O(d/n) = 0.003. A 0.02 tolerance is ~5 such errors,
    while any mistake in centring, ordering or scaling moves α by far more."""
    X = powerlaw_samples(20_000, 64, alpha, seed=int(alpha * 10))
    fit = fit_power_law(eigenspectrum(X))
    assert (fit.kmin, fit.kmax, fit.n_points) == (2, 32, 31)
    assert fit.alpha == pytest.approx(alpha, abs=0.02)
    assert fit.r2 > 0.999


def test_exact_power_law_and_predict():
    k = np.arange(1, 201, dtype=np.float64)
    lam = 3.0 * k ** -1.25
    rng = np.random.default_rng(0)
    fit = fit_power_law(rng.permutation(lam), kmin=1, kmax=150)  # order of the input is irrelevant
    assert fit.alpha == pytest.approx(1.25, abs=1e-12)
    assert fit.intercept == pytest.approx(np.log(3.0), abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert (fit.kmin, fit.kmax, fit.n_points, fit.ci) == (1, 150, 150, None)
    np.testing.assert_allclose(fit.predict(k), lam, rtol=1e-10)
    assert fit_power_law(lam).kmax == 100  # default kmax = d // 2
    with pytest.raises(AttributeError):
        fit.alpha = 0.0  # frozen
    assert PowerLawFit(**fit.to_dict()) == fit


def test_tiny_eigenvalues_are_dropped():
    lam = np.r_[np.arange(1, 11, dtype=np.float64) ** -1.0, np.full(90, 1e-15), np.zeros(20)]
    fit = fit_power_law(lam)  # default kmax = 60, but only ranks 1..10 are above 1e-12·λ₁
    assert (fit.kmin, fit.kmax, fit.n_points) == (2, 10, 9)
    assert fit.alpha == pytest.approx(1.0, abs=1e-12)


def test_bootstrap_interval():
    eigs = eigenspectrum(powerlaw_samples(2_000, 64, 1.0, seed=7))
    fit = fit_power_law(eigs, bootstrap=500, seed=1)
    lo, hi = fit.ci
    assert lo < fit.alpha < hi
    assert PowerLawFit(**json.loads(json.dumps(fit.to_dict()))) == fit  # JSON round trip
    assert 0 < hi - lo < 0.1
    assert fit_power_law(eigs, bootstrap=500, seed=1).ci == fit.ci  # reproducible
    lo50, hi50 = fit_power_law(eigs, bootstrap=500, ci=0.5, seed=1).ci
    assert lo <= lo50 < hi50 <= hi                                    # a lower level is narrower
    assert fit.alpha == fit_power_law(eigs).alpha                     # the estimate is the OLS one


@pytest.mark.parametrize("kwargs, message", [
    (dict(kmin=0), r"kmin=0 is invalid; allowed: an integer rank in 1\.\.100"),
    (dict(kmin=101), r"kmin=101 is invalid"),
    (dict(kmin=2.0), r"kmin=2\.0 is invalid"),
    (dict(kmin=10, kmax=5), r"kmax=5 is invalid; allowed: an integer rank in kmin\.\.len\(eigs\) = 10\.\.100"),
    (dict(kmax=101), r"kmax=101 is invalid"),
    (dict(kmin=3, kmax=3), r"ranks kmin\.\.kmax=3\.\.3 hold 1 usable eigenvalues.*at least 2"),
    (dict(bootstrap=-1), r"bootstrap=-1 is invalid"),
    (dict(ci=1.0), r"ci=1\.0 is invalid; allowed: a confidence level in \(0, 1\)"),
    (dict(floor=-1e-3), r"floor=-0\.001 is invalid"),
])
def test_fit_rejects_bad_arguments(kwargs, message):
    lam = np.arange(1, 101, dtype=np.float64) ** -1.0
    with pytest.raises(ValueError, match=message) as err:
        fit_power_law(lam, **kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("eigs, message", [
    (np.r_[1.0, 0.5, np.nan], r"eigs\[2\] is not finite"),
    (np.zeros(10), r"hold 0 usable eigenvalues \(0 of 10"),
    (np.r_[1.0, 0.5, 1e-20, 0.0], r"kmax=2\.\.2 hold 1 usable"),
    (np.ones((3, 3)), r"eigs.shape=\(3, 3\) is invalid"),
    (np.array([]), r"eigs.shape=\(0,\) is invalid"),
])
def test_fit_rejects_unusable_eigenvalues(eigs, message):
    with pytest.raises(ValueError, match=message):
        fit_power_law(eigs)


# ----------------------------------------------------------------------------- figure and CLI

def test_plot_spectrum_writes_png(tmp_path):
    eigs = np.r_[np.arange(1, 51, dtype=np.float64) ** -1.0, 0.0]  # a zero cannot go on log axes
    fit = fit_power_law(eigs, bootstrap=50)
    path = plot_spectrum(eigs, fit, tmp_path / "sub" / "s.png", title="test")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert plot_spectrum(eigs, None, tmp_path / "nofit.png").read_bytes()[:8] == PNG_SIGNATURE


def test_spectrum_of_dataset():
    eigs, fit = spectrum.spectrum_of_dataset("powerlaw_gaussian", image_size=4, channels=1, n_train=4_000,
                                             data_alpha=2.0)
    assert eigs.shape == (16,)
    assert fit.alpha == pytest.approx(2.0, abs=0.1)


def test_cli_end_to_end(tmp_path):
    """The real command: loads powerlaw_gaussian through plvae.data, fits, saves the figure in
    the temp folder (never the cwd: a run leaves no untracked file in the repository). 4096 samples in 64 dims: α's standard error is ~0.005, so 0.05 is a safe bound."""
    cmd = [sys.executable, "-m", "plvae.spectrum", "powerlaw_gaussian", "--image-size", "8", "--channels", "1",
           "--n-train", "4096", "--data-alpha", "1.5", "--bootstrap", "200"]
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "cwd").mkdir()
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run(cmd, cwd=tmp_path / "cwd", capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    alpha = float(re.search(r"^alpha: ([0-9.]+)  \[([0-9.]+), ([0-9.]+)\]", proc.stdout, re.M).group(1))
    assert alpha == pytest.approx(1.5, abs=0.05)
    assert re.search(r"^R\^2: 0\.99", proc.stdout, re.M)
    assert "ranks: 2..32 (31 points of 64 eigenvalues)" in proc.stdout
    assert "4096 samples x 64 features" in proc.stdout
    fig = tmp_path / "tmp" / "plvae" / "spectrum_powerlaw_gaussian.png"
    assert fig.read_bytes()[:8] == PNG_SIGNATURE and f"figure: {fig}" in proc.stdout
    assert not list((tmp_path / "cwd").iterdir())


def test_cli_digits_with_out_path(tmp_path, capsys):
    out = tmp_path / "figs" / "digits.png"
    assert spectrum.main(["digits", "--image-size", "8", "--kmax", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ranks: 2..20 (19 points of 64 eigenvalues)" in text
    assert out.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize("argv, message", [
    (["no_such_set"], "dataset='no_such_set' is invalid; allowed: natural_patches"),
    (["digits", "--image-size", "8", "--kmin", "0"], "kmin=0 is invalid"),
    (["digits", "--channels", "2"], "channels=2 is invalid; allowed: 1 or 3"),
    (["digits", "--kmax", "many"], "argument --kmax: invalid int value: 'many'"),
])
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        spectrum.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err   # no usage block


def test_cli_unwritable_figure_path(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_:
        spectrum.main(["digits", "--image-size", "8", "--out", str(blocker / "fig.png")])
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err.strip().splitlines()[-1]
