"""Run a Ray Tune study of power-law-prior VAEs: ``python tune/run_study.py [options]``.

With no options: the ``quick`` preset, a small real study on this machine (local Ray, offline
natural-image patches, every prior variant). ``--help`` lists the options; ``--dry-run`` prints
the trials without starting Ray. Bad input is one line on stderr (``error: ...``), exit status 2,
before Ray starts.
"""
from __future__ import annotations

import os
import sys

# `python tune/run_study.py` puts tune/ first on sys.path, where its modules could shadow
# libraries; import this package from the repository root instead.
_HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or ".") == _HERE:
    sys.path[0] = os.path.dirname(_HERE)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before Ray is imported anywhere

from plvae.config import ConfigError  # noqa: E402
from tune.study import (add_data_gamma, config_from_args, describe, latest_unfinished,  # noqa: E402
                        load_and_measure, prepare)


def main(argv=None) -> int:
    try:
        cfg, args = config_from_args(argv)
        if args.resume and not args.explicit_name:
            name = latest_unfinished(cfg.storage_path)
            if name is None:
                raise ConfigError(f"resume: no unfinished study under {cfg.storage_path}; allowed: "
                                  f"--study-name NAME of a study there")
            cfg.study_name = name
        cfg, prior = prepare(cfg, args.resume)
        if args.dry_run:
            extra = {}
            if cfg.gamma_from_data:  # measured without Ray: the data are loaded here
                extra = add_data_gamma(cfg, load_and_measure(cfg, measure=True)[1])
                print(f"data alpha = {extra['data_alpha']:.3f}: gamma = {extra['data_gamma']} added")
            print(describe(cfg, cfg.trial_dicts(extra) if cfg.search == "grid" else []))
            if cfg.objective_note():
                print(cfg.objective_note())
            return 0
        from tune.study_runner import run  # imports Ray: only once the input is known to be good

        return run(cfg, prior)
    except ConfigError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
