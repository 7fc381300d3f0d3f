"""Time: the time source, clock steps, device clocks, and the ages that decide deletions.

The machine's clock is never touched. A :class:`SteppableClock` stands in for it: it is
injected into the gateway's :class:`TimeSource` and, for the whole-gateway tests, also
patched over ``time.time_ns`` so that nothing in the gateway can read a wall clock that
disagrees with the test's. Each whole-gateway test runs a real Gateway (real spool, real
local store, real pseudo-terminals) in-process, as tests/test_runtime.py does.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import itertools
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from servers import SerialPtyFactory, free_port
from structlog.testing import capture_logs

import gateway.pipeline.clock as clock_mod
from gateway import query
from gateway.app import Gateway
from gateway.config import config_from_dict
from gateway.pipeline.timesource import TimeSource
from gateway.sinks.local import LocalSink

S = 1_000_000_000
H = 3600 * S
D = 24 * H
T = 1_750_000_000_000_000_000  # 2025-06-15T15:06:40Z: "now" in these tests
STEP_EVENT = "system clock stepped"


class SteppableClock:
    """A frozen wall clock and monotonic clock that only move when the test says so."""

    def __init__(self, wall_ns: int = T, mono_ns: int = 1_000 * S) -> None:
        self.wall = wall_ns
        self.mono = mono_ns
        self.synced: bool | None = True

    def wall_ns(self) -> int:
        return self.wall

    def monotonic_ns(self) -> int:
        return self.mono

    def synchronized(self) -> bool | None:
        return self.synced

    def advance(self, ns: int) -> None:
        """Time passes: both clocks move."""
        self.wall += ns
        self.mono += ns

    def step(self, ns: int) -> None:
        """The wall clock is set (NTP step, ``date -s``): only it jumps."""
        self.wall += ns

    def source(self, check_sync: bool = False) -> TimeSource:
        return TimeSource(
            check_sync=check_sync,
            wall_ns=self.wall_ns,
            monotonic_ns=self.monotonic_ns,
            synchronized=self.synchronized,
        )


def _steps(logs: Sequence[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == STEP_EVENT]


# --- the time source ------------------------------------------------------------------


def test_the_time_source_reads_the_injected_clocks() -> None:
    clock = SteppableClock()
    ts = clock.source()
    assert ts.now_ns() == T
    assert ts.monotonic_ns() == 1_000 * S
    clock.advance(5 * S)
    assert (ts.now_ns(), ts.monotonic_ns()) == (T + 5 * S, 1_005 * S)
    assert ts.steps == 0
    assert ts.last_step_s is None


@pytest.mark.parametrize("step", [2 * D, -H, 2 * S], ids=["forward-2d", "back-1h", "forward-2s"])
def test_a_step_is_detected_logged_once_with_its_size_and_counted(step: int) -> None:
    clock = SteppableClock()
    ts = clock.source()
    ts.now_ns()
    clock.step(step)
    with capture_logs() as logs:
        assert ts.now_ns() == T + step
        for _ in range(3):
            clock.advance(S)
            ts.now_ns()
        ts.refresh_sync()
    [event] = _steps(logs)
    assert event["log_level"] == "warning"
    assert event["step_s"] == step / S
    assert ts.steps == 1
    assert ts.last_step_s == step / S


def test_time_passing_and_small_adjustments_are_not_steps() -> None:
    clock = SteppableClock()
    ts = clock.source()
    with capture_logs() as logs:
        for _ in range(10):
            clock.advance(3 * H)  # a long silence: both clocks move together
            clock.step(S // 10)  # a 100 ms correction is below the threshold
            ts.now_ns()
    assert _steps(logs) == []
    assert ts.steps == 0


def test_each_step_is_counted_and_the_timer_tick_finds_one_without_readings() -> None:
    clock = SteppableClock()
    ts = clock.source()
    clock.step(-H)
    ts.refresh_sync()  # the housekeeping tick, with no reading in between
    clock.step(3 * D)
    ts.now_ns()
    assert ts.steps == 2
    assert ts.last_step_s == 3 * D / S


def test_sync_state_is_read_from_the_kernel_answer_and_changes_are_logged() -> None:
    clock = SteppableClock()
    ts = clock.source(check_sync=True)
    clock.synced = False
    with capture_logs() as logs:
        ts.refresh_sync()
        ts.refresh_sync()
        clock.synced = True
        ts.refresh_sync()
    assert [e["log_level"] for e in logs] == ["warning", "info"]
    assert ts.unsynced is False
    clock.synced = None  # not knowable (not Linux): not unsynced
    ts.refresh_sync()
    assert ts.unsynced is False


def test_the_clock_check_loads_libc_once_and_never_runs_ldconfig(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_find_library(name: str) -> str | None:
        raise AssertionError("ctypes.util.find_library spawns ldconfig")

    loads: list[object] = []
    real_cdll = ctypes.CDLL

    def counting_cdll(*args: Any, **kwargs: Any) -> ctypes.CDLL:
        loads.append(args)
        return real_cdll(*args, **kwargs)

    monkeypatch.setattr(ctypes.util, "find_library", no_find_library)
    monkeypatch.setattr(ctypes, "CDLL", counting_cdll)
    clock_mod._libc.cache_clear()
    try:
        answers = {clock_mod.clock_synchronized() for _ in range(5)}
    finally:
        clock_mod._libc.cache_clear()
    assert answers <= {True, False}
    assert len(loads) == 1


# --- the whole gateway ------------------------------------------------------------------


def _config(tmp_path: Path, devices: dict[str, Any], **sections: Any) -> Any:
    return config_from_dict(
        {
            "gateway": {
                "state_dir": str(tmp_path / "state"),
                "restart_backoff_initial": 0.05,
                "restart_backoff_max": 0.2,
                "shutdown_grace": 0.2,
            },
            "spool": {"commit_interval": 0.05, **sections.pop("spool", {})},
            "sinks": sections.pop("sinks", {"local": {"flush_interval": 0.05}}),
            "devices": devices,
        }
    )


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SteppableClock:
    """The test's clock, also standing in for the machine's wall clock."""
    clock = SteppableClock()
    monkeypatch.setattr(time, "time_ns", clock.wall_ns)
    return clock


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[Gateway, asyncio.Task[None]]] = []

    async def start(config: Any, time_source: TimeSource) -> Gateway:
        gateway = Gateway(config, time_source=time_source)
        ready = asyncio.Event()
        task = asyncio.create_task(gateway.run(ready=ready.set))
        started.append((gateway, task))
        await ready.wait()
        await _until(
            lambda: all(e.stats.state == "running" for e in gateway.pipeline.devices.values())
        )
        return gateway

    yield start
    for gateway, task in started:
        gateway.stop()
        await task


def _rows(tmp_path: Path, **kw: Any) -> list[query.Row]:
    return query.run_query(tmp_path / "state" / "readings.db", query.QueryRequest(limit=None, **kw))


def _readings(gateway: Gateway, device: str = "s") -> int:
    return gateway.pipeline.devices[device].stats.readings


async def test_a_forward_step_does_not_make_the_spool_drop_its_backlog_as_too_old(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[..., Any], clock: SteppableClock
) -> None:
    """Measured before: 1,000 of 1,000 dropped after a 2-day step with max_age = 1d."""
    pty = serial_pty()
    dead = f"http://127.0.0.1:{free_port()}"  # InfluxDB unreachable: the backlog waits
    sinks = {"influxdb": {"url": dead, "bucket": "b", "org": "o", "token": "t"}}
    config = _config(
        tmp_path,
        {"s": {"driver": "line", "port": pty.path}},
        spool={"max_age": "1d"},
        sinks=sinks,
    )
    gateway = await running(config, clock.source())
    pty.write(b"".join(f"seq={i}\n".encode() for i in range(1000)))
    await _until(lambda: gateway.spool.stats.committed >= 1000)

    clock.step(2 * D)  # NTP after boot on a Pi without a real-time clock
    pty.write(b"seq=1000\n")
    await _until(lambda: gateway.spool.stats.committed >= 1001)
    await gateway.spool.commit()

    assert gateway.spool.stats.dropped == {}
    assert gateway.spool.behind("influxdb") >= 1001
    age = await gateway.spool.oldest_age()
    assert age is not None
    assert age < 60
    assert gateway.time.steps == 1


async def test_a_backward_step_restarts_the_spacing_and_is_logged_once_and_counted(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[..., Any], clock: SteppableClock
) -> None:
    pty = serial_pty()
    config = _config(tmp_path, {"s": {"driver": "line", "port": pty.path, "measurement": "m"}})
    gateway = await running(config, clock.source())
    pty.write(b"seq=0\nseq=1\nseq=2\n")
    await _until(lambda: _readings(gateway) == 3)

    with capture_logs() as logs:
        clock.step(-H)
        for i in range(3, 6):
            pty.write(f"seq={i}\n".encode())
            await _until(lambda i=i: _readings(gateway) == i + 1)  # type: ignore[misc]
        gateway.time.refresh_sync()
    await _until(lambda: gateway.loops[0].stats.points_written >= 6)

    times = [r.time_ns for r in _rows(tmp_path, fields=["seq"])]
    ms = 1_000_000
    assert sorted(times) == [T - H, T - H + ms, T - H + 2 * ms, T, T + ms, T + 2 * ms]
    [event] = _steps(logs)
    assert event["step_s"] == -3600.0
    assert gateway.time.steps == 1
    assert gateway.time.last_step_s == -3600.0


async def test_device_times_replaced_for_skew_get_distinct_stamps_and_the_log_says_the_offset(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[..., Any], clock: SteppableClock
) -> None:
    pty = serial_pty()
    device = {"driver": "line", "port": pty.path, "measurement": "m", "time_field": "t"}
    gateway = await running(_config(tmp_path, {"s": device}), clock.source())
    cet_ms = (T + H) // 1_000_000  # a Tasmota on CET sends local time as if it were UTC
    with capture_logs() as logs:
        pty.write(b"".join(f"t={cet_ms} seq={i}\n".encode() for i in range(5)))  # one read
        await _until(lambda: _readings(gateway) == 5)
    await _until(lambda: gateway.loops[0].stats.points_written >= 5)

    times = [r.time_ns for r in _rows(tmp_path, fields=["seq"])]
    assert len(times) == 5
    assert len(set(times)) == 5
    assert all(b - a >= 1_000_000 for a, b in itertools.pairwise(times))
    assert times[0] == T
    skews = [e for e in logs if e.get("reason") == "clock_skew"]
    assert skews
    assert skews[0]["offset_s"] == 3600.0
    assert gateway.pipeline.devices["s"].stats.dropped_fields == {"clock_skew": 5}


async def test_an_unsynchronized_gateway_clock_keeps_the_device_time(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[..., Any], clock: SteppableClock
) -> None:
    pty = serial_pty()
    clock.wall = T - 30 * D  # a Pi booted at its last shutdown time; NTP not there yet
    clock.synced = False
    device = {"driver": "line", "port": pty.path, "measurement": "m", "time_field": "t"}
    gateway = await running(_config(tmp_path, {"s": device}), clock.source(check_sync=True))
    assert gateway.time.unsynced
    gps_ms = T // 1_000_000
    pty.write(f"t={gps_ms} seq=1\nseq=2\n".encode())  # a GPS-timed line, then one without
    await _until(lambda: gateway.loops[0].stats.points_written >= 2)

    got = {r.value: (r.time_ns, r.tags.get("clock")) for r in _rows(tmp_path, fields=["seq"])}
    assert got == {1.0: (T, None), 2.0: (T - 30 * D, "unsynced")}
    assert gateway.pipeline.devices["s"].stats.dropped_fields == {}


async def test_retention_after_the_clock_is_synchronized_keeps_the_readings_from_before(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[..., Any], clock: SteppableClock
) -> None:
    pty = serial_pty()
    clock.wall = T - 40 * D  # stale by more than the 30 days of retention
    clock.synced = False
    config = _config(tmp_path, {"s": {"driver": "line", "port": pty.path, "measurement": "m"}})
    gateway = await running(config, clock.source(check_sync=True))
    pty.write(b"seq=1\nseq=2\n")
    await _until(lambda: gateway.loops[0].stats.points_written >= 2)

    clock.step(40 * D)  # NTP: synchronized, and the clock jumps to the real time
    clock.synced = True
    gateway.time.refresh_sync()
    pty.write(b"seq=3\n")
    await _until(lambda: gateway.loops[0].stats.points_written >= 3)
    sink = gateway.sinks[0]
    assert isinstance(sink, LocalSink)
    await sink.store.expire()

    assert sorted(r.value for r in _rows(tmp_path, fields=["seq"])) == [1.0, 2.0, 3.0]
