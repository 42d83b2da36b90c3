"""The error of the whole tune package: one line naming the field, the bad value and what is
allowed (``name=value is invalid; allowed: ...``). A leaf: it imports nothing from tune."""
from __future__ import annotations

from typing import Any

from plvae.config import ConfigError


class StudyError(ConfigError):
    """A one-line message naming the field, the bad value and what is allowed."""


def bad(name: str, value: Any, allowed: str) -> StudyError:
    return StudyError(f"{name}={value!r} is invalid; allowed: {allowed}")
