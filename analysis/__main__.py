"""``python -m analysis PATH [PATH ...]`` (installed as ``plvae-analyze``): print the headline table and
write PATH/report/report.md + figures, and report.html (all of it in one file to send). With several
studies, each variant is compared with the baseline of its own study, side by side, and the report
goes to --out (default: a ``compare_<A>+<B>`` folder beside the first study)."""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings

from plvae import metrics as M
from plvae.priors import BASELINE

from analysis.compare import compare
from analysis.html_report import write_html
from analysis.load import StudyLoadWarning, load_studies, load_study
from analysis.report import REPORT_DIR, answer, headline_table, text_table, write_report
from analysis.tuned import tuned_of
from analysis.tuned_report import comparison_table


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr and exit status 2 (no usage block)."""

    def error(self, message):
        raise ValueError(message)


def _significance(args) -> tuple[float, str]:
    """The significance level and the option that set it: --alpha is the old spelling (alpha is the
    spectrum's exponent everywhere else in plvae), kept for a while with a one-line warning."""
    if args.alpha is None:
        return args.significance, "--significance"
    if args.significance is not None:
        raise ValueError(f"--alpha={args.alpha!r} is invalid with --significance; allowed: --significance only")
    return args.alpha, "--alpha"


def _check(args) -> None:
    """Option values argparse cannot check, each a one-line error naming the value and what is allowed."""
    args.level, option = _significance(args)
    if args.level is None:
        args.level = DEFAULT_SIGNIFICANCE
    if not 0 < args.level < 1:
        raise ValueError(f"{option}={args.level!r} is invalid; allowed: a number in (0, 1)")
    if option == "--alpha":   # after the check: a bad value is still one line
        print("warning: --alpha is deprecated (alpha is the spectrum exponent); use --significance", file=sys.stderr)
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


DEFAULT_SIGNIFICANCE = 0.05


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="plvae-analyze",
                description="Compare the prior variants of Ray Tune studies for speed and stability "
                            "(also `python -m analysis`).")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="a study folder (<storage_path>/<study_name>); several are compared side by side, each "
                        "variant against its own study's baseline")
    p.add_argument("--out", help=f"where report.md and the figures go (default PATH/{REPORT_DIR}; several studies: "
                                 f"compare_<A>+<B> beside the first)")
    p.add_argument("--metric", default=None, help=f"history column to compare on (default {M.DEFAULT_STUDY_METRIC})")
    p.add_argument("--baseline", default=BASELINE, help=f"the variant everything is compared with (default {BASELINE})")
    p.add_argument("--target", type=float, default=None,
                   help="loss to reach for the speed measures (default: the baseline's median final value)")
    p.add_argument("--significance", type=float, default=None,
                   help=f"significance level after Holm correction (default {DEFAULT_SIGNIFICANCE})")
    p.add_argument("--alpha", type=float, default=None, help=argparse.SUPPRESS)   # deprecated: --significance
    p.add_argument("--min-seeds", type=int, default=3, help="groups with fewer usable trials are not tested")
    p.add_argument("--holm", choices=("primary", "all", "quantity"), default="primary",
                   help="Holm correction over the study's declared primary comparisons (default; every other "
                        "test is exploratory, raw p), over all tests, or within each quantity")
    p.add_argument("--no-figures", action="store_true", help="write the report without figures")
    p.add_argument("--no-data-spectrum", action="store_true", help="skip loading the data for its spectrum")
    p.add_argument("--no-html", action="store_true", help="skip report.html (one self-contained file: report.md, "
                                                          "figures, tables, provenance and links to each trial)")
    return p


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
        _check(args)
        if args.out is not None:
            _check_out(args.out)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", StudyLoadWarning)
            study = load_study(args.paths[0]) if len(args.paths) == 1 else load_studies(args.paths)
        if args.out is None and study.path is not None:
            _check_out(str(study.path / REPORT_DIR))
        elif args.out is None:
            args.out = os.path.join(os.path.dirname(study.meta["paths"][0]),
                                    "compare_" + "+".join(n.replace("/", "_") for n in study.meta["studies"]))
            _check_out(args.out)
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
        c = compare(study, baseline=args.baseline, metric=args.metric, target=args.target, significance=args.level,
                    min_seeds=args.min_seeds, holm_family=args.holm)
        path = write_report(study, c, out=args.out, figures=not args.no_figures,
                            data_spectrum=not args.no_data_spectrum)
        if not args.no_html:
            path = write_html(study, path.parent, argv=sys.argv[1:] if argv is None else argv)   # the one file to send
    except (FileNotFoundError, ValueError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    print(f"Study {study.name}: {len(study.trials)} trials, compared on {c.metric} against {c.baseline}\n")
    print(text_table(headline_table(c)))
    print(f"\n{answer(study, c)}\n")
    result = tuned_of(study)   # a study run under a tuning protocol: its answer is tuned against tuned
    if result is not None:
        print(f"Tuned against tuned: each arm at its own {', '.join(result.protocol.knobs)} picked on the tuning "
              f"seeds, against the tuned {result.protocol.baseline} on the evaluation seeds only (report.md, "
              f"'Tuned against tuned', says how each column is measured)\n")
        print(text_table(comparison_table(result)) if len(result.comparison) else "no comparison: " + "; ".join(result.notes))
        print("\n" + "\n".join(f"- {n}" for n in result.notes) + "\n")
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
