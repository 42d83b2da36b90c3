"""Tune results -> pandas DataFrames -> speed and stability comparisons, figures and a report.

Notebook use::

    from analysis import load_study, compare, write_report
    study = load_study("results/quick_2025...")   # study.trials, study.history (no Ray needed)
    c = compare(study, baseline="vae")            # on val_loss: c.headline, c.primary, c.tests, c.frontier
    write_report(study, c)                        # <study>/report/report.md, CSV tables, PNG figures
    plot_reconstructions(study, c)                # (figure, None): each variant's best trial, from its checkpoint

Several studies (e.g. one run per dataset, or a rerun) compare side by side: ``load_studies([A, B])``
concatenates them with a ``study`` column, and ``compare`` compares each variant with its own study's
baseline.

Command line: ``python -m analysis PATH [PATH ...] [--out DIR] [--metric NAME] [--baseline vae]`` (installed
as ``plvae-analyze``).
"""
from analysis.compare import Comparison, compare, stable_lr_table, trial_quantities
from analysis.figures import (plot_data_spectrum, plot_divergence, plot_gamma_min_decay, plot_gamma_vs_final,
                              plot_latent_spectrum, plot_learning_curves, plot_rate_distortion, save_figures)
from analysis.reconstructions import plot_reconstructions, save_reconstructions
from analysis.load import STATUSES, Study, StudyLoadWarning, load_studies, load_study, trial_config
from analysis.report import answer, headline_table, write_report
from analysis.stats import bootstrap_ci, holm, mann_whitney

__all__ = [
    "Comparison", "STATUSES", "Study", "StudyLoadWarning", "answer", "bootstrap_ci", "compare", "headline_table",
    "holm", "load_studies", "load_study", "mann_whitney", "plot_data_spectrum", "plot_divergence", "plot_gamma_min_decay",
    "plot_gamma_vs_final", "plot_latent_spectrum", "plot_learning_curves", "plot_rate_distortion", "plot_reconstructions",
    "save_figures", "save_reconstructions", "stable_lr_table",
    "trial_config", "trial_quantities", "write_report",
]
