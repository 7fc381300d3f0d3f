"""The ``sds011`` driver: cases, the command bytes, its simulator through the core, the gateway."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from driver_cases.cases import Case, cases, run
from gateway_proc import GatewayProcess
from stored_rows import stored_rows

from devices._serve import serving
from devices.sds011 import Sds011Driver, Sds011Options
from devices.sds011._protocol import QUERY_DATA, REPORTING_MODE, SLEEP_WORK, command
from devices.sds011.simulator import Sds011Device
from gateway.errors import DeviceUnavailable
from gateway.testing import SerialPty, run_serial_driver, wait_until


@pytest.mark.parametrize("case", cases("sds011"))
def test_case(case: Case) -> None:
    run(case, Sds011Driver)


def _driver(port: str, **options: Any) -> Sds011Driver:
    return Sds011Driver("dust", Sds011Options.model_validate({"port": port, **options}))


def _pm2_5(n: int) -> float:
    """What the simulator's measurement ``n`` says."""
    return (50 + n % 500) / 10


@pytest.mark.parametrize(
    ("request_bytes", "datasheet"),
    [
        (command(REPORTING_MODE, 1, 1), "AA B4 02 01 01 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),
        (command(SLEEP_WORK, 1, 0), "AA B4 06 01 00 00 00 00 00 00 00 00 00 00 00 FF FF 05 AB"),
        (command(QUERY_DATA), "AA B4 04 00 00 00 00 00 00 00 00 00 00 00 00 FF FF 02 AB"),
    ],
)
def test_commands_are_the_datasheets(request_bytes: bytes, datasheet: str) -> None:
    assert request_bytes == bytes.fromhex(datasheet)


def test_the_driver_claims_what_it_should() -> None:
    active = _driver("/dev/null")
    assert (active.poll_interval, active.expected_interval) == (None, 1.0)
    assert _driver("/dev/null", working_period=5).expected_interval == 300.0
    query = _driver("/dev/null", mode="query", poll_interval="30s")
    assert (query.poll_interval, query.expected_interval) == (30.0, None)
    bad = Sds011Options.model_construct(port="/dev/null", mode="query", working_period=3)
    with pytest.raises(ValueError, match="working_period only applies"):
        Sds011Driver("dust", bad)


# -- the simulator through the gateway's serial runner ------------------------------------


async def test_active_mode_wakes_a_sleeping_sensor_and_reads_every_frame(
    virtual_port: Any,
) -> None:
    pty: SerialPty = virtual_port()
    sensor = Sds011Device(period_s=0.02, mode="query", sleeping=True)
    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(_driver(pty.path, working_period=0), readings=30)
    assert sensor.commands[:3] == [(SLEEP_WORK, 1, 1), (REPORTING_MODE, 1, 0), (8, 1, 0)]
    assert (sensor.mode, sensor.sleeping) == ("active", False)
    values = result.fields("pm2_5")
    # At least 30: frames read together in one wake-up are all kept.
    assert len(values) >= 30
    first = round(values[0] * 10) - 50
    assert values == [_pm2_5(first + i) for i in range(len(values))], "consecutive, none lost"
    assert result.fields("pm10") == [v + 3.0 for v in values]
    assert set(result.stats.rejected) <= {"unsolicited"}  # a frame during the commands


async def test_query_mode_asks_for_each_reading(virtual_port: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Sds011Device(period_s=0.01)  # starts in active mode, streaming
    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(
            _driver(pty.path, mode="query", poll_interval=0.02), readings=10
        )
    assert sensor.mode == "query"
    asked = [c for c in sensor.commands if c[0] == QUERY_DATA]
    assert len(asked) >= 10
    assert len(result.readings) == 10
    assert result.fields("pm2_5") == sorted(result.fields("pm2_5"))


async def test_garbage_is_counted_and_readings_go_on(virtual_port: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Sds011Device(period_s=0.02, seed=1)
    injected = 0

    def inject(run: Any) -> bool:
        nonlocal injected
        if len(run.readings) >= 5 and injected < 5:
            for kind in ("bad_checksum", "noise", "truncated"):
                sensor.inject(sensor.garbage(kind))  # type: ignore[arg-type]
            injected += 1
        return len(run.readings) >= 40

    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(_driver(pty.path), until=inject)
    assert injected == 5
    rejected = result.stats.rejected
    assert rejected.get("checksum", 0) >= 5
    assert set(rejected) <= {"checksum", "garbage", "truncated", "malformed", "unsolicited"}
    values = result.fields("pm2_5")
    assert all(b > a for a, b in itertools.pairwise(values))  # in order


async def test_a_sensor_ignoring_commands_is_not_ready(virtual_port: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Sds011Device(period_s=0.05)
    sensor.ignore_commands = True
    driver = _driver(pty.path, response_timeout=0.05)
    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(driver, readings=1, timeout=20)
    # The port is closed; the core retries it with backoff (a whole gateway keeps going).
    assert result.readings == []
    assert isinstance(result.ended, DeviceUnavailable)
    assert "device init failed" in str(result.ended)
    assert "no answer" in str(result.ended)


async def test_a_sensor_confirming_another_setting_is_not_ready(virtual_port: Any) -> None:
    class Stubborn(Sds011Device):
        def answer(self, request: bytes) -> bytes | None:
            if request[2] == REPORTING_MODE:
                request = request[:4] + b"\x01" + request[5:]  # stays in query mode
            return super().answer(request)

    pty: SerialPty = virtual_port()
    with serving(pty.master_fd, Stubborn(period_s=0.05)):
        result = await run_serial_driver(_driver(pty.path), readings=1, timeout=20)
    assert result.readings == []
    assert isinstance(result.ended, DeviceUnavailable)
    assert "did not switch to active mode: it confirmed 1" in str(result.ended)


# -- the whole gateway -----------------------------------------------------------------


@pytest.mark.integration
def test_gateway_stores_dust_readings(virtual_port: Any, gateway_process: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Sds011Device(period_s=0.05, sleeping=True)
    config: dict[str, Any] = {
        "spool": {"commit_interval": "20ms"},
        "sinks": {"local": {"flush_interval": "50ms"}},
        "devices": {"dust": {"driver": "sds011", "port": pty.path, "measurement": "air"}},
    }
    with serving(pty.master_fd, sensor):
        gw: GatewayProcess = gateway_process(config).start()
        wait_until(lambda: sensor.measured >= 25, 20, what="25 measurements sent")
        assert gw.stop() == 0, gw.log_tail()
    rows = stored_rows(gw.state_dir, "dust")
    pm = sorted(r["value"] for r in rows if r["field"] == "pm2_5")
    assert len(pm) >= 20
    assert {r["measurement"] for r in rows} == {"air"}
    assert pm == [pm[0] + i / 10 for i in range(len(pm))] or len(set(pm)) == len(pm)
