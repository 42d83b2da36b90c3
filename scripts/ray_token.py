"""python scripts/ray_token.py [--create]: Ray's auth token kept private (0600 in a 0700 ~/.ray).

The code lives in tune/auth_token.py, where a study's driver calls it before Ray starts; this is
its command line for the cluster launcher's side (README, "Authentication"). Standard library and
the project's own package only."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, when not installed
from tune.auth_token import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
