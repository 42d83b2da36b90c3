"""Ray's auth token file, kept private: the file 0600 inside a ~/.ray that is 0700.

Ray 2.60 turns token authentication on for every new local `ray.init()` and, when no token
exists, writes ~/.ray/auth_token itself with the process umask (usually 0644, readable by every
user of the machine, and the token lets its holder run code on the cluster). Calling
`secure_auth_token(create=True)` before Ray starts writes the token first, privately, so Ray
finds it and never creates one; calling it with create=False tightens a token that exists.

    python scripts/ray_token.py            # tighten the token Ray would use (and its ~/.ray)
    python scripts/ray_token.py --create   # ... and create ~/.ray/auth_token if it is missing

Ray reads the token from RAY_AUTH_TOKEN (the token itself: nothing on disk), else the file named
by RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; this follows the same order. Standard library
only, so any entry point can call it before importing Ray. scripts/local_cluster.sh uses it.
"""
from __future__ import annotations

import os
import secrets
import stat
import sys
from pathlib import Path
from typing import Optional

FILE_MODE = 0o600
DIR_MODE = 0o700


def default_token_path() -> Path:
    return Path.home() / ".ray" / "auth_token"


def token_path() -> Optional[Path]:
    """The file Ray reads the token from; None when the token is in RAY_AUTH_TOKEN."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    named = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(named).expanduser() if named else default_token_path()


def _tighten(path: Path, mode: int) -> None:
    """chmod to `mode` a path this user owns; refuse a symlink (it could point anywhere)."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise PermissionError(f"{path} is a symbolic link; allowed: a regular file or directory")
    if info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to uid {info.st_uid}, not this user; allowed: your own")
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def secure_auth_token(create: bool = False) -> Optional[Path]:
    """Make the token file Ray will read private (0600; ~/.ray 0700 when it is the default
    file), creating it (a fresh 256-bit token, as Ray makes) when `create` and it is missing.
    Returns the file, or None when there is none (the token is in RAY_AUTH_TOKEN, or the file
    is missing and create is False). Raises PermissionError for a file it cannot safely own."""
    path = token_path()
    if path is None:
        return None
    if path == default_token_path():
        path.parent.mkdir(mode=DIR_MODE, exist_ok=True)
        _tighten(path.parent, DIR_MODE)
    if not path.exists() and not path.is_symlink():
        if not create:
            return None
        # O_EXCL: never follow or overwrite a file someone placed there in the meantime;
        # the mode is set at creation, so the token is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    _tighten(path, FILE_MODE)
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--create"]):
        print(f"usage: python scripts/ray_token.py [--create] (got {' '.join(argv)})", file=sys.stderr)
        return 2
    try:
        path = secure_auth_token(create=argv == ["--create"])
    except (OSError, PermissionError) as e:
        print(f"ray_token: {e}", file=sys.stderr)
        return 1
    print(path if path is not None else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
