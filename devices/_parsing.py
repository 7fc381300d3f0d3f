"""Text helpers shared by the built-in drivers: scalars, safe JSON, dotted paths, timestamps.

Private to ``devices``: third-party drivers should not import it (copy what you need).
Every function here either returns a value or raises :class:`~gateway.errors.RejectedInput`
or :class:`ValueError` with a message fit for an operator; none of them ever does I/O.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from gateway.errors import RejectedInput

__all__ = [
    "MISSING",
    "decode_text",
    "excerpt",
    "flatten",
    "loads_json",
    "lookup",
    "parse_scalar",
    "split_path",
    "to_time_ns",
]

_NUMBER: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER: Final = re.compile(r"[+-]?\d+")
_SIGNS: Final = ("+", "-")
# What an ASCII number's digits (after the sign) start and end with.
_NUMBER_DIGITS: Final = frozenset("0123456789.")
# The spellings C printf, Python and ESPHome use for non-finite values. They are kept as
# float NaN/±inf so the normalizer can drop and count them (reason "nan").
_SPECIAL: Final = {
    "nan": math.nan, "+nan": math.nan, "-nan": math.nan,
    "inf": math.inf, "+inf": math.inf, "-inf": -math.inf,
    "infinity": math.inf, "+infinity": math.inf, "-infinity": -math.inf,
}  # fmt: skip
_BOOLS: Final = {"true": True, "false": False}

# Epoch numbers are told apart by magnitude. 1e11 s is the year 5138, so anything below
# is seconds; the same bound scaled by 1000 separates ms from µs and µs from ns. Any
# timestamp between 1973 and 5138 is classified correctly in every unit.
_SECONDS_BELOW: Final = Decimal(10) ** 11
_SCALES: Final = (
    (_SECONDS_BELOW, 10**9),
    (_SECONDS_BELOW * 1000, 10**6),
    (_SECONDS_BELOW * 10**6, 10**3),
)
_INT64_MAX: Final = 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND: Final = timedelta(seconds=1)
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s*([Zz]|[+-]\d\d:?\d\d)?"
)


class _Missing:
    """The type of :data:`MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""What :func:`lookup` returns for a path that is not in the document."""


def excerpt(text: str, limit: int = 60) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    shown = text if len(text) <= limit else text[:limit] + "…"
    return json.dumps(shown, ensure_ascii=False)


def decode_text(data: bytes, encoding: str = "utf-8") -> str:
    """``data`` decoded strictly; a leading byte-order mark is dropped.

    Raises:
        RejectedInput: reason ``encoding``, naming the offending byte position.
    """
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        msg = f"invalid {encoding} at byte {err.start} ({err.reason})"
        raise RejectedInput(msg, reason="encoding") from None
    return text.removeprefix("\ufeff")


def parse_scalar(text: str) -> int | float | bool | str:
    """A field value from its text: an int, a float, a bool (``true``/``false``), or the text.

    ``nan``, ``inf`` and ``infinity`` (any case, optional sign) become float NaN/±inf; the
    normalizer drops those per field and counts them. Python's looser spellings (``1_000``,
    ``0x10``, surrounding blanks) stay strings.
    """
    # ASCII numbers, the common case, without a regex: they are exactly the ASCII
    # strings int() or float() read that start and end as _NUMBER does and hold no "_".
    if text.isascii():
        digits = text[1:] if text[:1] in _SIGNS else text
        if digits.isdigit():
            return _integer(text)
        if digits[:1] in _NUMBER_DIGITS and text[-1] in _NUMBER_DIGITS and "_" not in text:
            try:
                return float(text)
            except ValueError:  # "1.2.3", "1e", "0x1": not a number
                pass
    elif _INTEGER.fullmatch(text):
        return _integer(text)
    elif _NUMBER.fullmatch(text):
        return float(text)
    lowered = text.lower()
    special = _SPECIAL.get(lowered)
    if special is not None:
        return special
    boolean = _BOOLS.get(lowered)
    if boolean is not None:
        return boolean
    return text


def _integer(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:  # over sys.get_int_max_str_digits(): keep it as a (huge) float
        return float(text)


def loads_json(text: str) -> object:
    """Parse JSON text that may be hostile.

    ``NaN``, ``Infinity`` and numbers that overflow (``1e999``) come back as float
    NaN/±inf for the normalizer to drop. Nesting deeper than the interpreter's recursion
    limit and integers longer than ``sys.get_int_max_str_digits()`` are rejected.

    Raises:
        RejectedInput: reason ``malformed``, saying what is wrong and where.
    """
    try:
        return json.loads(text)
    except RecursionError:
        msg = "JSON is nested too deeply"
        raise RejectedInput(msg, reason="malformed") from None
    except json.JSONDecodeError as err:
        msg = f"invalid JSON: {err.msg} at character {err.pos}"
        raise RejectedInput(msg, reason="malformed") from None
    except ValueError:  # an integer literal over the int/str conversion limit
        msg = f"JSON has an integer longer than {sys.get_int_max_str_digits()} digits"
        raise RejectedInput(msg, reason="malformed") from None


def split_path(path: str) -> list[str]:
    """The keys of a dotted path such as ``"AM2301.Temperature"``.

    Raises:
        ValueError: the path is empty or has an empty segment.
    """
    keys = path.split(".")
    if not all(keys):
        msg = f'"{path}" is not a dotted path like "AM2301.Temperature" (empty segment)'
        raise ValueError(msg)
    return keys


def lookup(doc: object, keys: list[str]) -> object:
    """The value at ``keys`` inside ``doc``, or :data:`MISSING`.

    A key made of digits indexes into an array (``"aenergy.by_minute.0"``).
    """
    node = doc
    for key in keys:
        if isinstance(node, dict):
            if key not in node:
                return MISSING
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return MISSING
    return node


def flatten(doc: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Leaves of a JSON object keyed by dotted path, in document order.

    Numbers, bools and strings are leaves; nested objects are walked; arrays, nulls and
    empty keys are skipped (InfluxDB has no array type; pick elements by path instead).
    Iterative, so the depth JSON allowed cannot overflow the stack here.
    """
    out: dict[str, object] = {}
    stack: list[tuple[str, Iterator[tuple[str, object]]]] = [(prefix, iter(doc.items()))]
    while stack:
        base, items = stack[-1]
        for key, value in items:
            if not key:
                continue
            if isinstance(value, dict):
                stack.append((f"{base}{key}.", iter(value.items())))
                break
            if value is not None and not isinstance(value, list):
                out[base + key] = value
        else:
            stack.pop()
    return out


def to_time_ns(value: object) -> int:
    """Nanoseconds since the epoch from a device timestamp.

    Accepted: an epoch number (seconds, ms, µs or ns, told apart by magnitude; as a JSON
    number or numeric text), or an RFC 3339 / ISO 8601 date-time string. A date-time
    without a zone is taken as UTC. Fractions are kept to the nanosecond.

    Raises:
        ValueError: the value is not a timestamp or lies outside the int64 ns range.
    """
    if isinstance(value, bool):
        msg = f"expected a timestamp, got {json.dumps(value)}"
        raise ValueError(msg)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            msg = f"expected a timestamp, got {value}"
            raise ValueError(msg)
        # repr() is the shortest text that reads back as the same float, so
        # 1763646263.123 stays exactly .123 s instead of .12299990654 s.
        return _epoch_ns(Decimal(repr(value)) if isinstance(value, float) else Decimal(value))
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            try:
                number = Decimal(text)
            except InvalidOperation:  # unreachable for _NUMBER matches; defensive
                number = None
            if number is not None:
                return _epoch_ns(number)
        if m := _RFC3339.fullmatch(text):
            return _rfc3339_ns(m, value)
        msg = f"expected epoch seconds/ms/ns or an RFC 3339 time, got {excerpt(value, 40)}"
        raise ValueError(msg)
    msg = f"expected a timestamp, got a JSON {_json_kind(value)}"
    raise ValueError(msg)


def _epoch_ns(number: Decimal) -> int:
    magnitude = abs(number)
    scale = 1
    for bound, factor in _SCALES:
        if magnitude < bound:
            scale = factor
            break
    ns = int((number * scale).to_integral_value())
    if not -_INT64_MAX <= ns <= _INT64_MAX:
        msg = f"timestamp {number} is out of range"
        raise ValueError(msg)
    return ns


def _rfc3339_ns(m: re.Match[str], original: str) -> int:
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, zone = m.group(7), m.group(8)
    try:
        stamp = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as err:
        msg = f"invalid date-time {excerpt(original, 40)}: {err}"
        raise ValueError(msg) from None
    seconds = (stamp - _EPOCH) // _SECOND
    if zone and zone not in "Zz":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    ns = seconds * 10**9
    if fraction:
        ns += int(fraction[:9].ljust(9, "0"))
    return ns


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return type(value).__name__
