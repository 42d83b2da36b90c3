"""Where a result came from: the git commit of the code, the installed package versions, the
machine. study.json records them when a study starts (tune/study_record.py); report.html shows
them beside the analysis' own (analysis/html_report.py). Nothing here imports the packages it names."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from typing import Optional, Sequence

# Distribution names, read with importlib.metadata: nothing is imported (analysis never imports Ray).
PACKAGES = ("plvae", "torch", "pytorch-lightning", "lightning", "ray", "numpy", "pandas", "scipy", "matplotlib")


def git_state(path) -> Optional[dict]:
    """{commit, dirty} of the git checkout holding ``path``, or None (no git, not a checkout)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=20)
    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}


def package_versions(names: Sequence[str] = PACKAGES) -> dict:
    """Installed version of each distribution that is installed (nothing imported)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def machine() -> dict:
    return {"hostname": socket.gethostname(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
