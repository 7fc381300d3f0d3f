"""Record a timed capture from a real serial device: ``sensor-gateway capture``.

The port is resolved and opened the way the gateway opens a device's port (path,
``/dev/serial/by-id/…``, ``/dev/serial/by-path/…`` or ``usb:VID:PID[:SERIAL]``;
exclusive; the same line settings), and every chunk the device sends is written with
its time to a file in the format :class:`~gateway.testing.Capture` replays (see
:mod:`gateway.testing.capture`). For a polled device a request can be sent every
``interval``; requests are recorded as ``>`` events, so the replay answers each one
with what the device answered::

    result = await record_capture("usb:1a86:7523", Path("co2.cap"),
                                  line=LineSettings(9600), duration=30.0,
                                  request=bytes.fromhex("ff0186000000000079"))

Times start at 0 with the first event. Recording ends after ``duration``, when
``stop`` is set, or when the device goes away (what was recorded is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from gateway.serial.ports import LineSettings, resolve_port
from gateway.serial.transport import open_transport
from gateway.testing.capture import HEADER

__all__ = ["CaptureWriter", "RecordResult", "format_event", "record_capture"]

_TEXT_BYTES = frozenset(range(32, 127)) | {9, 10, 13}


def format_event(t: float, direction: Literal["<", ">"], data: bytes) -> str:
    """One capture line: text as a quoted bytes literal, anything else as hex."""
    # Text as b'...' without the b (the parser reads it back), else hex.
    shown = repr(data)[1:] if _TEXT_BYTES.issuperset(data) else data.hex(" ")
    return f"{t:.6f} {direction} {shown}"


class CaptureWriter:
    """Writes a timed capture event by event (so an interrupted recording keeps its data)."""

    def __init__(self, out: TextIO, comments: Sequence[str] = ()) -> None:
        self._out = out
        self._t0: float | None = None
        self.events = 0
        self.device_bytes = 0
        self.requests = 0
        out.write(HEADER + "\n")
        for comment in comments:
            out.write(f"# {comment}\n")

    def add(self, at: float, direction: Literal["<", ">"], data: bytes) -> None:
        """Record ``data`` sent at monotonic time ``at`` (``<`` device, ``>`` gateway)."""
        if self._t0 is None:
            self._t0 = at
        self._out.write(format_event(max(0.0, at - self._t0), direction, data) + "\n")
        self.events += 1
        if direction == "<":
            self.device_bytes += len(data)
        else:
            self.requests += 1

    @property
    def seconds(self) -> float:
        """Time from the first event to now (0 before any event)."""
        return 0.0 if self._t0 is None else time.monotonic() - self._t0


@dataclass(frozen=True, slots=True)
class RecordResult:
    """What a recording holds and why it ended."""

    path: str  # the device path the selector resolved to
    events: int
    device_bytes: int
    requests: int
    seconds: float
    ended: str  # "duration", "stopped" or why the port closed


class _Recorder(asyncio.Protocol):
    def __init__(self, on_data: Callable[[bytes], None] | None = None) -> None:
        self.on_data = on_data
        self.writer: CaptureWriter | None = None
        self.early: list[tuple[float, bytes]] = []
        self.lost: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if self.writer is None:
            self.early.append((now, data))
        else:
            self.writer.add(now, "<", data)
        if self.on_data is not None:
            self.on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


async def record_capture(
    port: str,
    out: Path,
    *,
    line: LineSettings | None = None,
    duration: float | None = None,
    request: bytes | None = None,
    interval: float = 1.0,
    stop: asyncio.Event | None = None,
    on_data: Callable[[bytes], None] | None = None,
) -> RecordResult:
    """Record what the device on ``port`` sends into the capture file ``out``.

    ``on_data`` sees each chunk the device sent as it arrives (to stop on what came).

    Raises DeviceUnavailable when the port cannot be resolved or opened (nothing is
    written then).
    """
    line = line or LineSettings()
    path = await resolve_port(port)
    transport, recorder = await open_transport(path, line, lambda: _Recorder(on_data))
    ended = "stopped"
    try:
        with out.open("w", encoding="utf-8") as file:
            named = port if path == port else f"{port} ({path})"
            comments = [f"recorded from {named} at {line}"]
            if request is not None:
                comments.append(f"request {request.hex(' ')} every {interval:g} s")
            writer = recorder.writer = CaptureWriter(file, comments)
            for at, data in recorder.early:
                writer.add(at, "<", data)
            recorder.early.clear()
            waits: list[asyncio.Future[Any]] = [recorder.lost]
            helpers: list[asyncio.Task[Any]] = []
            if stop is not None:
                helpers.append(asyncio.create_task(stop.wait()))
            waits += helpers
            if request is not None:
                helpers.append(asyncio.create_task(_poll(transport, writer, request, interval)))
            try:
                done, _ = await asyncio.wait(waits, timeout=duration, return_when="FIRST_COMPLETED")
            finally:
                for task in helpers:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if recorder.lost in done:
                err = recorder.lost.result()
                ended = f"port closed ({err})" if err else "port closed"
            elif not done:
                ended = "duration"
            return RecordResult(
                path, writer.events, writer.device_bytes, writer.requests, writer.seconds, ended
            )
    finally:
        transport.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await asyncio.shield(recorder.lost)


async def _poll(
    transport: asyncio.WriteTransport, writer: CaptureWriter, request: bytes, interval: float
) -> None:
    due = time.monotonic()
    while True:
        writer.add(time.monotonic(), ">", request)
        transport.write(request)
        due += interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
