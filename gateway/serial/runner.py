"""Runs one serial device: open the port, cut frames, poll if asked, hand frames to the driver.

The port is opened, flushed and closed off the event loop (pyserial-asyncio-fast). Any
way the device can go away — unplugged (``SerialException``/EOF), silent for longer
than ``stale_after``, not answering polls — ends this coroutine with
:class:`~gateway.errors.DeviceUnavailable`, or with its subclass
:class:`~gateway.serial.supervise.DeviceLost` when the port had delivered a good frame
since it was opened; the supervisor reopens it (at once after a loss, else with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import serial
import serial_asyncio_fast

from gateway.driver import SerialDriver
from gateway.errors import DeviceUnavailable, RejectedInput
from gateway.pipeline.intake import DeviceInput
from gateway.serial.supervise import DeviceLost

READ_CHUNK_BYTES = 4096
# A polled device that misses this many answers in a row is reopened.
MAX_MISSED_POLLS = 3


@dataclass(slots=True)
class _Run:
    """What one open of the port achieved."""

    good_frames: int = 0


async def run_serial_device(driver: SerialDriver[Any], entry: DeviceInput) -> None:
    """Read the device until it goes away (raises DeviceUnavailable) or is cancelled."""
    opts = driver.options
    try:
        reader, writer = await serial_asyncio_fast.open_serial_connection(
            url=opts.port,
            baudrate=opts.baudrate,
            bytesize=opts.bytesize,
            parity=opts.parity,
            stopbits=opts.stopbits,
            exclusive=True,
        )
    except (serial.SerialException, OSError, ValueError) as err:
        raise DeviceUnavailable(f"cannot open serial port: {err}") from err
    entry.stats.state = "running"
    entry.log.info("serial port opened", port=opts.port, baudrate=opts.baudrate)
    run = _Run()
    try:
        if driver.poll_interval is not None:
            await _polled(driver, entry, reader, writer, run)
        else:
            await _stream(driver, entry, reader, run)
    except DeviceUnavailable as err:
        if run.good_frames:
            raise DeviceLost(str(err)) from err
        raise
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await writer.wait_closed()


async def _read(reader: asyncio.StreamReader, port: str, wait_s: float | None) -> bytes:
    try:
        async with asyncio.timeout(wait_s):
            data = await reader.read(READ_CHUNK_BYTES)
    except TimeoutError:
        raise  # the caller's staleness or answer timeout (TimeoutError is an OSError)
    except serial.SerialException as err:
        raise DeviceUnavailable(f"serial port {port} failed (unplugged?): {err}") from err
    except OSError as err:
        raise DeviceUnavailable(f"serial port {port} failed: {err}") from err
    if not data:
        raise DeviceUnavailable(f"serial port {port} closed (unplugged?)")
    return data


async def _drain(reader: asyncio.StreamReader, port: str) -> tuple[bytes, int]:
    """Take what the port has delivered already, without waiting for more.

    Returns the first chunk (for a preview) and the number of bytes taken.
    """
    first = b""
    size = 0
    while True:
        try:
            # A zero timeout: read() returns at once if bytes are buffered, else times out.
            data = await _read(reader, port, 0)
        except TimeoutError:
            return first, size
        first = first or data
        size += len(data)


def _handle_frames(
    driver: SerialDriver[Any],
    entry: DeviceInput,
    frames: list[bytes],
    overflows_before: int,
    framer_overflows: int,
) -> int:
    """Decode and submit frames; return how many produced at least one reading."""
    now_ns = entry.pipeline.time.now_ns()  # one arrival time per read, from the time source
    good = 0
    if framer_overflows > overflows_before:
        for _ in range(framer_overflows - overflows_before):
            entry.reject(
                RejectedInput(
                    f"frame longer than {driver.options.max_frame_bytes} bytes discarded "
                    "(missing line end, wrong baud rate or garbage)",
                    reason="frame_too_long",
                )
            )
    for frame in frames:
        try:
            samples = list(driver.parse(frame))
        except RejectedInput as err:
            entry.reject(err, frame=_preview(frame))
            continue
        except Exception as err:  # a driver bug must not take the device down
            entry.reject(
                RejectedInput(f"driver error: {type(err).__name__}: {err}", "driver_error"),
                frame=_preview(frame),
            )
            continue
        if not samples:
            continue  # e.g. a comment or banner line
        if entry.submit(samples, now_ns):
            good += 1
    return good


async def _stream(
    driver: SerialDriver[Any], entry: DeviceInput, reader: asyncio.StreamReader, run: _Run
) -> None:
    opts = driver.options
    framer = driver.framer()
    stale_after = opts.stale_after
    last_good = time.monotonic()
    while True:
        timeout = (
            None if stale_after is None else max(0.0, last_good + stale_after - time.monotonic())
        )
        try:
            data = await _read(reader, opts.port, timeout)
        except TimeoutError:
            entry.stats.stale = True
            raise DeviceUnavailable(
                f"no valid frame from {opts.port} for {stale_after:g} s (stale); reopening"
            ) from None
        before = framer.overflows
        frames = framer.feed(data)
        good = _handle_frames(driver, entry, frames, before, framer.overflows)
        if good:
            run.good_frames += good
            last_good = time.monotonic()


async def _polled(
    driver: SerialDriver[Any],
    entry: DeviceInput,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    run: _Run,
) -> None:
    opts = driver.options
    framer = driver.framer()
    interval = driver.poll_interval or 1.0
    missed = 0
    next_poll = time.monotonic()
    while True:
        request = driver.request()
        if request:
            # An answer that came after its poll timed out is still buffered; read as
            # this poll's answer it would shift every later reading by one poll.
            late, size = await _drain(reader, opts.port)
            framer.reset()
            if size:
                entry.reject(
                    RejectedInput(
                        f"late answer to an earlier poll discarded ({size} bytes)",
                        reason="late_answer",
                    ),
                    frame=_preview(late),
                )
            writer.write(request)
        deadline = time.monotonic() + driver.response_timeout
        answered = False
        while not answered:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                data = await _read(reader, opts.port, remaining)
            except TimeoutError:
                break
            before = framer.overflows
            frames = framer.feed(data)
            if frames or framer.overflows > before:
                answered = True
                run.good_frames += _handle_frames(driver, entry, frames, before, framer.overflows)
        if answered:
            missed = 0
        else:
            missed += 1
            entry.reject(
                RejectedInput(
                    f"no answer within {driver.response_timeout:g} s", reason="no_response"
                )
            )
            if missed >= MAX_MISSED_POLLS:
                entry.stats.stale = True
                raise DeviceUnavailable(
                    f"{opts.port}: {missed} polls in a row unanswered; reopening"
                )
        next_poll += interval
        await asyncio.sleep(max(0.0, next_poll - time.monotonic()))


def _preview(frame: bytes, limit: int = 80) -> str:
    text = frame[:limit].decode("utf-8", "backslashreplace")
    return text + ("…" if len(frame) > limit else "")
