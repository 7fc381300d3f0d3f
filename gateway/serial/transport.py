"""The open serial port as a driver sees it: write, read a frame, transact.

A :class:`SerialPort` is handed to a driver's ``on_open`` (init commands) and ``poll``
(request/response). It owns the framing and the bookkeeping a driver should never
repeat: stale input is discarded before every request (a late answer is never taken
for the next one), each request has a timeout and a number of retries, frames the
framer throws away are counted per device with their reason. The port is opened,
resolved and reopened by the core; a driver never closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Final

import serial

from gateway.errors import DeviceUnavailable, RejectedInput
from gateway.pipeline.intake import DeviceInput
from gateway.serial.framers import Framer

__all__ = ["READ_CHUNK_BYTES", "NoResponse", "SerialPort", "preview"]

READ_CHUNK_BYTES: Final = 4096

Accept = Callable[[bytes], bool]


class NoResponse(RejectedInput):
    """A request went unanswered (after its retries); counted as ``no_response``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="no_response")


class SerialPort:
    """One open serial port, with its framer; what drivers talk through.

    ``timeout`` and ``retries`` are the defaults of :meth:`transact` (the driver's
    ``response_timeout`` and ``retries``).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: Framer,
        entry: DeviceInput,
        *,
        path: str,
        max_frame_bytes: int,
        timeout: float = 1.0,
        retries: int = 0,
    ) -> None:
        self.path = path
        self.framer = framer
        self.timeout = timeout
        self.retries = retries
        self.last_frame = b""  # the last frame handed out (a preview for rejections)
        self._reader = reader
        self._writer = writer
        self._entry = entry
        self._max_frame_bytes = max_frame_bytes
        self._frames: deque[bytes] = deque()
        self._lock = asyncio.Lock()
        self._unanswered = False  # the last request timed out: what comes next is late
        self._requests = 0

    # -- what drivers use --------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Send ``data`` and wait until the OS has taken it."""
        self._writer.write(data)
        try:
            await self._writer.drain()
        except (serial.SerialException, OSError) as err:
            raise DeviceUnavailable(f"serial port {self.path} failed on write: {err}") from err

    # A timeout per call, not asyncio.timeout() around it: it applies per attempt, and a
    # transaction interrupted mid-answer would leave its bytes for the next one.
    async def read_frame(
        self,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        accept: Accept | None = None,
    ) -> bytes:
        """The next frame (one ``accept`` approves, if given) within ``timeout`` seconds.

        Frames ``accept`` refuses are counted as ``unsolicited`` and skipped. Raises
        :class:`NoResponse` when the time is up.
        """
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if accept is None or accept(frame):
                    self.last_frame = frame
                    return frame
                self._reject("unsolicited", "a frame that does not answer the request", frame)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoResponse(f"no answer within {wait:g} s")
            try:
                data = await self.read_chunk(remaining)
            except TimeoutError:
                raise NoResponse(f"no answer within {wait:g} s") from None
            self.feed(data)

    async def transact(
        self,
        request: bytes,
        timeout: float | None = None,  # noqa: ASYNC109
        *,
        retries: int | None = None,
        accept: Accept | None = None,
    ) -> bytes:
        """Send ``request`` and return its answer frame.

        Whatever arrived before the request is discarded first (counted as
        ``late_answer`` when the previous request went unanswered, else as
        ``unsolicited``; silently before the first request after opening). A request
        unanswered within ``timeout`` is sent again up to ``retries`` times; then
        :class:`NoResponse` is raised. Requests on one port never overlap.
        """
        attempts = 1 + (self.retries if retries is None else retries)
        async with self._lock:
            for attempt in range(attempts):
                await self.discard_input()
                await self.write(request)
                self._requests += 1
                try:
                    frame = await self.read_frame(timeout, accept=accept)
                except NoResponse:
                    self._unanswered = True
                    if attempt + 1 < attempts:
                        self._entry.log.debug("no answer; retrying", attempt=attempt + 1)
                        continue
                    raise
                self._unanswered = False
                return frame
        raise AssertionError("unreachable")  # pragma: no cover

    async def discard_input(self) -> int:
        """Throw away what the device sent and nobody read yet; return how many bytes."""
        size = sum(len(f) for f in self._frames)
        first = self._frames[0] if self._frames else b""
        self._frames.clear()
        while True:
            try:
                # A zero timeout: read() returns at once if bytes are buffered, else times out.
                data = await self.read_chunk(0)
            except TimeoutError:
                break
            first = first or data
            size += len(data)
        self.framer.reset()
        self.framer.take_drops()
        if size and self._requests:
            if self._unanswered:
                reason, what = "late_answer", "late answer to an earlier request"
            else:
                reason, what = "unsolicited", "bytes nobody asked for"
            self._reject(reason, f"{what} discarded ({size} bytes)", first)
        elif size:
            self._entry.log.debug("input before the first request discarded", size=size)
        self._unanswered = False
        return size

    # -- what the core uses ------------------------------------------------------------

    async def close(self) -> None:
        """Close the port (off the loop), waiting a bounded time for it to be closed."""
        self._writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self._writer.wait_closed()

    async def read_chunk(self, timeout: float | None) -> bytes:  # noqa: ASYNC109
        """Bytes as they come (raises TimeoutError, or DeviceUnavailable when the port fails)."""
        try:
            async with asyncio.timeout(timeout):
                data = await self._reader.read(READ_CHUNK_BYTES)
        except TimeoutError:
            raise  # the caller's staleness or answer timeout (TimeoutError is an OSError)
        except serial.SerialException as err:
            raise DeviceUnavailable(f"serial port {self.path} failed (unplugged?): {err}") from err
        except OSError as err:
            raise DeviceUnavailable(f"serial port {self.path} failed: {err}") from err
        if not data:
            raise DeviceUnavailable(f"serial port {self.path} closed (unplugged?)")
        return data

    def feed(self, data: bytes) -> None:
        """Cut ``data`` into frames (queued for :meth:`read_frame`); count what was dropped."""
        before = self.framer.overflows
        self._frames.extend(self.framer.feed(data))
        self.report_drops(before)

    def take_frames(self) -> list[bytes]:
        """Frames cut but not read yet (handed to the stream loop after ``on_open``)."""
        frames = list(self._frames)
        self._frames.clear()
        return frames

    def report_drops(self, overflows_before: int) -> None:
        """Count the framer's discards since ``overflows_before`` overflows."""
        framer = self.framer
        for _ in range(framer.overflows - overflows_before):
            self._entry.reject(
                RejectedInput(
                    f"frame longer than {self._max_frame_bytes} bytes discarded "
                    "(missing frame end, wrong baud rate or garbage)",
                    reason="frame_too_long",
                )
            )
        for reason, count, message in framer.take_drops():
            for _ in range(count):
                self._entry.reject(RejectedInput(message, reason=reason))

    def _reject(self, reason: str, message: str, frame: bytes) -> None:
        self._entry.reject(RejectedInput(message, reason=reason), frame=preview(frame))


def preview(frame: bytes, limit: int = 80) -> str:
    """A frame as text for a log line: undecodable bytes escaped, cut at ``limit``."""
    text = frame[:limit].decode("utf-8", "backslashreplace")
    return text + ("…" if len(frame) > limit else "")
