"""NMEA 0183 sentences: framing checks and the field layout of the sentences we decode.

Pure functions and tables, no state: :mod:`devices.nmea._driver` combines the decoded
sentences of one epoch into a reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Final

from devices._parsing import excerpt
from gateway.errors import RejectedInput

__all__ = ["SENTENCES", "Decoded", "Sentence", "checked_sentence", "decode"]

# $ttsss,... : a two-letter talker (GP, GN, GL, GA, BD, GB, GQ, ...) and a three-letter type.
_ADDRESS: Final = re.compile(rb"[A-Z]{2}[A-Z]{3}")
_HEX: Final = re.compile(rb"[0-9A-Fa-f]{2}")
_TIME: Final = re.compile(r"(\d\d)(\d\d)(\d\d)(?:\.(\d{1,9}))?")
_LAT: Final = re.compile(r"(\d\d)(\d\d(?:\.\d*)?)")
_LON: Final = re.compile(r"(\d\d\d)(\d\d(?:\.\d*)?)")


@dataclass(frozen=True, slots=True)
class Sentence:
    """A sentence whose checksum is good: ``$GPGGA,a,b*hh`` → talker GP, type GGA, fields."""

    talker: str
    type: str
    fields: list[str]


@dataclass(slots=True)
class Decoded:
    """What one sentence says: its time of day (ns since midnight), date and values."""

    time_of_day_ns: int | None = None
    date: date | None = None
    values: dict[str, float | int] | None = None
    valid: bool = True  # False: the receiver flags its position as not a fix


def checked_sentence(frame: bytes, require_checksum: bool) -> Sentence | None:
    """The sentence in ``frame``, checksum verified; None for a blank line.

    Bytes before the last ``$`` are dropped: ``$`` cannot occur inside a sentence, so
    that is line noise or the tail of a line cut by a reconnect.
    """
    start = frame.rfind(b"$")
    if start < 0:
        if not frame.strip():
            return None
        msg = f"not an NMEA sentence (no $): {_show(frame)}"
        raise RejectedInput(msg, reason="malformed")
    body = frame[start + 1 :].rstrip(b"\r\n ")
    star = body.rfind(b"*")
    if star >= 0:
        given = body[star + 1 :]
        body = body[:star]
        if not _HEX.fullmatch(given):
            msg = f"checksum {_show(given)} is not two hex digits"
            raise RejectedInput(msg, reason="checksum")
        computed = 0
        for byte in body:
            computed ^= byte
        if computed != int(given, 16):
            msg = f"checksum {given.decode()} does not match the sentence ({computed:02X}): {_show(frame[start:])}"
            raise RejectedInput(msg, reason="checksum")
    elif require_checksum:
        msg = f"sentence has no checksum: {_show(frame[start:])}"
        raise RejectedInput(msg, reason="checksum")
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError as err:
        msg = f"non-ASCII byte at position {err.start + 1} of the sentence"
        raise RejectedInput(msg, reason="encoding") from None
    address, _, rest = text.partition(",")
    if address.startswith("P"):  # proprietary ($PSRF, $PUBX, ...): not ours to decode
        return Sentence("P", address, [])
    if not _ADDRESS.fullmatch(address.encode()):
        msg = f"bad sentence address {excerpt(address, 20)} (expected e.g. GPGGA)"
        raise RejectedInput(msg, reason="malformed")
    return Sentence(address[:2], address[2:], rest.split(","))


def decode(sentence: Sentence) -> Decoded | None:
    """The values of a sentence type we decode (see :data:`SENTENCES`); None for others."""
    layout = SENTENCES.get(sentence.type)
    if layout is None:
        return None
    out = Decoded(values={})
    fields = sentence.fields
    if len(fields) < layout.min_fields:
        msg = f"{sentence.type} has {len(fields)} fields, expected at least {layout.min_fields}"
        raise RejectedInput(msg, reason="malformed")
    for rule in layout.rules:
        rule(fields, out)
    return out


# -- field rules: each reads its fields and stores what it found in ``out`` ----------------

Rule = Callable[[list[str], Decoded], None]


def _number(name: str, index: int, kind: type[float] | type[int] = float) -> Rule:
    def rule(fields: list[str], out: Decoded) -> None:
        text = fields[index] if index < len(fields) else ""
        if not text:
            return
        try:
            value = kind(text)
        except ValueError:
            msg = f"{name} is {excerpt(text, 20)}, not a number"
            raise RejectedInput(msg, reason="malformed") from None
        assert out.values is not None
        out.values[name] = value

    return rule


def _time(index: int) -> Rule:
    def rule(fields: list[str], out: Decoded) -> None:
        text = fields[index]
        if not text:
            return
        match = _TIME.fullmatch(text)
        if match is None or int(match[1]) > 23 or int(match[2]) > 59 or int(match[3]) > 60:
            msg = f"time {excerpt(text, 20)} is not hhmmss[.sss]"
            raise RejectedInput(msg, reason="malformed")
        h, m, s, frac = match.groups()
        seconds = int(h) * 3600 + int(m) * 60 + int(s)
        out.time_of_day_ns = seconds * 10**9 + int((frac or "0").ljust(9, "0"))

    return rule


def _position(index: int) -> Rule:
    """Latitude and longitude from ``ddmm.mmmm,N,dddmm.mmmm,E`` at ``index``."""

    def rule(fields: list[str], out: Decoded) -> None:
        lat, ns, lon, ew = fields[index : index + 4]
        if not (lat or lon):
            return
        assert out.values is not None
        out.values["latitude"] = _degrees(lat, ns, _LAT, "NS", 90)
        out.values["longitude"] = _degrees(lon, ew, _LON, "EW", 180)

    return rule


def _degrees(text: str, hemisphere: str, pattern: re.Pattern[str], signs: str, limit: int) -> float:
    match = pattern.fullmatch(text)
    what = "latitude" if signs == "NS" else "longitude"
    if match is None or hemisphere not in signs or not hemisphere:
        msg = f"{what} {excerpt(text + ',' + hemisphere, 24)} is not {'dd' if signs == 'NS' else 'ddd'}mm.mmmm,{'/'.join(signs)}"
        raise RejectedInput(msg, reason="malformed")
    degrees, minutes = int(match[1]), float(match[2])
    value = degrees + minutes / 60
    if minutes >= 60 or value > limit:
        msg = f"{what} {excerpt(text + ',' + hemisphere, 24)} is out of range"
        raise RejectedInput(msg, reason="malformed")
    return -value if hemisphere == signs[1] else value


def _status(index: int, valid: str) -> Rule:
    """A status letter: anything but ``valid`` (``A``) means the position is not a fix."""

    def rule(fields: list[str], out: Decoded) -> None:
        if index < len(fields) and fields[index] != valid:
            out.valid = False

    return rule


def _fix_quality(index: int) -> Rule:
    number = _number("fix_quality", index, int)

    def rule(fields: list[str], out: Decoded) -> None:
        number(fields, out)
        assert out.values is not None
        if out.values.get("fix_quality", 0) == 0:
            out.valid = False

    return rule


def _ddmmyy(index: int) -> Rule:
    def rule(fields: list[str], out: Decoded) -> None:
        text = fields[index]
        if not text:
            return
        if len(text) != 6 or not text.isdigit():
            msg = f"date {excerpt(text, 20)} is not ddmmyy"
            raise RejectedInput(msg, reason="malformed")
        out.date = _date(int(text[4:]), int(text[2:4]), int(text[:2]), text)

    return rule


def _zda_date(index: int) -> Rule:
    def rule(fields: list[str], out: Decoded) -> None:
        day, month, year = fields[index : index + 3]
        if not (day or month or year):
            return
        if not (day.isdigit() and month.isdigit() and year.isdigit() and len(year) == 4):
            msg = f"date {excerpt(','.join((day, month, year)), 20)} is not dd,mm,yyyy"
            raise RejectedInput(msg, reason="malformed")
        out.date = _date(int(year), int(month), int(day), f"{day},{month},{year}")

    return rule


def _date(year: int, month: int, day: int, text: str) -> date:
    # Two-digit years: GPS started in 1980, so 80-99 are the 1900s and 00-79 the 2000s.
    if year < 100:
        year += 1900 if year >= 80 else 2000
    try:
        return date(year, month, day)
    except ValueError:
        msg = f"date {excerpt(text, 20)} is not a calendar date"
        raise RejectedInput(msg, reason="malformed") from None


def _gsa_satellites(first: int) -> Rule:
    """The number of satellite ids listed in GSA's 12 slots."""

    def rule(fields: list[str], out: Decoded) -> None:
        assert out.values is not None
        out.values["gsa_satellites"] = sum(1 for f in fields[first : first + 12] if f)

    return rule


def _vtg(fields: list[str], out: Decoded) -> None:
    """VTG: ``track,T,magtrack,M,knots,N,kmh,K`` (NMEA 2.3+) or ``track,magtrack,knots,kmh``."""
    labelled = len(fields) >= 8 and fields[1] == "T"
    _number("course", 0)(fields, out)
    _number("speed", 4 if labelled else 2)(fields, out)


@dataclass(frozen=True, slots=True)
class Layout:
    """How to read a sentence type: the fewest fields it has, and the rules for them."""

    min_fields: int
    rules: tuple[Rule, ...]


SENTENCES: Final[dict[str, Layout]] = {
    # GGA: time, lat, N/S, lon, E/W, quality, satellites, HDOP, altitude, M, geoid separation, M, ...
    "GGA": Layout(
        12,
        (
            _time(0),
            _position(1),
            _fix_quality(5),
            _number("satellites", 6, int),
            _number("hdop", 7),
            _number("altitude", 8),
            _number("geoid_separation", 10),
        ),
    ),
    # RMC: time, status A/V, lat, N/S, lon, E/W, speed (knots), course, ddmmyy, magvar, E/W, [mode]
    "RMC": Layout(
        9,
        (
            _time(0),
            _status(1, "A"),
            _position(2),
            _number("speed", 6),
            _number("course", 7),
            _ddmmyy(8),
        ),
    ),
    # GLL: lat, N/S, lon, E/W, time, status A/V, [mode]
    "GLL": Layout(5, (_position(0), _time(4), _status(5, "A"))),
    "VTG": Layout(4, (_vtg,)),
    # GSA: selection A/M, fix mode 1/2/3, 12 satellite ids, PDOP, HDOP, VDOP, [system id]
    "GSA": Layout(
        17,
        (
            _number("fix_mode", 1, int),
            _gsa_satellites(2),
            _number("pdop", 14),
            _number("hdop", 15),
            _number("vdop", 16),
        ),
    ),
    # ZDA: time, day, month, year, zone hours, zone minutes
    "ZDA": Layout(4, (_time(0), _zda_date(1))),
}
"""The sentence types decoded, by type (any talker); the rest are ignored."""


def _show(data: bytes) -> str:
    return excerpt(data.decode("ascii", "backslashreplace"), 60)
