"""The open serial port as a driver sees it: write, read a frame, transact.

A :class:`SerialPort` is handed to a driver's ``on_open`` (init commands) and ``poll``
(request/response). It owns the framing and the bookkeeping a driver should never
repeat: stale input is discarded before every request (a late answer is never taken
for the next one), each request has a timeout and a number of retries, frames the
framer throws away are counted per device with their reason. The port is opened,
resolved and reopened by the core; a driver never closes it.

Bytes are framed as they arrive, in the transport's ``data_received`` (an asyncio
protocol on pyserial-asyncio-fast, no stream reader between): a stream device's frames
go straight to the core's handler, with no task switch per read. :class:`FdTransport`
reads the port's descriptor directly (one ``read`` per wake-up, not pyserial's
``select`` + ``read``), up to :data:`READ_SIZE` bytes at a time. A stream port with
steady traffic is read in turns with the other stream ports, one wake-up for all of them
(:mod:`gateway.serial.batchread`, the device's ``read_window``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, Final, NoReturn, TypeVar

import serial
import serial_asyncio_fast

from gateway.errors import DeviceUnavailable, RejectedInput
from gateway.pipeline.intake import DeviceInput
from gateway.serial import batchread
from gateway.serial.batchread import ReadBatcher
from gateway.serial.framers import Framer
from gateway.serial.ports import LineSettings, open_error

__all__ = [
    "CROWDED_READ_BYTES",
    "MAX_CROWDED_READS",
    "READ_SIZE",
    "FdTransport",
    "NoResponse",
    "PortProtocol",
    "SerialPort",
    "open_transport",
    "preview",
]

ProtocolT = TypeVar("ProtocolT", bound=asyncio.Protocol)

Accept = Callable[[bytes], bool]
FrameHandler = Callable[[list[bytes]], int]
"""Takes frames of a stream device; returns how many of them were good."""

# Bytes taken per wake-up: everything a 115200-baud line delivers in ~0.5 s, so a burst
# (a DSMR telegram, a backlog after a stall) is framed in one go, not 1 KiB at a time.
READ_SIZE: Final = 8192
# Writes queue in the transport beyond this many bytes only if the device does not read.
_WRITE_HIGH_WATER: Final = 64 * 1024
# A port read in turns with others (see batchread) whose reads bring more than one frame
# (or CROWDED_READ_BYTES: a tty hands over at most 4 KiB per read) this many times sends
# faster than the window: it gets a reader of its own again, so each frame keeps its own
# arrival stamp and a flood is not held to one read per turn.
MAX_CROWDED_READS: Final = 3
CROWDED_READ_BYTES: Final = 2048
# Frames nobody has asked for yet (a polled device talking between polls) are kept up
# to this many; older ones are dropped as unsolicited, so a chatty device cannot grow
# memory between two polls.
MAX_QUEUED_FRAMES: Final = 256


class NoResponse(RejectedInput):
    """A request went unanswered (after its retries); counted as ``no_response``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, reason="no_response")


class FdTransport(serial_asyncio_fast.SerialTransport):
    """pyserial-asyncio-fast's transport, reading the port's file descriptor directly.

    ``Serial.read()`` does a ``select()`` before each ``read()`` and copies through a
    bytearray; the event loop has already said the descriptor is readable, so one
    ``os.read`` does. A hang-up (``EIO``, or end of file: the device was unplugged)
    closes the transport with a ``SerialException``, as ``Serial.read()`` would.
    Opening, flushing, writing and closing stay pyserial-asyncio-fast's.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, port: serial.Serial
    ) -> None:
        super().__init__(loop, protocol, port)
        self._fd = port.fileno()
        self._max_read_size = READ_SIZE
        self._drained = False
        self._batcher: ReadBatcher | None = None

    def read_in_batches(self, batcher: ReadBatcher | None) -> None:
        """Be read by ``batcher`` together with other ports (None: by the loop, alone)."""
        if batcher is self._batcher:
            return
        reading = self._has_reader
        self._remove_reader()
        self._batcher = batcher
        if reading:
            self._ensure_reader()

    def _ensure_reader(self) -> None:
        if self._batcher is None:
            super()._ensure_reader()
        elif not self._has_reader and not self._closing:
            self._batcher.add(self._fd, self._read_ready)
            self._has_reader = True

    def _remove_reader(self) -> None:
        if self._batcher is None:
            super()._remove_reader()
        elif self._has_reader:
            self._batcher.remove(self._fd)
            self._has_reader = False

    def _read_ready(self) -> None:
        try:
            data = os.read(self._fd, self._max_read_size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            self._close(exc=serial.SerialException(f"read failed: {err}"))
            return
        if data:
            self._drained = False
            self._protocol.data_received(data)
        elif self._drained:
            # read_now() took what the loop had seen ready; a hang-up stays readable
            # and is found at the next wake-up.
            self._drained = False
        else:
            self._close(
                exc=serial.SerialException(
                    "device reports readiness to read but returned no data "
                    "(device disconnected or multiple access on port?)"
                )
            )

    def read_now(self) -> None:
        """Hand over what the port holds already, without waiting for the loop's turn
        (``transact`` discards it as stale: it came before the request).

        A tty read with nothing waiting returns no bytes rather than failing, so an
        empty read ends this; a hang-up is left for the loop's reader to find.
        """
        while not self.is_closing():
            try:
                data = os.read(self._fd, self._max_read_size)
            except OSError:
                return
            if not data:
                return
            self._drained = True
            self._protocol.data_received(data)


async def open_transport(
    path: str, line: LineSettings, protocol_factory: Callable[[], ProtocolT]
) -> tuple[FdTransport, ProtocolT]:
    """Open ``path`` exclusively with ``line`` settings, off the loop; raises DeviceUnavailable.

    How the core opens every serial port (and ``sensor-gateway capture`` too).
    """
    loop = asyncio.get_running_loop()
    opener = partial(
        serial.Serial,
        path,
        baudrate=line.baudrate,
        bytesize=line.bytesize,
        parity=line.parity,
        stopbits=line.stopbits,
        rtscts=line.rtscts,
        xonxoff=line.xonxoff,
        exclusive=True,
    )
    try:
        instance = await loop.run_in_executor(None, opener)
    except (serial.SerialException, OSError, ValueError) as err:
        raise DeviceUnavailable(open_error(path, err)) from err
    protocol = protocol_factory()
    return FdTransport(loop, protocol, instance), protocol


class PortProtocol(asyncio.Protocol):
    """The asyncio side of a port: hands bytes to its :class:`SerialPort`."""

    def __init__(self) -> None:
        self.port: SerialPort | None = None
        self.early = bytearray()  # bytes that came before the port was attached
        self.lost: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
        self._writable: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self.port is None:
            self.early += data
        else:
            self.port.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        if self.port is not None:
            self.port.wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    async def writable(self) -> None:
        if self._writable is not None:
            await self._writable


class SerialPort:
    """One open serial port, with its framer; what drivers talk through.

    ``timeout`` and ``retries`` are the defaults of :meth:`transact` (the driver's
    ``response_timeout`` and ``retries``).
    """

    def __init__(
        self,
        transport: asyncio.WriteTransport,
        protocol: PortProtocol,
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
        self.last_good = time.monotonic()  # stream: when the handler last had a good frame
        self._transport = transport
        self._protocol = protocol
        self._entry = entry
        self._max_frame_bytes = max_frame_bytes
        self._frames: deque[bytes] = deque()
        self._last_chunk = b""
        self._waiter: asyncio.Future[None] | None = None
        self._on_frames: FrameHandler | None = None
        self._failed: BaseException | None = None  # the frame handler raised
        self._lock = asyncio.Lock()
        self._unanswered = False  # the last request timed out: what comes next is late
        self._unanswered_entry = entry  # whose request that was (a bus has several)
        self._requests = 0
        self._turns = asyncio.Lock()  # a shared bus: one device's poll at a time, in order
        self._turn_ended = 0.0
        self._batched = False  # read in turns with other ports (stream only)
        self._crowded = 0  # batched reads that brought more than one frame
        protocol.port = self
        if protocol.early:
            self.data_received(bytes(protocol.early))
            protocol.early.clear()

    # -- what drivers use --------------------------------------------------------------

    async def write(self, data: bytes) -> None:
        """Send ``data`` (waits only while the OS does not take more)."""
        self._check_open()
        self._transport.write(data)
        if self._transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
            await self._protocol.writable()
        self._check_open()

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
        loop = asyncio.get_running_loop()
        while True:
            while self._frames:
                frame = self._frames.popleft()
                if accept is None or accept(frame):
                    self.last_frame = frame
                    return frame
                self._reject("unsolicited", "a frame that does not answer the request", frame)
            self._check_open()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise NoResponse(f"no answer within {wait:g} s")
            waiter = self._waiter = loop.create_future()
            handle = loop.call_later(remaining, _resolve, waiter)
            try:
                await waiter
            finally:
                handle.cancel()
                self._waiter = None

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
                    self._unanswered_entry = self._entry
                    if attempt + 1 < attempts:
                        self._entry.log.debug("no answer; retrying", attempt=attempt + 1)
                        continue
                    raise
                self._unanswered = False
                return frame
        raise AssertionError("unreachable")  # pragma: no cover

    async def discard_input(self) -> int:
        """Throw away what the device sent and nobody read yet; return how many bytes."""
        # Bytes in the kernel's buffer that the loop has not handed over yet are stale
        # too (right after opening, no turn of the loop has read them).
        if isinstance(self._transport, FdTransport):
            self._transport.read_now()
        size = sum(len(f) for f in self._frames) + self.framer.buffered
        first = self._frames[0] if self._frames else self._last_chunk
        self._frames.clear()
        self.framer.reset()
        self.framer.take_drops()
        if size and self._requests:
            entry = self._entry
            if self._unanswered:
                reason, what = "late_answer", "late answer to an earlier request"
                entry = self._unanswered_entry
            else:
                reason, what = "unsolicited", "bytes nobody asked for"
            entry.reject(
                RejectedInput(f"{what} discarded ({size} bytes)", reason=reason),
                frame=preview(first),
            )
        elif size:
            self._entry.log.debug("input before the first request discarded", size=size)
        self._unanswered = False
        return size

    # -- what the core uses ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def turn(self, entry: DeviceInput, gap: float = 0.0) -> AsyncIterator[SerialPort]:
        """One device's turn on a shared bus: its rejections are counted for ``entry``.

        Turns are taken in the order asked for (asyncio's lock is fair), and a turn
        starts at least ``gap`` seconds after the previous one ended (the line's quiet
        time between two devices' exchanges).
        """
        async with self._turns:
            wait = self._turn_ended + gap - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._entry = entry
            try:
                yield self
            finally:
                self._turn_ended = time.monotonic()

    def data_received(self, data: bytes) -> None:
        """Frame ``data``: to the stream handler, or queued for :meth:`read_frame`."""
        framer = self.framer
        before = framer.overflows
        frames = framer.feed(data)
        if framer.overflows != before or framer.has_drops:
            self.report_drops(before)
        handler = self._on_frames
        if handler is not None:
            if self._batched and (len(frames) > 1 or len(data) >= CROWDED_READ_BYTES):
                self._crowded_read()
            if frames:
                try:
                    if handler(frames):
                        self.last_good = time.monotonic()
                except Exception as err:  # surfaced by stream(); never into the transport
                    self._failed = err
                    self.wake()
            return
        self._last_chunk = data
        if frames:
            queue = self._frames
            queue.extend(frames)
            while len(queue) > MAX_QUEUED_FRAMES:
                self._reject("unsolicited", "a frame nobody asked for", queue.popleft())
            self.wake()

    @property
    def closed(self) -> bool:
        """True once the port has failed or been closed."""
        return self._protocol.lost.done()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def stream(
        self, on_frames: FrameHandler, stale_after: float | None, read_window: float = 0.0
    ) -> NoReturn:
        """Hand every frame to ``on_frames`` until the port fails or goes stale.

        With a ``read_window`` (seconds), steady traffic is read in turns with the other
        stream ports of that window (:mod:`gateway.serial.batchread`), until reads bring
        more than one frame (or :data:`CROWDED_READ_BYTES`) :data:`MAX_CROWDED_READS` times.

        Raises DeviceUnavailable: unplugged or closed, or no good frame (``on_frames``
        returned 0) for ``stale_after`` seconds.
        """
        self.last_good = time.monotonic()
        if self._frames:  # cut while on_open talked to the device
            frames = list(self._frames)
            self._frames.clear()
            if on_frames(frames):
                self.last_good = time.monotonic()
        self._on_frames = on_frames
        loop = asyncio.get_running_loop()
        if read_window > 0 and batchread.AVAILABLE and isinstance(self._transport, FdTransport):
            self._transport.read_in_batches(batchread.batcher(read_window))
            self._batched = True
        try:
            while True:
                self._check_open()
                waiter = self._waiter = loop.create_future()
                handle = None
                if stale_after is not None:
                    remaining = self.last_good + stale_after - time.monotonic()
                    if remaining <= 0:
                        raise DeviceUnavailable(
                            f"no valid frame from {self.path} for {stale_after:g} s (stale); "
                            "reopening"
                        )
                    handle = loop.call_later(remaining, _resolve, waiter)
                try:
                    await waiter
                finally:
                    if handle is not None:
                        handle.cancel()
                    self._waiter = None
        finally:
            self._on_frames = None
            self._read_alone()

    def _read_alone(self) -> None:
        if self._batched and isinstance(self._transport, FdTransport):
            self._transport.read_in_batches(None)
        self._batched = False

    def _crowded_read(self) -> None:
        self._crowded += 1
        if self._crowded >= MAX_CROWDED_READS:
            self._read_alone()
            self._entry.log.info(
                "frames come faster than the read window; this port is read on its own",
                port=self.path,
            )

    async def close(self) -> None:
        """Close the port (off the loop), waiting a bounded time for it to be closed."""
        self._transport.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await asyncio.shield(self._protocol.lost)

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

    def _check_open(self) -> None:
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        lost = self._protocol.lost
        if not lost.done():
            return
        err = lost.result()
        if isinstance(err, serial.SerialException):
            raise DeviceUnavailable(f"serial port {self.path} failed (unplugged?): {err}")
        if err is not None:
            raise DeviceUnavailable(f"serial port {self.path} failed: {err}")
        raise DeviceUnavailable(f"serial port {self.path} closed (unplugged?)")

    def _reject(self, reason: str, message: str, frame: bytes) -> None:
        self._entry.reject(RejectedInput(message, reason=reason), frame=preview(frame))


def _resolve(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def preview(frame: bytes, limit: int = 80) -> str:
    """A frame as text for a log line: undecodable bytes escaped, cut at ``limit``."""
    text = frame[:limit].decode("utf-8", "backslashreplace")
    return text + ("…" if len(frame) > limit else "")
