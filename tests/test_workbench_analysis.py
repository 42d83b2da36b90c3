"""The researcher's workbench, analysis side: several studies compared side by side
(load_studies, `python -m analysis A B`) and the significance option's new name."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from analysis import compare, load_studies
from analysis.__main__ import main as analysis_main
from analysis.load import STUDY, TRIAL_ID
from plvae import metrics as M
from plvae.config import TrialConfig
from test_analysis import write_trial   # Ray Tune's trial folder layout, written by hand


def small_study(root: Path, name: str, shift: float = 0.0, prefix: str = "a1b2c") -> Path:
    """vae against powerlaw_clamp, three seeds each, four epochs; powerlaw_clamp ends `shift` lower."""
    d = root / name
    status = {}
    for i, (variant, gamma, seed) in enumerate([(v, g, s) for v, g in (("vae", 0.0), ("powerlaw_clamp", 1.0))
                                                for s in range(3)]):
        tid = f"{prefix}_{i:05d}"
        end = 0.2 - (shift if variant != "vae" else 0.0) + 0.01 * seed
        write_trial(d, tid, TrialConfig(variant=variant, gamma=gamma, seed=seed, max_epochs=3, dataset="digits"),
                    curve=[1.0, 0.6, 0.4, end])
        status[tid] = "TERMINATED"
    (d / "study.json").write_text(json.dumps({
        "study_name": name, "metric": M.DEFAULT_STUDY_METRIC, "mode": "min", "scheduler": "asha", "search": "grid",
        "max_epochs": 3, "data_alpha": {"digits": 1.4}, "status": "finished", "trial_status": status}))
    return d


def test_load_studies_concatenates_with_a_study_column_and_compare_keeps_studies_apart(tmp_path):
    a, b = small_study(tmp_path, "A", shift=0.05), small_study(tmp_path, "B", shift=0.0)
    both = load_studies([a, b])
    assert list(both.trials.columns[:2]) == [TRIAL_ID, STUDY]
    assert both.trials.groupby(STUDY).size().to_dict() == {"A": 6, "B": 6}
    # the same Tune trial ids in both (a copied layout): prefixed, so no history mixes
    assert both.trials[TRIAL_ID].is_unique and both.trials[TRIAL_ID].str.startswith(("A:", "B:")).all()
    assert len(both.history) == 12 * 3 and set(both.history[STUDY]) == {"A", "B"}
    assert any("prefixed" in s for s in both.skipped)
    assert both.meta["metric"] == M.DEFAULT_STUDY_METRIC and set(both.meta["studies"]) == {"A", "B"}
    c = compare(both, min_seeds=2)
    assert STUDY in c.headline.columns
    final = c.tests[c.tests["quantity"] == "final"].set_index(STUDY)
    # A's powerlaw_clamp ends 0.05 lower than A's baseline; B's does not differ from B's baseline
    assert final.loc["A", "diff"] == pytest.approx(-0.05) and final.loc["B", "diff"] == pytest.approx(0.0)


def test_load_studies_refuses_a_study_twice_and_names_same_named_studies_by_folder(tmp_path):
    a = small_study(tmp_path / "x", "S")
    with pytest.raises(ValueError, match="given twice"):
        load_studies([a, a])
    b = small_study(tmp_path / "y", "S", prefix="d4e5f")
    both = load_studies([a, b])
    assert set(both.trials[STUDY]) == {"x/S", "y/S"}
    assert not both.trials[TRIAL_ID].str.contains(":").any()   # distinct ids stay as Tune named them


def test_cli_compares_two_studies_into_a_folder_beside_them(tmp_path, capsys):
    a, b = small_study(tmp_path, "A", shift=0.05), small_study(tmp_path, "B")
    assert analysis_main([str(a), str(b), "--min-seeds", "2", "--no-figures", "--no-data-spectrum"]) == 0
    out = capsys.readouterr().out
    assert "Study A + B: 12 trials" in out
    assert (tmp_path / "compare_A+B" / "report.md").exists()


def test_significance_option_and_the_deprecated_alpha(tmp_path, capsys):
    a = small_study(tmp_path, "A", shift=0.05)
    argv = [str(a), "--min-seeds", "2", "--no-figures", "--no-data-spectrum", "--out", str(tmp_path / "r")]
    assert analysis_main(argv + ["--significance", "0.1"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert analysis_main(argv + ["--alpha", "0.1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["warning: --alpha is deprecated (alpha is the spectrum exponent); use --significance"]
    for bad, needle in ((["--significance", "1.5"], "--significance=1.5 is invalid"),
                        (["--significance", "0.1", "--alpha", "0.1"], "--significance only")):
        assert analysis_main(argv + bad) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err


def test_a_failing_bootstrap_is_an_error_not_a_silent_nan(monkeypatch):
    """An older SciPy (no rng=) or any other error inside scipy.stats.bootstrap surfaces."""
    from analysis import stats as S

    def old_scipy(*args, rng=None, **kwargs):
        raise TypeError("bootstrap() got an unexpected keyword argument 'rng'")

    monkeypatch.setattr(S.stats, "bootstrap", old_scipy)
    with pytest.raises(TypeError, match="rng"):
        S.bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    # the cases answered without scipy still are
    assert S.bootstrap_ci([2.0, 2.0]).low == 2.0 and S.bootstrap_ci([1.0, float("inf")]).n == 2


def test_figures_of_several_studies_split_by_study(tmp_path):
    """Figures keep studies apart: the comparison figures panel by context, which includes the
    study column; the latent-spectrum figure (no comparison context) draws one panel per study."""
    from analysis.figures import plot_gamma_vs_final, plot_latent_spectrum

    both = load_studies([small_study(tmp_path, "A", shift=0.05), small_study(tmp_path, "B")])
    c = compare(both, min_seeds=2)
    for fig in (plot_gamma_vs_final(c), plot_latent_spectrum(both)):
        titles = [ax.get_title() for ax in fig.axes]
        assert sum("study=A" in t for t in titles) == 1 and sum("study=B" in t for t in titles) == 1, titles
    one = load_studies([small_study(tmp_path / "one", "A")])
    assert [ax.get_title() for ax in plot_latent_spectrum(one).axes] == [""]
