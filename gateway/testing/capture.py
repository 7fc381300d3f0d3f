"""Recorded serial captures, replayed by a :class:`~gateway.testing.ScriptedDevice`.

Two kinds of file:

* a **raw dump** of what a device sent (``cat /dev/ttyUSB0 > dsmr.bin``): any file not
  starting with the header below. It is replayed in chunks at the line's byte rate.
* a **timed capture**, text, starting with ``# sensor-gateway capture v1``; then one
  event per line: seconds since the start, a direction, the bytes::

      # sensor-gateway capture v1
      # an MH-Z19 answering two reads (comments and blank lines are ignored)
      0.000 > ff 01 86 00 00 00 00 00 79
      0.012 < ff 86 01 90 40 00 00 00 a9
      5.000 > ff 01 86 00 00 00 00 00 79
      5.011 < "\\xff\\x86\\x01\\x91@\\x00\\x00\\x00\\xa8"

  ``<`` is the device sending, ``>`` the gateway sending (a request). Bytes are hex
  (spaces optional) or a quoted Python bytes literal body. Replayed, the device's
  bytes before the first request go out at their times; each request is then expected
  in order, and what the device sent after it is sent again with the same delays.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from gateway.testing.device import ScriptedDevice

__all__ = ["HEADER", "Capture", "CaptureEvent"]

HEADER: Final = "# sensor-gateway capture v1"
_LINE: Final = re.compile(r"(?P<t>\d+(?:\.\d*)?)\s+(?P<dir>[<>])\s+(?P<data>.+)")


@dataclass(frozen=True, slots=True)
class CaptureEvent:
    """Bytes sent at ``t`` seconds: ``"<"`` by the device, ``">"`` by the gateway."""

    t: float
    direction: Literal["<", ">"]
    data: bytes


@dataclass(frozen=True, slots=True)
class Capture:
    """A sequence of :class:`CaptureEvent` in time order."""

    events: tuple[CaptureEvent, ...]

    @classmethod
    def load(cls, path: str | Path, *, bytes_per_s: float = 960.0, chunk: int = 64) -> Capture:
        """Read a timed capture, or a raw dump (played at ``bytes_per_s``, 9600 baud 8N1)."""
        data = Path(path).read_bytes()
        if data.startswith(HEADER.encode()):
            return cls.parse(data.decode("utf-8"), source=str(path))
        return cls.raw(data, bytes_per_s=bytes_per_s, chunk=chunk)

    @classmethod
    def raw(cls, data: bytes, *, bytes_per_s: float = 960.0, chunk: int = 64) -> Capture:
        """A device sending ``data`` in ``chunk``-byte pieces at ``bytes_per_s``."""
        events = tuple(
            CaptureEvent(i / bytes_per_s, "<", data[i : i + chunk])
            for i in range(0, len(data), chunk)
        )
        return cls(events)

    @classmethod
    def parse(cls, text: str, source: str = "<capture>") -> Capture:
        """Parse a timed capture (see the module docstring); ValueError names the line."""
        events: list[CaptureEvent] = []
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            match = _LINE.fullmatch(line)
            if match is None:
                msg = f"{source}:{number}: expected '<seconds> <|> <bytes>', got {line[:60]!r}"
                raise ValueError(msg)
            direction: Literal["<", ">"] = "<" if match["dir"] == "<" else ">"
            events.append(
                CaptureEvent(float(match["t"]), direction, _bytes(match["data"], source, number))
            )
        if any(b.t < a.t for a, b in itertools.pairwise(events)):
            raise ValueError(f"{source}: events must be in time order")
        return cls(tuple(events))

    def device_bytes(self) -> bytes:
        """Everything the device sent, concatenated (for parsing tests without a port)."""
        return b"".join(e.data for e in self.events if e.direction == "<")

    def play_on(self, device: ScriptedDevice, speed: float = 1.0) -> None:
        """Schedule this capture on ``device`` (``speed`` 2.0 plays twice as fast)."""
        first_request = next((i for i, e in enumerate(self.events) if e.direction == ">"), None)
        head = self.events if first_request is None else self.events[:first_request]
        for event in head:
            device.send(event.data, delay=event.t / speed)
        if first_request is None:
            return
        rest = self.events[first_request:]
        i = 0
        while i < len(rest):
            request = rest[i]
            answers: list[CaptureEvent] = []
            i += 1
            while i < len(rest) and rest[i].direction == "<":
                answers.append(rest[i])
                i += 1
            device.respond(
                _same_request(request.data),
                _reply_later(device, request.t, answers, speed),
                times=1,
            )


def _same_request(raw: bytes) -> Callable[[bytes], bool]:
    def matches(frame: bytes) -> bool:
        # The device's framer may strip a line end the capture kept.
        return frame == raw or (raw.startswith(frame) and not raw[len(frame) :].strip(b"\r\n"))

    return matches


def _reply_later(
    device: ScriptedDevice, asked_at: float, answers: list[CaptureEvent], speed: float
) -> Callable[[bytes], None]:
    def reply(_frame: bytes) -> None:
        for answer in answers:
            device.send(answer.data, delay=max(0.0, answer.t - asked_at) / speed)

    return reply


def _bytes(text: str, source: str, number: int) -> bytes:
    text = text.strip()
    try:
        if text[:1] in "\"'":
            value = ast.literal_eval("b" + text)
            if isinstance(value, bytes):
                return value
            raise ValueError("not bytes")
        return bytes.fromhex(text)
    except (ValueError, SyntaxError) as err:
        msg = f"{source}:{number}: bytes must be hex or a quoted bytes literal ({err})"
        raise ValueError(msg) from None
