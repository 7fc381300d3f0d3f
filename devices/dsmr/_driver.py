"""The ``dsmr`` driver: P1 telegrams of Dutch, Belgian and Luxembourg smart meters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from devices._parsing import excerpt
from devices.dsmr._framer import TelegramFramer, crc16
from devices.dsmr._obis import MBUS, MBUS_MEDIUM, METER, Spec
from gateway.driver import Framer, RawSample, RejectedInput, SerialDriver, SerialOptions
from gateway.options import Size

__all__ = ["DsmrDriver", "DsmrOptions"]

P1Version = Literal["2.2", "3", "4", "5"]
# DSMR 4 and 5 (and e-MUCS, Smarty) send at 115200 8N1; DSMR 2.2 and 3 at 9600 7E1.
_LINE_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    "2.2": {"baudrate": 9600, "bytesize": 7, "parity": "E"},
    "3": {"baudrate": 9600, "bytesize": 7, "parity": "E"},
}
# A DSMR 5 telegram is about 1 KiB; four M-Bus devices and a 1024-character text message
# (sent hex-encoded, so 2 KiB) still fit well within 8 KiB.
DEFAULT_MAX_TELEGRAM_BYTES: Final = 8 * 1024
# Meters state local time with S (summer, UTC+2) or W (winter, UTC+1); older telegrams
# have no letter and are read in this zone.
DEFAULT_TIMEZONE: Final = "Europe/Amsterdam"
# DSMR 2.2-4 meters send a telegram every 10 s (DSMR 5 every second); the core calls a
# meter stale after five of these (1 minute) without one.
TELEGRAM_INTERVAL_S: Final = 12.0
_DST: Final = {"S": timezone(timedelta(hours=2)), "W": timezone(timedelta(hours=1))}

_LINE: Final = re.compile(r"(\d{1,3})-(\d{1,3}):(\d{1,3}\.\d{1,3}\.\d{1,3})((?:\([^()]*\))+)")
_VALUE: Final = re.compile(r"\(([^()]*)\)")
_NUMBER: Final = re.compile(r"[+-]?\d+(?:\.\d+)?")
_STAMP: Final = re.compile(r"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)([SW]?)")
_CRC: Final = re.compile(r"[0-9A-Fa-f]{4}")
_VERSION: Final = re.compile(r"(?:1-3:0\.2\.8|0-0:96\.1\.4)\((\d+)\)")


class DsmrOptions(SerialOptions):
    """Options of the ``dsmr`` driver (see ``devices/dsmr/sample.toml``)."""

    baudrate: int = Field(
        default=115200,
        gt=0,
        description="Line speed in baud; 9600 by default with p1_version 2.2 or 3.",
    )
    bytesize: Literal[5, 6, 7, 8] = Field(
        default=8, description="Data bits per character; 7 by default with p1_version 2.2 or 3."
    )
    parity: Literal["N", "E", "O", "M", "S"] = Field(
        default="N", description='Parity; "E" by default with p1_version 2.2 or 3.'
    )
    p1_version: P1Version = Field(
        default="5",
        description="The meter's DSMR version: 2.2/3 mean 9600 7E1, 4/5 115200 8N1 and a CRC.",
    )
    timezone: str = Field(
        default=DEFAULT_TIMEZONE,
        description="Zone of meter timestamps without an S/W (summer/winter) letter.",
    )
    max_frame_bytes: Size = Field(
        default=DEFAULT_MAX_TELEGRAM_BYTES,
        description="A longer telegram is discarded and counted.",
    )

    @model_validator(mode="before")
    @classmethod
    def _line_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            defaults = _LINE_DEFAULTS.get(str(data.get("p1_version", "5")), {})
            data = {**defaults, **data}
        return data

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        load_zone(name)
        return name


def load_zone(name: str) -> ZoneInfo:
    """The zone called ``name``, or ValueError naming an example."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f'unknown time zone "{name}" (use an IANA name such as "Europe/Amsterdam")'
        raise ValueError(msg) from None


class DsmrDriver(SerialDriver[DsmrOptions]):
    """Decodes P1 telegrams: one reading of the electricity meter per telegram, stamped
    with the meter's time, and one reading per M-Bus device (gas, water, heat) each time
    its own timestamp moves on.

    Rejections: ``checksum`` (CRC16 after ``!`` wrong, not hex, or missing on DSMR 4+),
    ``truncated`` (a telegram cut off, or bytes between telegrams), ``encoding``
    (non-ASCII bytes), ``malformed`` (a line that is not ``OBIS(value)…``, a value or
    unit that does not fit its code), ``bad_time`` (an unreadable timestamp).
    """

    Options: ClassVar[type[DsmrOptions]] = DsmrOptions
    expected_interval = TELEGRAM_INTERVAL_S
    description: ClassVar[str] = "smart meters' P1 port (DSMR 2.2-5, Belgium, Luxembourg)"
    units: Mapping[str, str] = MappingProxyType(
        {spec.name: spec.unit for spec in METER.values() if spec.unit}
        | {"gas_delivered": "m³", "water_delivered": "m³", "warm_water_delivered": "m³"}
        | {"heat_delivered": "GJ"}
    )

    def __init__(self, device: str, options: DsmrOptions) -> None:
        super().__init__(device, options)
        self._zone = load_zone(options.timezone)
        self._require_crc = options.p1_version in ("4", "5")
        # The last M-Bus timestamp seen per channel: a gas meter's value is repeated in
        # every telegram but changes only every 5 min (DSMR 5) or hour (DSMR 4).
        self._mbus_seen: dict[str, int] = {}

    def framer(self) -> Framer:
        """Telegrams from ``/`` to the line after ``!``."""
        return TelegramFramer(self.options.max_frame_bytes)

    def parse(self, frame: bytes) -> list[RawSample]:
        """Decode one telegram into the meter's reading and new M-Bus readings."""
        if not frame.startswith(b"/"):
            shown = excerpt(frame.decode("ascii", "backslashreplace"), 40)
            msg = f"bytes outside a telegram (a cut-off telegram or noise): {shown}"
            raise RejectedInput(msg, reason="truncated")
        try:
            text = frame.decode("ascii")
        except UnicodeDecodeError as err:
            msg = f"non-ASCII byte at position {err.start} of the telegram"
            raise RejectedInput(msg, reason="encoding") from None
        end = text.rfind("!")
        if end < 0:
            msg = f"telegram cut off before its ! line ({len(text)} bytes, a new / header followed)"
            raise RejectedInput(msg, reason="truncated")
        self._check_crc(frame[: end + 1], text[end + 1 :].strip(), text)
        lines = _logical_lines(text[:end])
        fields: dict[str, object] = {}
        time_ns: int | None = None
        mbus: dict[str, dict[str, Any]] = {}
        for line in lines[1:]:
            match = _LINE.fullmatch(line)
            if match is None:
                msg = f"line is not OBIS(value): {excerpt(line, 40)}"
                raise RejectedInput(msg, reason="malformed")
            channel, code, raw = match[2], match[3], _VALUE.findall(match[4])
            if channel == "0":
                spec = METER.get(code)
                if spec is None:
                    continue
                if spec.kind == "time":
                    time_ns = self._stamp(raw[0], line)
                else:
                    value = _value(spec, raw, line)
                    if value is not None:
                        fields[spec.name] = value
            elif code in MBUS:
                mbus.setdefault(channel, {})[str(MBUS[code])] = (raw, line)
        if not fields and not mbus:
            msg = f"telegram {excerpt(lines[0], 30)} has no known OBIS code"
            raise RejectedInput(msg, reason="empty")
        samples = [RawSample(fields, time_ns=time_ns)] if fields else []
        for channel, found in sorted(mbus.items()):
            sample = self._mbus_sample(channel, found)
            if sample is not None:
                samples.append(sample)
        return samples

    def _check_crc(self, data: bytes, given: str, text: str) -> None:
        if not given:
            version = _VERSION.search(text)
            if self._require_crc or (version is not None and int(version[1][:1] or 0) >= 4):
                msg = "telegram has no CRC after ! (DSMR 4 and later always send one)"
                raise RejectedInput(msg, reason="checksum")
            return
        if not _CRC.fullmatch(given):
            msg = f"CRC {excerpt(given, 10)} after ! is not 4 hex digits"
            raise RejectedInput(msg, reason="checksum")
        computed = crc16(data)
        if computed != int(given, 16):
            msg = f"CRC {given.upper()} does not match the telegram ({computed:04X})"
            raise RejectedInput(msg, reason="checksum")

    def _stamp(self, text: str, line: str) -> int:
        """ns since the epoch of a ``YYMMDDhhmmss[S|W]`` meter timestamp."""
        match = _STAMP.fullmatch(text)
        try:
            if match is None:
                raise ValueError
            yy, mo, dd, hh, mi, ss, dst = match.groups()
            zone = _DST.get(dst, self._zone)
            when = datetime(
                2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss), tzinfo=zone
            )
        except ValueError:
            msg = f"timestamp {excerpt(text, 20)} is not YYMMDDhhmmss[S|W] in {excerpt(line, 40)}"
            raise RejectedInput(msg, reason="bad_time") from None
        return int(when.timestamp()) * 10**9

    def _mbus_sample(self, channel: str, found: dict[str, Any]) -> RawSample | None:
        medium_raw = found.get("medium")
        medium = _int(medium_raw[0][0], medium_raw[1]) if medium_raw else None
        prefix = MBUS_MEDIUM.get(medium, "mbus") if medium is not None else "mbus"
        if "reading" in found:
            raw, line = found["reading"]
            if len(raw) < 2:
                msg = f"M-Bus reading needs (time)(value*unit): {excerpt(line, 40)}"
                raise RejectedInput(msg, reason="malformed")
            stamp, value_text = raw[0], raw[-1]
        elif "legacy_reading" in found:
            raw, line = found["legacy_reading"]
            if len(raw) < 7:
                msg = f"DSMR 2.2/3 M-Bus reading needs 7 values: {excerpt(line, 40)}"
                raise RejectedInput(msg, reason="malformed")
            stamp, value_text = raw[0], f"{raw[6]}*{raw[5]}"
        else:
            return None
        time_ns = self._stamp(stamp, line)
        if self._mbus_seen.get(channel) == time_ns:
            return None
        number, _unit = _number(value_text, line)
        fields: dict[str, object] = {f"{prefix}_delivered": number}
        if "valve" in found:
            fields["valve_state"] = _int(found["valve"][0][0], found["valve"][1])
        self._mbus_seen[channel] = time_ns
        return RawSample(fields, {"channel": channel}, time_ns=time_ns)


def _logical_lines(text: str) -> list[str]:
    """Telegram lines, with DSMR 2.2's continuation lines (starting with ``(``) joined."""
    lines: list[str] = []
    for line in text.replace("\r", "").split("\n"):
        line = line.strip()
        if not line:
            continue
        if line.startswith("(") and len(lines) > 1:
            lines[-1] += line
        else:
            lines.append(line)
    return lines


def _value(spec: Spec, raw: list[str], line: str) -> object:
    if spec.kind == "count":
        return _int(raw[0], line)
    if spec.kind == "text":
        return _hex_text(raw[0])
    if spec.kind == "max_demand":  # (time of the peak)(value*unit)
        raw = raw[-1:]
    number, unit = _number(raw[0], line)
    if unit != spec.unit and unit is not None:
        msg = f"{spec.name} is in {unit!r}, expected {spec.unit!r}: {excerpt(line, 40)}"
        raise RejectedInput(msg, reason="malformed")
    return number


def _number(text: str, line: str) -> tuple[float, str | None]:
    number, _, unit = text.partition("*")
    if not _NUMBER.fullmatch(number):
        msg = f"value {excerpt(text, 20)} is not a number in {excerpt(line, 40)}"
        raise RejectedInput(msg, reason="malformed")
    return float(number), unit or None


def _int(text: str, line: str) -> int:
    if not text.isdigit():
        msg = f"value {excerpt(text, 20)} is not a whole number in {excerpt(line, 40)}"
        raise RejectedInput(msg, reason="malformed")
    return int(text)


def _hex_text(text: str) -> str | None:
    """A hex-encoded message as text (kept as sent when it is not hex); None when empty."""
    if not text:
        return None
    try:
        return bytes.fromhex(text).decode("utf-8")
    except ValueError:
        return text
