"""Times on the command line and in output: :func:`parse_time`, :func:`parse_every`,
:func:`rfc3339`."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal

from gateway.query.backend import QueryArgumentError

__all__ = ["MAX_NS", "MIN_NS", "NS", "parse_every", "parse_time", "rfc3339"]

NS = 1_000_000_000
MIN_NS = -(2**63)
MAX_NS = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(time_ns: int) -> str:
    """``time_ns`` as RFC 3339 in UTC with all nine fraction digits: ``...T10:00:00.000000001Z``."""
    seconds, frac = divmod(time_ns, NS)
    stamp = (EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()
    return f"{stamp}.{frac:09d}Z"


# --- parsing times -----------------------------------------------------------------

_UNITS_NS = {
    "ms": 1_000_000,
    "s": NS,
    "m": 60 * NS,
    "h": 3600 * NS,
    "d": 86400 * NS,
    "w": 7 * 86400 * NS,
}
_RELATIVE_RE = re.compile(r"(?:now)?-((?:\d+(?:ms|s|m|h|d|w))+)")
_PART_RE = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_EPOCH_RE = re.compile(r"\d+(?:\.\d+)?")
_ISO_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
# Epoch seconds have 10 digits until the year 2286; more look like ms, µs or ns.
_MAXEPOCH_DIGITS = 10
_FORMS = (
    'use RFC 3339 ("2024-05-01T12:00:00Z"), a date ("2024-05-01", local time), '
    'epoch seconds ("1714564800"), "now", or a time ago ("-30m", "-1h", "-2d", "-1h30m")'
)


def parse_time(text: str, now: int | None = None, tz: tzinfo | None = None) -> int:
    """Nanoseconds since the epoch for a time given on the command line.

    Args:
        text: RFC 3339 / ISO 8601 (without an offset: local time), a date (local
            midnight), epoch seconds, ``now``, or ``-<n><unit>[...]`` with units
            ms, s, m, h, d, w (also written ``now-1h``).
        now: the current time in ns (default: the clock).
        tz: the zone for times without an offset (default: the system's).

    Raises:
        QueryArgumentError: the text is none of these.
    """
    spec = text.strip()
    low = spec.lower()
    current = time.time_ns() if now is None else now
    if low == "now":
        return current
    if m := _RELATIVE_RE.fullmatch(low):
        ago = sum(int(n) * _UNITS_NS[unit] for n, unit in _PART_RE.findall(m.group(1)))
        return _in_range(text, current - ago)
    if _EPOCH_RE.fullmatch(spec):
        if len(spec.split(".")[0]) > _MAXEPOCH_DIGITS:
            raise QueryArgumentError(
                f'invalid time "{text}": epoch times are in seconds; this looks like '
                "milliseconds or nanoseconds"
            )
        return _in_range(text, int(Decimal(spec) * NS))
    if m := _ISO_RE.fullmatch(spec):
        date, clock, fraction, offset = m.groups()
        try:
            moment = datetime.fromisoformat(f"{date}T{clock or '00:00'}")
        except ValueError as err:
            raise QueryArgumentError(f'invalid time "{text}": {err}') from None
        if fraction is not None and len(fraction) > 9:
            raise QueryArgumentError(f'invalid time "{text}": more than nine fraction digits')
        if offset is None:
            zone = tz if tz is not None else moment.astimezone().tzinfo
            moment = moment.replace(tzinfo=zone)
        elif offset in ("Z", "z"):
            moment = moment.replace(tzinfo=UTC)
        else:
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:] or 0)
            if hours > 23 or minutes > 59:
                raise QueryArgumentError(f'invalid time "{text}": bad UTC offset "{offset}"')
            moment = moment.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
        delta = moment - EPOCH
        whole = (delta.days * 86400 + delta.seconds) * NS
        frac = int((fraction or "").ljust(9, "0")) if fraction else 0
        return _in_range(text, whole + frac)
    raise QueryArgumentError(f'invalid time "{text}": {_FORMS}')


def _in_range(text: str, time_ns: int) -> int:
    if not MIN_NS <= time_ns <= MAX_NS:
        raise QueryArgumentError(
            f'invalid time "{text}": outside the years 1677–2262 that can be stored'
        )
    return time_ns


def parse_every(text: str) -> int:
    """Nanoseconds for a window length like ``5m``, ``1h``, ``30s``, ``1h30m`` (``--every``).

    Raises:
        QueryArgumentError: not a positive duration in ms, s, m, h, d, w.
    """
    spec = text.strip().lower()
    if not re.fullmatch(r"(?:\d+(?:ms|s|m|h|d|w))+", spec):
        raise QueryArgumentError(
            f'--every: invalid window "{text}": use a number and a unit (ms, s, m, h, d, w), '
            'like "5m", "1h" or "1h30m"'
        )
    total = sum(int(n) * _UNITS_NS[unit] for n, unit in _PART_RE.findall(spec))
    if total <= 0:
        raise QueryArgumentError(f'--every: the window must be longer than 0, got "{text}"')
    return total
