"""InfluxDB line protocol: encode a :class:`Reading` to one line, parse one line back.

The encoder is strict: it never emits a line that an InfluxDB server (1.x, 2.x or 3)
would reject, misparse, split into two points or silently drop. Anything it cannot
write faithfully raises :class:`LineProtocolError` with a counter key in ``reason``:

``"nan"``
    a float field is NaN or ±Inf (InfluxDB 2.x rejects the whole batch for it).
``"empty"``
    the reading has no fields.
``"invalid_name"``
    an empty, reserved or unrepresentable measurement, tag key or field key, or a
    tag value that cannot round-trip (see below).
``"newline"``
    ``\\n`` or ``\\r`` anywhere: it would end the line and start another point.
``"int_range"``
    an integer field outside the signed 64-bit range.
``"string_too_long"``
    a string field over :data:`MAX_STRING_BYTES` UTF-8 bytes.
``"invalid_type"``
    a field value that is not a float, int, bool or str.
``"invalid_utf8"``
    a name or string holding a lone surrogate, which has no UTF-8 form.
``"time_range"``
    a timestamp outside the range InfluxDB accepts.
``"key_too_long"``
    measurement + tags + field key over InfluxDB's 65535-byte series key limit.

A tag whose value is ``""`` is left out of the line, not rejected: InfluxDB has no
empty tag values (its parser refuses ``t=``) and treats such a tag as absent, so
dropping it writes exactly the series InfluxDB would store.

Names (measurement, tag keys and values, field keys) are escaped as InfluxDB's docs
say; besides, a backslash in a name may not be its last character nor stand before a
backslash, quote, comma, equals sign or space. Such names have no spelling that all
InfluxDB parsers read back alike (the Go parser of 1.x/2.x keeps ``\\\\`` as two
backslashes, the Rust one of 3.x reads it as one), so they are refused rather than
stored under another name. Control characters are refused in names too: tabs and
NULs are separators to some of the parsers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from functools import lru_cache

from gateway.errors import RejectedInput
from gateway.pipeline.reading import FieldValue, Reading

__all__ = [
    "MAX_KEY_BYTES",
    "MAX_STRING_BYTES",
    "MAX_TIME_NS",
    "MIN_TIME_NS",
    "LineProtocolError",
    "encode",
    "encode_many",
    "parse",
    "series_key",
    "split_plain",
]

MAX_STRING_BYTES = 64 * 1024
"""Longest string field value, in UTF-8 bytes (InfluxDB 1.x's limit)."""

MAX_KEY_BYTES = 65535
"""InfluxDB's limit for measurement + tags + 4 + field key, escaped, in bytes."""

MIN_TIME_NS = -(2**63) + 2
MAX_TIME_NS = 2**63 - 2
"""The timestamps InfluxDB accepts (its ``MinNanoTime`` / ``MaxNanoTime``)."""

_I64_MIN = -(2**63)
_I64_END = 2**63
_U64_END = 2**64
_CACHE_SIZE = 4096

_RESERVED_TAG_KEYS = frozenset({"time", "_field", "_measurement", "_start", "_stop", "_value"})
# Characters a backslash in a name must not precede (see the module docstring).
_NO_BACKSLASH_BEFORE = frozenset('\\", =')
_CONTROL = frozenset(map(chr, [*range(32), 127]))
_BOOLS = {
    "t": True,
    "T": True,
    "true": True,
    "True": True,
    "TRUE": True,
    "f": False,
    "F": False,
    "false": False,
    "False": False,
    "FALSE": False,
}


class LineProtocolError(RejectedInput):
    """A reading that cannot be written as line protocol, or a line that cannot be parsed.

    ``column`` is the 1-based position of a parse error in the line, else ``None``.
    """

    def __init__(self, message: str, reason: str = "malformed", column: int | None = None) -> None:
        super().__init__(message, reason)
        self.column = column


def _q(text: str) -> str:
    """``text`` double-quoted for an error message, escaped and shortened if long."""
    if len(text) > 60:
        text = text[:57] + "..."
    quoted = json.dumps(text, ensure_ascii=False)
    return quoted.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_name(what: str, name: str) -> None:
    """Raise unless ``name`` can be written as a measurement, tag or field name."""
    if not name:
        raise LineProtocolError(f"{what} is empty", "invalid_name")
    if "\n" in name or "\r" in name:
        raise LineProtocolError(
            f"{what} {_q(name)}: contains a line break, which would split the point", "newline"
        )
    if not _CONTROL.isdisjoint(name):
        raise LineProtocolError(
            f"{what} {_q(name)}: contains a control character (tabs and NULs are "
            "separators to InfluxDB's parsers)",
            "invalid_name",
        )
    if name[-1] == "\\":
        raise LineProtocolError(
            f"{what} {_q(name)}: a trailing backslash cannot round-trip through InfluxDB",
            "invalid_name",
        )
    pos = name.find("\\")
    while pos >= 0:
        after = name[pos + 1]
        if after in _NO_BACKSLASH_BEFORE:
            raise LineProtocolError(
                f"{what} {_q(name)}: a backslash before {after!r} cannot round-trip "
                "through InfluxDB",
                "invalid_name",
            )
        pos = name.find("\\", pos + 1)
    if not name.isascii():
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise LineProtocolError(
                f"{what} {_q(name)}: contains a lone surrogate, which has no UTF-8 form",
                "invalid_utf8",
            ) from None


def _escape(name: str, specials: str) -> str:
    for char in specials:
        if char in name:
            name = name.replace(char, "\\" + char)
    return name


@lru_cache(maxsize=_CACHE_SIZE)
def _series(measurement: str, tag_items: tuple[tuple[str, str], ...]) -> tuple[str, int]:
    """The escaped ``measurement[,key=value...]`` and its length in UTF-8 bytes."""
    if not isinstance(measurement, str):
        raise LineProtocolError(f"measurement {measurement!r} is not a str", "invalid_name")
    _check_name("measurement", measurement)
    if measurement[0] == "_":
        raise LineProtocolError(
            f"measurement {_q(measurement)}: names starting with '_' are reserved by InfluxDB",
            "invalid_name",
        )
    if measurement[0] == "#":
        raise LineProtocolError(
            f"measurement {_q(measurement)}: InfluxDB reads a line starting with '#' "
            "as a comment and drops it",
            "invalid_name",
        )
    parts = [_escape(measurement, ", ")]
    for key, value in sorted(tag_items):
        if not (isinstance(key, str) and isinstance(value, str)):
            raise LineProtocolError(
                f"tag {key!r}={value!r}: tag keys and values must be str", "invalid_name"
            )
        _check_name("tag key", key)
        if key in _RESERVED_TAG_KEYS:
            raise LineProtocolError(f"tag key {_q(key)} is reserved by InfluxDB", "invalid_name")
        if not value:
            continue  # InfluxDB has no empty tag values: the tag is absent.
        _check_name(f"tag {_q(key)}: value", value)
        parts.append(f",{_escape(key, ',= ')}={_escape(value, ',= ')}")
    prefix = "".join(parts)
    return prefix, len(prefix.encode("utf-8"))


@lru_cache(maxsize=_CACHE_SIZE)
def _field_key(key: str) -> str:
    """The escaped field key followed by ``=``."""
    if not isinstance(key, str):
        raise LineProtocolError(f"field key {key!r} is not a str", "invalid_name")
    _check_name("field key", key)
    if key == "time":
        raise LineProtocolError('field key "time" is reserved by InfluxDB', "invalid_name")
    return _escape(key, ",= ") + "="


def _nonfinite(key: str, value: float) -> LineProtocolError:
    what = "NaN" if value != value else ("+Inf" if value > 0 else "-Inf")
    return LineProtocolError(f"field {_q(key)}: {what} cannot be written to InfluxDB", "nan")


def _int_range(key: str, value: int) -> LineProtocolError:
    return LineProtocolError(
        f"field {_q(key)}: integer {value} is outside the signed 64-bit range InfluxDB stores",
        "int_range",
    )


def _format_str(key: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise LineProtocolError(
            f"field {_q(key)}: string contains a line break, which would split the point",
            "newline",
        )
    if not value.isascii() or len(value) > MAX_STRING_BYTES:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            raise LineProtocolError(
                f"field {_q(key)}: string contains a lone surrogate, which has no UTF-8 form",
                "invalid_utf8",
            ) from None
        if size > MAX_STRING_BYTES:
            raise LineProtocolError(
                f"field {_q(key)}: string is {size} bytes, over the {MAX_STRING_BYTES}-byte "
                "limit of InfluxDB 1.x",
                "string_too_long",
            )
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if '"' in value:
        value = value.replace('"', '\\"')
    return f'"{value}"'


def _format_other(key: str, value: object) -> str:
    """Format a str, or a subclass of float/int/str (e.g. numpy.float64, IntEnum)."""
    if isinstance(value, str):
        return _format_str(key, str.__str__(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        number = int(value)
        if not _I64_MIN <= number < _I64_END:
            raise _int_range(key, number)
        return f"{number}i"
    if isinstance(value, float):
        real = float(value)
        if not math.isfinite(real):
            raise _nonfinite(key, real)
        return repr(real)
    raise LineProtocolError(
        f"field {_q(key)}: a {type(value).__qualname__} is not a float, int, bool or str",
        "invalid_type",
    )


def encode(reading: Reading) -> str:
    """One line of InfluxDB line protocol for ``reading``, without a trailing newline.

    Tags are sorted by key and those with an empty value left out; the timestamp is in
    nanoseconds. Raises
    :class:`LineProtocolError` for anything InfluxDB would not store as given.
    """
    fields = reading.fields
    if not fields:
        raise LineProtocolError(
            "reading has no fields: InfluxDB cannot store a point without fields", "empty"
        )
    try:
        prefix, prefix_bytes = _series(reading.measurement, tuple(reading.tags.items()))
    except TypeError as err:  # unhashable or unsortable tag keys/values
        raise LineProtocolError(f"tags are not str → str: {err}", "invalid_name") from None
    time_ns = reading.time_ns
    if type(time_ns) is not int or not MIN_TIME_NS <= time_ns <= MAX_TIME_NS:
        raise LineProtocolError(
            f"timestamp {time_ns!r} is outside the range InfluxDB accepts "
            f"({MIN_TIME_NS}..{MAX_TIME_NS} ns)",
            "time_range",
        )
    # A field key this many characters long surely fits the key limit (≤ 4 bytes a char).
    room = MAX_KEY_BYTES - 4 - prefix_bytes
    safe_chars = room // 4
    parts: list[str] = []
    for key, value in fields.items():
        try:
            name = _field_key(key)
        except TypeError:  # an unhashable key
            raise LineProtocolError(f"field key {key!r} is not a str", "invalid_name") from None
        if len(name) > safe_chars and len(name.encode("utf-8")) - 1 > room:
            raise LineProtocolError(
                f"field {_q(key)}: measurement, tags and field key exceed InfluxDB's "
                f"{MAX_KEY_BYTES}-byte series key limit",
                "key_too_long",
            )
        # Exact type checks: bool is not int here, and subclasses take the slow path.
        if type(value) is float:
            if not math.isfinite(value):
                raise _nonfinite(key, value)
            text = repr(value)
        elif type(value) is int:
            if not _I64_MIN <= value < _I64_END:
                raise _int_range(key, value)
            text = f"{value}i"
        elif type(value) is bool:
            text = "true" if value else "false"
        elif type(value) is str:
            text = _format_str(key, value)
        else:
            text = _format_other(key, value)
        parts.append(name + text)
    return f"{prefix} {','.join(parts)} {time_ns}"


def encode_many(
    readings: Iterable[Reading],
) -> tuple[list[str], list[tuple[Reading, LineProtocolError]]]:
    """Encode each reading: ``(lines, [(reading, error), ...])`` for the ones refused."""
    lines: list[str] = []
    rejected: list[tuple[Reading, LineProtocolError]] = []
    for reading in readings:
        try:
            lines.append(encode(reading))
        except LineProtocolError as err:
            rejected.append((reading, err))
    return lines, rejected


def series_key(line: str) -> str:
    """The ``measurement[,tags]`` part of an encoded line: all before its first unescaped space.

    Cheap (no unescaping) and exact for the lines :func:`encode` writes; meant for
    per-series ordering and dedupe.
    """
    end = line.find(" ")
    while end > 0 and line[end - 1] == "\\":
        end = line.find(" ", end + 1)
    if end <= 0:
        raise LineProtocolError(
            "no space separates the measurement and tags from the fields", "malformed", 1
        )
    return line[:end]


# ----------------------------------------------------------------------------- parsing


def _scalar(token: str) -> FieldValue | None:
    """The value of an unquoted field value token, or ``None`` if it is not valid."""
    last = token[-1]
    if last == "i" or last == "u":
        digits = token[:-1]
        body = digits[1:] if last == "i" and digits[:1] == "-" else digits
        # isascii: str.isdigit() also accepts non-ASCII digits such as "٣".
        if not (body.isdigit() and body.isascii()):
            return None
        number = int(digits)
        if last == "i":
            return number if _I64_MIN <= number < _I64_END else None
        return number if number < _U64_END else None
    if last >= "A":  # every number ends in a digit or "."
        return _BOOLS.get(token)
    # float() would also take "nan", "inf", "1_0", "+1" and non-ASCII digits.
    if token[0] == "+" or token.strip("0123456789.eE+-"):
        return None
    try:
        real = float(token)
    except ValueError:
        return None
    return real if math.isfinite(real) else None


def _parse_plain(line: str) -> Reading | None:
    """Parse a line without escapes, quotes or control characters; ``None`` if in doubt."""
    sections = line.split(" ")
    if len(sections) != 3:
        return None
    key, field_text, stamp = sections
    names = key.split(",")
    measurement = names[0]
    if not measurement or measurement[0] == "#":
        return None
    tags: dict[str, str] = {}
    for pair in names[1:]:
        tag, _, value = pair.partition("=")
        if not tag or not value or "=" in value or tag in tags:
            return None
        tags[tag] = value
    plain = _plain_fields(field_text, stamp)
    if plain is None:
        return None
    return Reading(measurement, tags, plain[0], plain[1])


def _plain_fields(field_text: str, stamp: str) -> tuple[dict[str, FieldValue], int] | None:
    """The fields and timestamp of a plain line; ``None`` if in doubt."""
    fields: dict[str, FieldValue] = {}
    for pair in field_text.split(","):
        name, _, token = pair.partition("=")
        if not name or not token or name in fields:
            return None
        parsed = _scalar(token)
        if parsed is None:
            return None
        fields[name] = parsed
    if not (stamp.isdigit() and stamp.isascii()):
        return None  # negative or invalid: the general parser decides
    time_ns = int(stamp)
    if time_ns > MAX_TIME_NS:
        return None
    return fields, time_ns


def split_plain(line: str) -> tuple[str, dict[str, FieldValue], int] | None:
    """``(series key, fields, time)`` of a line without escapes, quotes or control
    characters, the fields and time parsed as :func:`parse` does; ``None`` if in doubt.

    The series key (``measurement[,tags]``) is returned unparsed: a caller that has seen
    it parsed before (by :func:`parse`, in an earlier line) skips parsing it again.
    """
    if "\\" in line or '"' in line or not line.isprintable():
        return None
    sections = line.split(" ")
    if len(sections) != 3:
        return None
    plain = _plain_fields(sections[1], sections[2])
    if plain is None:
        return None
    return sections[0], plain[0], plain[1]


def _fail(message: str, index: int) -> LineProtocolError:
    return LineProtocolError(f"column {index + 1}: {message}", "malformed", index + 1)


def _scan_name(line: str, i: int, stops: str, escapable: str, what: str) -> tuple[str, int]:
    """Read a name from ``line[i:]`` up to an unescaped char in ``stops``; return it and the end."""
    out: list[str] = []
    n = len(line)
    start = i
    while i < n:
        char = line[i]
        if char == "\\":
            if i + 1 == n:
                raise _fail(f"{what} ends with a backslash", i)
            after = line[i + 1]
            if after in escapable:
                out.append(after)
                i += 2
                continue
            if after in _NO_BACKSLASH_BEFORE:
                # e.g. "\\" is one backslash to InfluxDB 3 and two to 1.x/2.x.
                escape = "\\" + after
                raise _fail(
                    f"{what}: {escape!r} means different things to different InfluxDB versions",
                    i,
                )
            out.append(char)
            i += 1
            continue
        if char in stops:
            break
        if char in _CONTROL:
            raise _fail(f"{what}: control character {char!r}", i)
        out.append(char)
        i += 1
    if i == start:
        raise _fail(f"{what} is empty", i)
    return "".join(out), i


def _parse_string(line: str, i: int) -> tuple[str, int]:
    """Read the quoted string starting at ``line[i] == '"'``; return it and the index after."""
    out: list[str] = []
    start = i
    i += 1
    while True:
        quote = line.find('"', i)
        if quote < 0:
            raise _fail("string value has no closing quote", start)
        backslash = line.find("\\", i, quote)
        if backslash < 0:
            out.append(line[i:quote])
            return "".join(out), quote + 1
        out.append(line[i:backslash])
        after = line[backslash + 1]
        if after == "\\" or after == '"':
            out.append(after)
            i = backslash + 2
        else:  # a lone backslash is literal in InfluxDB strings
            out.append("\\")
            i = backslash + 1


def _parse_general(line: str) -> Reading:
    """Parse any line, escapes and quoted strings included, with a column on errors."""
    n = len(line)
    i = 0
    while i < n and line[i] in " \t":
        i += 1
    if i == n:
        raise _fail("empty line", i)
    if line[i] == "#":
        raise _fail("a comment line, not a point", i)
    measurement, i = _scan_name(line, i, ", ", ", ", "measurement")
    tags: dict[str, str] = {}
    while i < n and line[i] == ",":
        tag, i = _scan_name(line, i + 1, "=, ", ",= ", "tag key")
        if i == n or line[i] != "=":
            raise _fail(f"tag key {_q(tag)} has no '=' and value", i)
        tag_value, i = _scan_name(line, i + 1, ",= ", ",= ", f"tag {_q(tag)}: value")
        if i < n and line[i] == "=":
            raise _fail(f"tag {_q(tag)}: unescaped '=' in value", i)
        if tag in tags:
            raise _fail(f"duplicate tag key {_q(tag)}", i)
        tags[tag] = tag_value
    if i == n:
        raise _fail("missing fields", i)
    while i < n and line[i] == " ":
        i += 1
    fields: dict[str, FieldValue] = {}
    while True:
        name, i = _scan_name(line, i, "=, ", ",= ", "field key")
        if i == n or line[i] != "=":
            raise _fail(f"field key {_q(name)} has no '=' and value", i)
        if name in fields:
            raise _fail(f"duplicate field key {_q(name)}", i)
        i += 1
        value: FieldValue | None
        if i < n and line[i] == '"':
            value, i = _parse_string(line, i)
        else:
            end = i
            while end < n and line[end] != "," and line[end] != " ":
                end += 1
            if end == i:
                raise _fail(f"field {_q(name)} has no value", i)
            value = _scalar(line[i:end])
            if value is None:
                raise _fail(f"field {_q(name)}: invalid value {_q(line[i:end])}", i)
            i = end
        fields[name] = value
        if i == n:
            raise _fail("missing timestamp", i)
        if line[i] == " ":
            break
        if line[i] != ",":
            raise _fail(f"unexpected {line[i]!r} after the value of field {_q(name)}", i)
        i += 1
    while i < n and line[i] == " ":
        i += 1
    end = i
    while end < n and line[end] != " ":
        end += 1
    if end == i:
        raise _fail("missing timestamp", i)
    time_ns = _scalar(line[i:end] + "i")
    if type(time_ns) is not int or not MIN_TIME_NS <= time_ns <= MAX_TIME_NS:
        raise _fail(f"invalid timestamp {_q(line[i:end])}", i)
    rest = line[end:].lstrip(" ")
    if rest:
        raise _fail(f"unexpected text after the timestamp: {_q(rest)}", n - len(rest))
    return Reading(measurement, tags, fields, time_ns)


def parse(line: str) -> Reading:
    """Parse one line of InfluxDB line protocol (one trailing ``\\n`` is allowed).

    Accepts what InfluxDB accepts (escapes, tagless lines, ``i``/``u`` integers, floats
    with exponents, every boolean spelling, quoted strings) but requires a timestamp,
    refuses duplicate keys, control characters in names, and escapes InfluxDB versions
    read differently (``\\\\`` in names). ``u`` integers come back as ``int``.
    Raises :class:`LineProtocolError` (reason ``"malformed"``) with the column.
    """
    if line.endswith("\n"):
        line = line[:-1]
    if "\n" in line or "\r" in line:
        at = min(pos for pos in (line.find("\n"), line.find("\r")) if pos >= 0)
        raise _fail("a line break inside the line", at)
    if "\\" not in line and '"' not in line and line.isprintable():
        reading = _parse_plain(line)
        if reading is not None:
            return reading
    return _parse_general(line)
