"""Runs one serial device: resolve and open the port, init, then read or poll.

The port selector is resolved before each open (a USB match is looked up again, a
by-id/by-path symlink followed again), then opened, flushed and closed off the event
loop (pyserial-asyncio-fast). The driver talks through a
:class:`~gateway.serial.transport.SerialPort`: ``on_open`` for init commands, then
either the stream loop (frames → ``parse``) or the poll loop (``poll`` every
``poll_interval``). Any way the device can go away — unplugged (``SerialException``/
EOF), silent for longer than ``stale_after``, not answering polls — ends this coroutine
with :class:`~gateway.errors.DeviceUnavailable`, or with its subclass
:class:`~gateway.serial.supervise.DeviceLost` when the port had delivered a good frame
since it was opened; the supervisor reopens it (at once after a loss, else with backoff).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from gateway.driver import STALE_FACTOR, SerialDriver
from gateway.errors import DeviceUnavailable, RejectedInput
from gateway.pipeline.intake import DeviceInput
from gateway.serial.bus import shared_port
from gateway.serial.ports import resolve_port
from gateway.serial.supervise import DeviceLost
from gateway.serial.transport import NoResponse, PortProtocol, SerialPort, open_transport, preview

# A polled device that misses this many answers in a row is reopened.
MAX_MISSED_POLLS = 3


@dataclass(slots=True)
class _Run:
    """What one open of the port achieved."""

    good_frames: int = 0


async def open_port(driver: SerialDriver[Any], entry: DeviceInput) -> SerialPort:
    """Resolve the device's port selector and open it (raises DeviceUnavailable)."""
    opts = driver.options
    path = await resolve_port(opts.port)
    line = driver.line_settings()
    transport, protocol = await open_transport(path, line, PortProtocol)
    where = {"port": opts.port} if path == opts.port else {"port": opts.port, "path": path}
    entry.log.info("serial port opened", **where, line=str(line))
    return SerialPort(
        transport,
        protocol,
        driver.framer(),
        entry,
        path=path,
        max_frame_bytes=opts.max_frame_bytes,
        timeout=driver.response_timeout,
        retries=driver.retries,
    )


async def run_serial_device(driver: SerialDriver[Any], entry: DeviceInput) -> None:
    """Read the device until it goes away (raises DeviceUnavailable) or is cancelled."""
    if driver.shares_port:
        await _run_bus_member(driver, entry)
        return
    port = await open_port(driver, entry)
    run = _Run()
    try:
        try:
            await driver.on_open(port)
        except RejectedInput as err:
            raise DeviceUnavailable(f"device init failed on {port.path}: {err}") from err
        entry.stats.state = "running"
        if driver.poll_interval is not None:
            await _polled(driver, entry, port, run)
        else:
            await _stream(driver, entry, port, run)
    except DeviceUnavailable as err:
        if run.good_frames:
            raise DeviceLost(str(err)) from err
        raise
    finally:
        await port.close()


async def _run_bus_member(driver: SerialDriver[Any], entry: DeviceInput) -> None:
    """Poll one device on a port shared with others (an RS-485 bus), in turns."""
    if driver.poll_interval is None:
        raise DeviceUnavailable("a device sharing its port with others must be polled")
    run = _Run()
    try:
        async with shared_port(driver.options.port, lambda: open_port(driver, entry)) as port:
            async with port.turn(entry, driver.bus_gap):
                try:
                    await driver.on_open(port)
                except RejectedInput as err:
                    raise DeviceUnavailable(f"device init failed on {port.path}: {err}") from err
            entry.stats.state = "running"
            await _polled(driver, entry, port, run, shared=True)
    except DeviceUnavailable as err:
        if run.good_frames:
            raise DeviceLost(str(err)) from err
        raise


def _handle_frames(driver: SerialDriver[Any], entry: DeviceInput, frames: list[bytes]) -> int:
    """Decode and submit frames; return how many produced at least one reading."""
    now_ns = entry.pipeline.time.now_ns()  # one arrival time per read, from the time source
    good = 0
    parse = driver.parse
    for frame in frames:
        try:
            samples = parse(frame)
            if not isinstance(samples, list):
                samples = list(samples)  # a generator raises while it is iterated
        except RejectedInput as err:
            entry.reject(err, frame=preview(frame))
            continue
        except Exception as err:  # a driver bug must not take the device down
            entry.reject(
                RejectedInput(f"driver error: {type(err).__name__}: {err}", "driver_error"),
                frame=preview(frame),
            )
            continue
        if samples and entry.submit(samples, now_ns):
            good += 1
    return good


def _stale_after(driver: SerialDriver[Any]) -> float | None:
    stale_after: float | None = driver.options.stale_after
    if stale_after is None and driver.expected_interval is not None:
        return STALE_FACTOR * driver.expected_interval
    return stale_after


def _read_window(driver: SerialDriver[Any]) -> float:
    window: float = driver.options.read_window
    if driver.expected_interval is not None:
        # A frame must not wait so long that the next one comes in the same read (both
        # would get one arrival stamp, 1 ms apart).
        window = min(window, driver.expected_interval / 2)
    return window


async def _stream(
    driver: SerialDriver[Any], entry: DeviceInput, port: SerialPort, run: _Run
) -> None:
    def on_frames(frames: list[bytes]) -> int:
        good = _handle_frames(driver, entry, frames)
        run.good_frames += good
        return good

    stale_after = _stale_after(driver)
    try:
        await port.stream(on_frames, stale_after, _read_window(driver))
    except DeviceUnavailable:
        if stale_after is not None and time.monotonic() - port.last_good >= stale_after:
            entry.stats.stale = True
        raise


async def _polled(
    driver: SerialDriver[Any],
    entry: DeviceInput,
    port: SerialPort,
    run: _Run,
    shared: bool = False,
) -> None:
    interval = driver.poll_interval or 1.0
    missed = 0
    next_poll = time.monotonic()
    while True:
        try:
            if shared:
                async with port.turn(entry, driver.bus_gap):
                    samples = await driver.poll(port)
            else:
                samples = await driver.poll(port)
            if not isinstance(samples, list):
                samples = list(samples)
        except NoResponse as err:
            missed += 1
            entry.reject(err)
            if missed >= MAX_MISSED_POLLS:
                entry.stats.stale = True
                if not shared:
                    raise DeviceUnavailable(
                        f"{port.path}: {missed} polls in a row unanswered; reopening"
                    ) from None
                # On a shared bus the line is fine (others answer): reopening it would
                # disturb them. This device stays stale until it answers again.
        except RejectedInput as err:
            missed = 0  # it answered, if badly
            entry.reject(err, frame=preview(port.last_frame))
        except DeviceUnavailable:
            raise
        except Exception as err:  # a driver bug must not take the device down
            missed = 0
            entry.reject(
                RejectedInput(f"driver error: {type(err).__name__}: {err}", "driver_error"),
                frame=preview(port.last_frame),
            )
        else:
            missed = 0
            if samples and entry.submit(samples, entry.pipeline.time.now_ns()):
                run.good_frames += 1
        next_poll += interval
        now = time.monotonic()
        if next_poll < now - interval:
            next_poll = now  # fell behind (a slow device, a stalled loop): no burst of polls
        await asyncio.sleep(max(0.0, next_poll - now))


__all__ = ["MAX_MISSED_POLLS", "open_port", "run_serial_device"]
