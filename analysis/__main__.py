"""``python -m analysis PATH``: print the headline table and write PATH/report/report.md + figures."""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings

from plvae import metrics as M

from analysis.compare import compare
from analysis.load import StudyLoadWarning, load_study
from analysis.report import REPORT_DIR, answer, headline_table, text_table, write_report


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message):
        raise ValueError(message)


def _check(args) -> None:
    """Option values argparse cannot check, each a one-line error naming the value and what is allowed."""
    if not 0 < args.alpha < 1:
        raise ValueError(f"--alpha={args.alpha!r} is invalid; allowed: a number in (0, 1)")
    if args.min_seeds < 1:
        raise ValueError(f"--min-seeds={args.min_seeds!r} is invalid; allowed: an integer >= 1")
    if args.target is not None and not math.isfinite(args.target):
        raise ValueError(f"--target={args.target!r} is invalid; allowed: a finite number")


def _check_out(out: str) -> None:
    """The report folder must be writable before minutes of comparisons are spent."""
    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out):
            pass
    except OSError as e:
        raise ValueError(f"--out={out!r} is invalid ({e.strerror or e}); allowed: a folder this user can write") from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m analysis",
                                description="Compare the prior variants of a Ray Tune study for speed and stability.")
    p.add_argument("path", help="the study folder (<storage_path>/<study_name>)")
    p.add_argument("--out", help=f"where report.md and the figures go (default PATH/{REPORT_DIR})")
    p.add_argument("--metric", default=None, help=f"history column to compare on (default {M.DEFAULT_STUDY_METRIC})")
    p.add_argument("--baseline", default="vae", help="the variant everything is compared with (default vae)")
    p.add_argument("--target", type=float, default=None,
                   help="loss to reach for the speed measures (default: the baseline's median final value)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm correction")
    p.add_argument("--min-seeds", type=int, default=3, help="groups with fewer usable trials are not tested")
    p.add_argument("--holm", choices=("primary", "all", "quantity"), default="primary",
                   help="Holm correction over the study's declared primary comparisons (default; every other "
                        "test is exploratory, raw p), over all tests, or within each quantity")
    p.add_argument("--no-figures", action="store_true", help="write the report without figures")
    p.add_argument("--no-data-spectrum", action="store_true", help="skip loading the data for its spectrum")
    return p


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        _check(args)
        if args.out is not None:
            _check_out(args.out)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StudyLoadWarning)
            study = load_study(args.path)
        if args.out is None and study.path is not None:
            _check_out(str(study.path / REPORT_DIR))
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        c = compare(study, baseline=args.baseline, metric=args.metric, target=args.target, alpha=args.alpha,
                    min_seeds=args.min_seeds, holm_family=args.holm)
        path = write_report(study, c, out=args.out, figures=not args.no_figures,
                            data_spectrum=not args.no_data_spectrum)
    except (FileNotFoundError, ValueError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    print(f"Study {study.name}: {len(study.trials)} trials, compared on {c.metric} against {c.baseline}\n")
    print(text_table(headline_table(c)))
    print(f"\n{answer(study, c)}\n")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
