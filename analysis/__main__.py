"""``python -m analysis PATH``: print the headline table and write PATH/report/report.md + figures."""
from __future__ import annotations

import argparse
import sys
import warnings

from plvae import metrics as M

from analysis.compare import compare
from analysis.load import StudyLoadWarning, load_study
from analysis.report import REPORT_DIR, answer, headline_table, text_table, write_report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis",
                                description="Compare the prior variants of a Ray Tune study for speed and stability.")
    p.add_argument("path", help="the study folder (<storage_path>/<study_name>)")
    p.add_argument("--out", help=f"where report.md and the figures go (default PATH/{REPORT_DIR})")
    p.add_argument("--metric", default=None, help=f"history column to compare on (default {M.DEFAULT_STUDY_METRIC})")
    p.add_argument("--baseline", default="vae", help="the variant everything is compared with (default vae)")
    p.add_argument("--target", type=float, default=None,
                   help="loss to reach for the speed measures (default: the baseline's median final value)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm correction")
    p.add_argument("--min-seeds", type=int, default=3, help="groups with fewer usable trials are not tested")
    p.add_argument("--holm", choices=("all", "quantity"), default="all",
                   help="Holm correction over all tests (default) or within each quantity")
    p.add_argument("--no-figures", action="store_true", help="write the report without figures")
    p.add_argument("--no-data-spectrum", action="store_true", help="skip loading the data for its spectrum")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StudyLoadWarning)
            study = load_study(args.path)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        c = compare(study, baseline=args.baseline, metric=args.metric, target=args.target, alpha=args.alpha,
                    min_seeds=args.min_seeds, holm_family=args.holm)
        path = write_report(study, c, out=args.out, figures=not args.no_figures,
                            data_spectrum=not args.no_data_spectrum)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Study {study.name}: {len(study.trials)} trials, compared on {c.metric} against {c.baseline}\n")
    print(text_table(headline_table(c)))
    print(f"\n{answer(study, c)}\n")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
