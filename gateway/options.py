"""Option types shared by the configuration and by drivers' option schemas.

Durations and sizes are written the way people write them (``"200ms"``, ``"30d"``,
``"512MB"``) or as plain numbers (seconds, bytes).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)\s*$", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``"200ms"``, ``"5s"``, ``"10m"``, ``"30d"``."""
    if isinstance(value, bool):
        raise ValueError(f'expected a duration like "5s", got {value!r}')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(
            f'expected a duration like "200ms", "5s", "10m", "2h" or "30d", got {_show(value)}'
        )
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
        size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    else:
        raise ValueError(
            f'expected a size like "64MB", "1GiB" or a number of bytes, got {_show(value)}'
        )
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {_show(value)}")
    return size


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written as a number or as ``"200ms"``/``"5s"``/``"10m"``/``"2h"``/``"30d"``."""

Size = Annotated[int, BeforeValidator(parse_size)]
"""Bytes, written as a number or as ``"64MB"``/``"1GiB"``."""


class Options(BaseModel):
    """Base for every options table: unknown keys are errors, TOML types are kept strictly."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
