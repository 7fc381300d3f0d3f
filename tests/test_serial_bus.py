"""Several polled devices on one serial port (an RS-485 bus): configuration rules, and the
whole gateway polling three units on one pseudo-terminal in turns."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import Field

from devices.line import LineDriver, LineOptions
from gateway import query
from gateway.app import Gateway
from gateway.config import Config, config_from_dict
from gateway.delivery.spool import Spool
from gateway.errors import ConfigError
from gateway.pipeline.intake import DeviceInput, Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.plugins import load_drivers
from gateway.serial.runner import run_serial_device
from gateway.testing import PluggableSerialPty, ScriptedDevice, SerialPty


class _UnitOptions(LineOptions):
    unit: int = Field(ge=1, le=247, description="The unit's address on the bus.")


class _BusUnit(LineDriver):
    """A test driver: asks unit <n> with ``READ <n>``, which answers ``unit=<n> seq=<k>``."""

    Options: ClassVar[type[_UnitOptions]] = _UnitOptions  # type: ignore[assignment]
    shares_port = True

    def __init__(self, device: str, options: _UnitOptions) -> None:
        super().__init__(device, options)
        self.poll_interval = 0.1
        self.response_timeout = 0.3
        self.bus_gap = 0.005
        self._request = f"READ {options.unit}\n".encode()

    def request(self) -> bytes:
        return self._request


def _config(tmp_path: Path, devices: dict[str, Any]) -> Config:
    return config_from_dict(
        {
            "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False},
            "spool": {"commit_interval": 0.05},
            "sinks": {"local": {"flush_interval": 0.05}},
            "devices": devices,
        },
        drivers={**load_drivers(), "bus_unit": _BusUnit},
    )


# --- configuration ------------------------------------------------------------------------


def test_devices_of_a_bus_driver_may_share_a_port(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        {
            "a": {"driver": "bus_unit", "port": "/dev/ttyUSB0", "unit": 1},
            "b": {"driver": "bus_unit", "port": "/dev/ttyUSB0", "unit": 2},
        },
    )
    assert set(config.devices) == {"a", "b"}


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (
            {"driver": "line", "port": "/dev/ttyUSB0"},
            'devices.b.port: "/dev/ttyUSB0" is already used by device "a"',
        ),
        (
            {"driver": "bus_unit", "port": "/dev/ttyUSB0", "unit": 2, "baudrate": 19200},
            'device "a" on the same bus uses 9600 8N1, this one 19200 8N1',
        ),
        (
            {"driver": "bus_unit", "port": "/dev/../dev/ttyUSB0", "unit": 2},
            "devices on one bus must name it the same way",
        ),
    ],
    ids=["other_driver", "other_line_settings", "other_spelling"],
)
def test_what_may_not_share_a_port_is_a_config_error(
    tmp_path: Path, second: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _config(
            tmp_path,
            {"a": {"driver": "bus_unit", "port": "/dev/ttyUSB0", "unit": 1}, "b": second},
        )
    assert message in str(err.value)


class _StreamingUnit(_BusUnit):
    def __init__(self, device: str, options: _UnitOptions) -> None:
        super().__init__(device, options)
        self.poll_interval = None


def test_only_polled_devices_may_share_a_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only polled devices can share a port"):
        config_from_dict(
            {
                "gateway": {"state_dir": str(tmp_path / "state")},
                "devices": {
                    "a": {"driver": "streaming", "port": "/dev/ttyUSB0", "unit": 1},
                    "b": {"driver": "streaming", "port": "/dev/ttyUSB0", "unit": 2},
                },
            },
            drivers={"streaming": _StreamingUnit},
        )


def test_a_plain_driver_still_may_not_share_a_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\(driver line cannot share a port\)"):
        _config(
            tmp_path,
            {
                "a": {"driver": "line", "port": "/dev/ttyUSB0"},
                "b": {"driver": "line", "port": "/dev/ttyUSB0"},
            },
        )


# --- the gateway polling a bus ---------------------------------------------------------


class _Gateways:
    def __init__(self) -> None:
        self.tasks: dict[Gateway, asyncio.Task[None]] = {}

    async def start(self, config: Config) -> Gateway:
        gw = Gateway(config)
        ready = asyncio.Event()
        self.tasks[gw] = asyncio.create_task(gw.run(ready=ready.set))
        await ready.wait()
        return gw

    async def stop(self, gw: Gateway) -> None:
        gw.stop()
        async with asyncio.timeout(60):
            await self.tasks.pop(gw)


@pytest.fixture
async def gateways() -> AsyncIterator[_Gateways]:
    running = _Gateways()
    yield running
    for gw in list(running.tasks):
        await running.stop(gw)


async def _until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _answering(units: set[int]) -> Callable[[bytes], bytes | None]:
    counters = {u: itertools.count() for u in units}

    def answer(frame: bytes) -> bytes | None:
        match = re.fullmatch(rb"READ (\d+)", frame)
        unit = int(match[1]) if match else 0
        if unit not in counters:
            return None  # a unit that is not there
        return f"unit={unit} seq={next(counters[unit])}\n".encode()

    return answer


async def test_three_units_on_one_port_are_polled_in_turns_and_a_dead_one_disturbs_none(
    tmp_path: Path,
    gateways: _Gateways,
    pluggable_port: Callable[..., PluggableSerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    bus = pluggable_port("usb-RS485_Adapter_B0001-if00-port0")
    device = scripted_device(bus)
    # Units 1 and 2 answer after 20 ms, like a slow bus device; unit 3 is dead.
    device.respond(re.compile(rb"READ \d+"), _answering({1, 2}), delay=0.02)
    config = _config(
        tmp_path,
        {
            f"u{u}": {"driver": "bus_unit", "port": bus.path, "unit": u, "measurement": "bus"}
            for u in (1, 2, 3)
        },
    )
    gw = await gateways.start(config)
    stats = {u: gw.pipeline.devices[f"u{u}"].stats for u in (1, 2, 3)}
    await _until(lambda: stats[1].readings >= 20 and stats[2].readings >= 20)
    assert stats[3].stale
    assert stats[3].rejected.get("no_response", 0) >= 3
    assert stats[1].restarts == stats[2].restarts == stats[3].restarts == 0

    # Unplugged and back: every unit on the bus reconnects and polling resumes.
    before = {u: stats[u].readings for u in (1, 2)}
    bus.unplug()
    await asyncio.sleep(0.3)
    bus.plug()
    await _until(lambda: all(stats[u].readings >= before[u] + 10 for u in (1, 2)))
    await gateways.stop(gw)

    rows = query.run_query(
        tmp_path / "state" / "readings.db", query.QueryRequest(limit=None, fields=["unit"])
    )
    by_device: dict[str, set[float]] = {}
    for row in rows:
        by_device.setdefault(str(row.device), set()).add(float(row.value))  # type: ignore[arg-type]
    # Every device stored only its own unit's answers: no answer went to another device.
    assert by_device == {"u1": {1.0}, "u2": {2.0}}
    # Requests went out one at a time: never a second before the first was answered.
    assert stats[1].rejected.get("late_answer", 0) == 0
    assert stats[2].rejected.get("late_answer", 0) == 0
    assert stats[1].rejected.get("unsolicited", 0) == 0
    assert stats[2].rejected.get("unsolicited", 0) == 0


class _SpacedUnit(_BusUnit):
    """Units that need 80 ms of quiet on the line between two exchanges."""

    def __init__(self, device: str, options: _UnitOptions) -> None:
        super().__init__(device, options)
        self.bus_gap = 0.08


async def test_turns_on_the_bus_keep_the_quiet_time_between_devices(
    tmp_path: Path,
    virtual_port: Callable[[], SerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    pty = virtual_port()
    device = scripted_device(pty)
    device.respond(re.compile(rb"READ \d+"), _answering({1, 2}), delay=0.01)
    entries = [_entry(tmp_path, f"u{u}") for u in (1, 2)]
    drivers = [_SpacedUnit(f"u{u}", _UnitOptions(port=pty.path, unit=u)) for u in (1, 2)]
    tasks = [
        asyncio.create_task(run_serial_device(d, e)) for d, e in zip(drivers, entries, strict=True)
    ]
    try:
        await _until(lambda: all(e.stats.readings >= 10 for e in entries))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    times = device.request_times
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each exchange takes ~10 ms; then the line stays quiet for bus_gap before the next.
    assert min(gaps) >= 0.08, f"requests {min(gaps) * 1000:.0f} ms apart"
    assert {r.split()[1] for r in device.requests} == {b"1", b"2"}


def _entry(tmp_path: Path, name: str) -> DeviceInput:
    spool = Spool(tmp_path / f"{name}.db", ["local"])
    return Pipeline(spool).device(name, NormalizeConfig())
