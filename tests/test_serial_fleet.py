"""The whole gateway (in process) with many serial devices on pseudo-terminals, played by
the test kit: a device unplugged and replugged 20 times behind the same by-id style
symlink, and 20 devices streaming at 10 Hz for 30 s with every reading stored."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway import query
from gateway.app import Gateway
from gateway.config import Config, config_from_dict
from gateway.testing import PluggableSerialPty, ScriptedDevice, SerialPty

# Whole gateways with many devices for tens of seconds: deselect with -m "not integration",
# or run alone with -m integration tests/test_serial_fleet.py.
pytestmark = pytest.mark.integration

# A longer first backoff than the default 1 s, so the bound below has room on a loaded
# machine: its smallest jittered delay is half of it. A reconnect faster than that was
# the supervisor's quick reopen of a device that was working, not a backoff retry.
BACKOFF_INITIAL_S = 5.0
RECONNECT_BOUND_S = BACKOFF_INITIAL_S / 2


def _config(tmp_path: Path, devices: dict[str, Any]) -> Config:
    return config_from_dict(
        {
            "gateway": {
                "state_dir": str(tmp_path / "state"),
                "clock_sync_check": False,
                "restart_backoff_initial": f"{BACKOFF_INITIAL_S}s",
            },
            "spool": {"commit_interval": 0.05},
            "sinks": {"local": {"flush_interval": 0.05}},
            "devices": devices,
        }
    )


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


class _Gateways:
    """Gateways run in-process as asyncio tasks; stopped at the end of the test."""

    def __init__(self) -> None:
        self.tasks: dict[Gateway, asyncio.Task[None]] = {}

    async def start(self, config: Config) -> Gateway:
        gw = Gateway(config)
        ready = asyncio.Event()
        self.tasks[gw] = asyncio.create_task(gw.run(ready=ready.set))
        await ready.wait()
        return gw

    async def stop(self, gw: Gateway) -> None:
        """Stop the way SIGTERM does: the spool commits and the local store gets it all."""
        gw.stop()
        async with asyncio.timeout(60):
            await self.tasks.pop(gw)


@pytest.fixture
async def gateways() -> AsyncIterator[_Gateways]:
    running = _Gateways()
    yield running
    for gw in list(running.tasks):
        await running.stop(gw)


def _stored(tmp_path: Path) -> Counter[tuple[str, int]]:
    rows = query.run_query(
        tmp_path / "state" / "readings.db", query.QueryRequest(limit=None, fields=["seq"])
    )
    return Counter((str(r.device), int(r.value)) for r in rows)  # type: ignore[arg-type]


CYCLES = 20


async def test_unplugged_and_replugged_20_times_it_reconnects_each_time_and_nothing_else_stirs(
    tmp_path: Path,
    gateways: _Gateways,
    pluggable_port: Callable[..., PluggableSerialPty],
    virtual_port: Callable[[], SerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    usb = pluggable_port("usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0")
    steady = virtual_port()
    config = _config(
        tmp_path,
        {
            "flappy": {"driver": "line", "port": usb.path},
            "steady": {"driver": "line", "port": steady.path},
        },
    )
    gw = await gateways.start(config)
    flappy = gw.pipeline.devices["flappy"].stats
    calm = gw.pipeline.devices["steady"].stats
    await _until(lambda: flappy.state == calm.state == "running")
    # The steady device talks all along; the flappy one at 20 Hz while plugged in.
    scripted_device(steady).stream(lambda n: f"seq={n}\n".encode(), rate_hz=10)
    flapper = scripted_device(usb).stream(lambda n: f"seq={n}\n".encode(), rate_hz=20)
    # reconnect_s[0] is the first plug-in; then CYCLES times: unplugged (the pty closed),
    # replugged (a new pty behind the same path), readings resume.
    reconnect_s: list[float] = []
    for cycle in range(CYCLES + 1):
        before = flappy.readings
        plugged_at = time.monotonic()
        await _until(lambda b=before: flappy.readings > b, timeout=30)  # type: ignore[misc]
        reconnect_s.append(time.monotonic() - plugged_at)
        if cycle == CYCLES:
            break
        await asyncio.sleep(0.2)
        usb.unplug()
        await asyncio.sleep(0.2)
        usb.plug()
    await gateways.stop(gw)
    assert usb.plugs == CYCLES + 1
    assert len(reconnect_s[1:]) == CYCLES
    assert max(reconnect_s[1:]) < RECONNECT_BOUND_S, (
        f"slowest reconnect {max(reconnect_s[1:]):.2f} s, all: {[round(s, 2) for s in reconnect_s]}"
    )
    assert flappy.restarts >= CYCLES
    assert flapper.sent > 0
    assert calm.restarts == 0
    assert calm.rejected == {}
    stored = _stored(tmp_path)
    steady_seqs = sorted(seq for (device, seq) in stored if device == "steady")
    assert steady_seqs == list(range(len(steady_seqs))), "the steady device lost readings"
    assert all(n == 1 for n in stored.values()), "a reading was stored twice"


# The figures: 20 devices at 10 Hz for 30 s.
DEVICES, RATE_HZ, SECONDS = 20, 10, 30


async def test_20_devices_at_10_hz_every_reading_stored(
    tmp_path: Path,
    gateways: _Gateways,
    virtual_port: Callable[[], SerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    ptys = [virtual_port() for _ in range(DEVICES)]
    config = _config(
        tmp_path, {f"d{i:02}": {"driver": "line", "port": p.path} for i, p in enumerate(ptys)}
    )
    gw = await gateways.start(config)
    stats = [gw.pipeline.devices[f"d{i:02}"].stats for i in range(DEVICES)]
    await _until(lambda: all(s.state == "running" for s in stats))
    count = RATE_HZ * SECONDS
    devices = [
        scripted_device(p).stream(lambda n: f"seq={n} t=21.5\n".encode(), RATE_HZ, count)
        for p in ptys
    ]
    await _until(lambda: all(s.readings >= count for s in stats), timeout=SECONDS + 60)
    await gateways.stop(gw)
    assert all(d.lost == 0 for d in devices)
    stored = _stored(tmp_path)
    for i in range(DEVICES):
        name = f"d{i:02}"
        seqs = sorted(seq for (device, seq) in stored if device == name)
        assert seqs == list(range(count)), f"{name}: {len(seqs)} of {count} stored"
    assert all(n == 1 for n in stored.values())
    assert all(s.rejected == {} and s.restarts == 0 for s in stats)
