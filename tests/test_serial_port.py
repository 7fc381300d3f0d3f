"""The serial transport against real pseudo-terminals: unplug cycles, staleness, polling,
garbage — with bounded memory, no leaked file descriptors and a responsive event loop —
and the restart policy of the device supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import tracemalloc
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from servers import SerialPtyFactory
from structlog.testing import capture_logs

from devices.line import LineDriver, LineOptions
from gateway.delivery.spool import Spool
from gateway.errors import DeviceUnavailable
from gateway.pipeline.intake import DeviceInput, Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.serial.runner import run_serial_device
from gateway.serial.supervise import REOPEN_POLL_S, DeviceLost, supervise_device


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


@pytest.mark.parametrize(("line", "lost"), [(b"seq=1\n", True), (b"not a pair\n", False)])
async def test_only_a_port_that_delivered_a_good_frame_counts_as_lost(
    tmp_path: Path, serial_pty: SerialPtyFactory, line: bytes, lost: bool
) -> None:
    """The supervisor reopens at once only what was working: DeviceLost vs DeviceUnavailable."""
    entry = _entry(tmp_path)
    pty = serial_pty()
    task = asyncio.create_task(
        run_serial_device(LineDriver("s", LineOptions(port=pty.path)), entry)
    )
    await _until(lambda: entry.stats.state == "running")
    pty.write(line)
    await _until(lambda: entry.stats.frames == 1)  # read: stored or rejected
    pty.close()
    with pytest.raises(DeviceUnavailable, match="unplugged") as caught:
        await task
    assert isinstance(caught.value, DeviceLost) is lost


class _Script:
    """A fake device runner for supervise_device: fails as scripted, records each call."""

    def __init__(self, logs: list[MutableMapping[str, Any]], *failures: DeviceUnavailable) -> None:
        self.logs = logs
        self.failures = list(failures)
        self.calls: list[int] = []  # how many warnings were logged before each call

    def warnings(self) -> list[MutableMapping[str, Any]]:
        return [e for e in self.logs if e["log_level"] == "warning"]

    async def __call__(self) -> None:
        self.calls.append(len(self.warnings()))
        raise self.failures.pop(0) if len(self.failures) > 1 else self.failures[0]


async def _supervise(
    entry: DeviceInput,
    run: _Script,
    until: Callable[[], bool],
    *,
    initial: float,
    maximum: float,
    timeout: float = 10.0,
) -> None:
    """Supervise ``run`` until ``until()`` holds (TimeoutError after ``timeout`` s)."""
    task = asyncio.create_task(supervise_device(entry, run, initial, maximum))
    try:
        await _until(until, timeout=timeout)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_device_lost_after_working_is_reopened_at_once_then_with_fresh_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.serial.supervise.REOPEN_WINDOW_S", 0.3)
    gone = DeviceUnavailable("cannot open serial port: no such file")
    with capture_logs() as logs:
        # Three failures grow the backoff; then the device works and is lost; then it
        # stays away past the quick-reopen window.
        run = _Script(logs, gone, gone, gone, DeviceLost("serial port closed (unplugged?)"), gone)
        await _supervise(
            _entry(tmp_path), run, lambda: len(run.warnings()) >= 5, initial=0.05, maximum=10
        )
    lost, after = run.warnings()[3:5]
    assert lost["was_working"] is True
    assert lost["retry_in_s"] == REOPEN_POLL_S
    assert run.calls.count(4) >= 3, "not retried quickly after the loss"
    # The backoff starts again from 0.05 s instead of going on to 0.2-0.4 s.
    assert after["retry_in_s"] <= 0.1
    assert "was_working" not in after


async def test_a_device_that_never_works_backs_off(tmp_path: Path) -> None:
    run = _Script([], DeviceUnavailable("garbage only: stale"))
    with contextlib.suppress(TimeoutError):
        await _supervise(_entry(tmp_path), run, lambda: False, initial=0.2, maximum=10, timeout=1.0)
    # Delays of at least 0.1, 0.2, 0.4, 0.8 s: no more than four tries in a second.
    assert 1 <= len(run.calls) <= 4


async def test_a_device_lost_right_after_each_open_does_not_spin(tmp_path: Path) -> None:
    run = _Script([], DeviceLost("serial port closed (unplugged?)"))
    with contextlib.suppress(TimeoutError):
        await _supervise(_entry(tmp_path), run, lambda: False, initial=0.2, maximum=10, timeout=0.5)
    assert 1 <= len(run.calls) <= 0.5 / REOPEN_POLL_S + 1
