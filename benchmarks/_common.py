"""What every benchmark script shares: the machine's description and the JSON output."""
from __future__ import annotations

import json
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def emit(out: dict, json_path: str | None) -> None:
    """Print the result as JSON and, when asked, write it to json_path."""
    print(json.dumps(out, indent=1))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=1)
