"""Option types shared by the configuration and by drivers' option schemas.

Durations and sizes are written the way people write them (``"200ms"``, ``"30d"``,
``"512MB"``) or as plain numbers (seconds, bytes). :data:`Duration` and :data:`Size` must
be greater than 0: a zero interval is a hot loop, a zero timeout no timeout, a zero cap
no room. An option where 0 means something ("0 = off") uses :data:`DurationOrZero`.
"""

from __future__ import annotations

import math
import os
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

_DURATION_UNITS = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 0.001,
    "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
}  # fmt: skip
_DURATION_RE = re.compile(r"^\s*(-?)(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d|w)\s*$")
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(-?)(\d+(?:\.\d+)?)\s*([kmg]i?b|b)\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"200ms"``, ``"5s"``, ``"10m"``, ``"30d"``.

    Zero is returned as is (options decide what it means); negative and non-finite
    values raise ValueError.
    """
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "5s", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(2)) * _DURATION_UNITS[m.group(3)] * (-1 if m.group(1) else 1)
    else:
        raise ValueError(
            f'expected a duration like "200ms", "5s", "10m", "2h" or "30d", got {_show(value)}'
        )
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {_show(value)}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {_show(value)}")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from an integer or a string like ``"512MB"`` or ``"1GiB"``."""
    if isinstance(value, bool):
        raise ValueError(f'expected a size like "512MB", got {value!r}')
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        size = int(float(m.group(2)) * _SIZE_UNITS[m.group(3).lower()]) * (-1 if m.group(1) else 1)
    else:
        raise ValueError(
            f'expected a size like "64MB", "1GiB" or a number of bytes, got {_show(value)}'
        )
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {_show(value)}")
    return size


def expand_path(value: str) -> str:
    """``value`` with a leading ``~`` or ``~user`` expanded; ValueError if it cannot be.

    Never leaves a literal ``~``: a directory named so would be created in the working
    directory instead of the home directory.
    """
    if not value:
        raise ValueError("must not be empty (leave the option out for its default)")
    if "\0" in value:
        raise ValueError("a path cannot contain a NUL character")
    if not value.startswith("~"):
        return value
    expanded = os.path.expanduser(value)
    if expanded.startswith("~"):
        user = value[1:].split("/", 1)[0]
        whose = f'user "{user}" is unknown' if user else "there is no home directory (HOME)"
        raise ValueError(f'cannot expand "{value.split("/", 1)[0]}": {whose}')
    return expanded


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(f"must be greater than 0, got {value:g}")
    return value


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value[:60]}…"' if len(value) > 60 else f'"{value}"'
    return repr(value)


Duration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
"""Seconds (> 0), written as a number or as ``"200ms"``/``"5s"``/``"10m"``/``"2h"``/``"30d"``."""

DurationOrZero = Annotated[float, BeforeValidator(parse_duration)]
"""A :data:`Duration` that may be 0, for options where 0 has a meaning (e.g. "keep forever")."""

Size = Annotated[int, BeforeValidator(parse_size), AfterValidator(_positive)]
"""Bytes (> 0), written as a number or as ``"64MB"``/``"1GiB"``."""

PathOption = Annotated[str, AfterValidator(expand_path)]
"""A file system path; ``~`` and ``~user`` are expanded, empty and NUL are refused."""


class Options(BaseModel):
    """Base for every options table: unknown keys are errors, TOML types are kept strictly."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
