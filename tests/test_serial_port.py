"""The serial transport against real pseudo-terminals: unplug cycles, staleness, polling,
garbage — with bounded memory, no leaked file descriptors and a responsive event loop."""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from servers import SerialPtyFactory

from devices.line import LineDriver, LineOptions
from gateway.delivery.spool import Spool
from gateway.errors import DeviceUnavailable
from gateway.pipeline.intake import DeviceInput, Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.serial.runner import run_serial_device


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _entry(tmp_path: Path) -> DeviceInput:
    spool = Spool(tmp_path / "spool.db", ["local"])
    return Pipeline(spool).device("s", NormalizeConfig(measurement="m"))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_100_unplug_cycles_leak_no_file_descriptor(
    tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    entry = _entry(tmp_path)
    before = None
    for cycle in range(100):
        pty = serial_pty()
        driver = LineDriver("s", LineOptions(port=pty.path))
        task = asyncio.create_task(run_serial_device(driver, entry))
        await _until(lambda: entry.stats.state == "running")
        pty.write(f"seq={cycle}\n".encode())
        await _until(lambda c=cycle: entry.stats.readings == c + 1)  # type: ignore[misc]
        pty.close()  # unplug
        with pytest.raises(DeviceUnavailable, match="unplugged"):
            await task
        entry.stats.state = "waiting"
        if cycle == 4:  # after warm-up (executor threads, imports)
            await asyncio.sleep(0.05)
            before = _open_fds()
    await asyncio.sleep(0.05)
    assert before is not None
    assert _open_fds() <= before, "file descriptors leaked over 95 unplug cycles"
    assert entry.stats.readings == 100


async def test_a_silent_sensor_raises_a_staleness_alarm(
    tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    entry = _entry(tmp_path)
    pty = serial_pty()
    driver = LineDriver("s", LineOptions(port=pty.path, stale_after=0.3))
    task = asyncio.create_task(run_serial_device(driver, entry))
    await _until(lambda: entry.stats.state == "running")
    pty.write(b"seq=1\n")
    started = time.monotonic()
    with pytest.raises(DeviceUnavailable, match="stale"):
        await task
    assert time.monotonic() - started >= 0.25
    assert entry.stats.stale


async def test_garbage_only_counts_as_stale_too(
    tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    """Bytes that never make a valid frame do not keep a device 'alive'."""
    entry = _entry(tmp_path)
    pty = serial_pty()
    driver = LineDriver("s", LineOptions(port=pty.path, stale_after=0.4))
    task = asyncio.create_task(run_serial_device(driver, entry))
    await _until(lambda: entry.stats.state == "running")

    async def noise() -> None:
        while True:
            pty.write(b"\x00\xff garbage without pairs\n")
            await asyncio.sleep(0.05)

    feeder = asyncio.create_task(noise())
    try:
        with pytest.raises(DeviceUnavailable, match="stale"):
            await task
    finally:
        feeder.cancel()
    assert sum(entry.stats.rejected.values()) > 3


async def test_a_megabyte_without_newline_keeps_memory_bounded_and_the_loop_responsive(
    tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    entry = _entry(tmp_path)
    pty = serial_pty()
    driver = LineDriver("s", LineOptions(port=pty.path))
    task = asyncio.create_task(run_serial_device(driver, entry))
    await _until(lambda: entry.stats.state == "running")

    lags: list[float] = []

    async def probe() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            lags.append(time.monotonic() - t - 0.01)

    prober = asyncio.create_task(probe())
    garbage = b"x" * 1_000_000 + b"\nseq=7\n"
    tracemalloc.start()
    try:
        await asyncio.to_thread(pty.write, garbage, 10.0)
        await _until(lambda: entry.stats.readings == 1, timeout=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        prober.cancel()
        task.cancel()
    assert entry.stats.rejected == {"frame_too_long": 1}
    assert peak < 256 * 1024, f"buffered {peak} bytes for a 1 MB garbage line"
    assert max(lags) < 0.1, f"event loop stalled {max(lags):.3f} s"


async def test_polled_device_without_answers_is_reopened(
    tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    class Polled(LineDriver):
        poll_interval = 0.05
        response_timeout = 0.05

        def request(self) -> bytes:
            return b"READ\n"

    entry = _entry(tmp_path)
    pty = serial_pty()
    task = asyncio.create_task(run_serial_device(Polled("s", LineOptions(port=pty.path)), entry))
    with pytest.raises(DeviceUnavailable, match="unanswered"):
        await task
    assert entry.stats.rejected == {"no_response": 3}
    assert pty.read_available(0.2).count(b"READ\n") >= 3
