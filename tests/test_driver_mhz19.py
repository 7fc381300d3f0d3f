"""The ``mhz19`` driver: cases, the command bytes, its simulator through the core, the gateway."""

from __future__ import annotations

from typing import Any

import pytest
from driver_cases.cases import Case, cases, run
from gateway_proc import GatewayProcess
from stored_rows import stored_rows

from devices._serve import serving
from devices.mhz19 import Mhz19Driver, Mhz19Options
from devices.mhz19._protocol import ABC, ABC_OFF, ABC_ON, READ_CO2, command
from devices.mhz19.simulator import Mhz19Device
from gateway.pipeline.unitcatalog import read_units
from gateway.testing import SerialPty, run_serial_driver, wait_until


@pytest.mark.parametrize("case", cases("mhz19"))
def test_case(case: Case) -> None:
    run(case, Mhz19Driver)


def _driver(port: str, **options: Any) -> Mhz19Driver:
    return Mhz19Driver(
        "co2", Mhz19Options.model_validate({"port": port, "poll_interval": 0.02, **options})
    )


@pytest.mark.parametrize(
    ("request_bytes", "datasheet"),
    [
        (command(READ_CO2), "FF 01 86 00 00 00 00 00 79"),
        (command(ABC, ABC_OFF), "FF 01 79 00 00 00 00 00 86"),
        (command(ABC, ABC_ON), "FF 01 79 A0 00 00 00 00 E6"),
    ],
)
def test_commands_are_the_datasheets(request_bytes: bytes, datasheet: str) -> None:
    assert request_bytes == bytes.fromhex(datasheet)


def test_defaults() -> None:
    driver = Mhz19Driver("co2", Mhz19Options.model_validate({"port": "/dev/null"}))
    assert (driver.poll_interval, driver.response_timeout, driver.retries) == (10.0, 1.0, 1)
    assert driver.options.baudrate == 9600
    assert driver.options.abc is None
    with pytest.raises(ValueError, match="abc"):
        Mhz19Options.model_validate({"port": "/dev/null", "abc": "off"})


# -- the simulator through the gateway's serial runner ------------------------------------


@pytest.mark.parametrize("abc", [False, True, None])
async def test_every_answer_is_read_and_abc_is_set_as_configured(
    virtual_port: Any, abc: bool | None
) -> None:
    pty: SerialPty = virtual_port()
    sensor = Mhz19Device()
    sensor.abc = not abc if abc is not None else True
    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(_driver(pty.path, abc=abc), readings=20)
    assert result.fields("co2") == list(range(400, 420))
    assert set(result.fields("temperature")) == {25.0}
    assert result.stats.rejected == {}
    if abc is None:
        assert (sensor.abc_commands, sensor.abc) == (0, True)
    else:
        assert (sensor.abc_commands, sensor.abc) == (1, abc)


async def test_faults_are_counted_and_polling_goes_on(virtual_port: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Mhz19Device(seed=2)
    sensor.add_faults("bad_checksum", "noise", "wrong_command", "silent", "silent")
    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(_driver(pty.path, response_timeout=0.1), readings=10)
    # Every fault costs its poll (or, with a retry, nothing); no answer is read twice.
    co2 = result.fields("co2")
    assert co2 == sorted(set(co2))
    assert co2[-1] - 400 + 1 == sensor.answered
    rejected = result.stats.rejected
    assert rejected.get("checksum", 0) == 1
    assert rejected.get("garbage", 0) >= 1
    assert rejected.get("unsolicited", 0) == 1
    assert rejected.get("no_response", 0) >= 1


async def test_a_sensor_answering_twice_never_shifts_the_readings(virtual_port: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Mhz19Device()
    sensor.add_faults(*["twice"] * 5)  # type: ignore[list-item]
    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(_driver(pty.path), readings=10)
    # The extra copy is discarded before the next request, never taken as its answer.
    assert result.fields("co2") == list(range(400, 410))
    extra = result.stats.rejected.get("unsolicited", 0) + result.stats.rejected.get(
        "late_answer", 0
    )
    assert 1 <= extra <= 5


async def test_a_silent_sensor_counts_no_response_and_is_reopened(virtual_port: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Mhz19Device()
    sensor.add_faults(*["silent"] * 6)  # type: ignore[list-item]
    with serving(pty.master_fd, sensor):
        result = await run_serial_driver(_driver(pty.path, response_timeout=0.05), readings=1)
    # Three unanswered polls (each sent twice) and the core gives the port up.
    assert result.readings == []
    assert result.stats.rejected.get("no_response") == 3
    assert result.ended is not None


# -- the whole gateway -----------------------------------------------------------------


@pytest.mark.integration
def test_gateway_stores_co2_readings(virtual_port: Any, gateway_process: Any) -> None:
    pty: SerialPty = virtual_port()
    sensor = Mhz19Device()
    config: dict[str, Any] = {
        "spool": {"commit_interval": "20ms"},
        "sinks": {"local": {"flush_interval": "50ms"}},
        "devices": {
            "co2": {
                "driver": "mhz19",
                "port": pty.path,
                "poll_interval": "50ms",
                "abc": False,
                "measurement": "air",
                "fields": {"co2": {"type": "int"}},
            }
        },
    }
    with serving(pty.master_fd, sensor):
        gw: GatewayProcess = gateway_process(config).start()
        wait_until(lambda: sensor.answered >= 10, 20, what="10 answers sent")
        assert gw.stop() == 0, gw.log_tail()
    assert sensor.abc is False
    rows = stored_rows(gw.state_dir, "co2")
    co2 = [r["value"] for r in sorted(rows, key=lambda r: r["time_ns"]) if r["field"] == "co2"]
    assert co2 == list(range(400, 400 + len(co2)))
    assert len(co2) >= sensor.answered - 1  # the last answer may be cut off by the stop
    assert all(type(v) is int for v in co2)
    # The driver's units, kept in the state dir's unit catalog for query.
    assert read_units(gw.state_dir)["co2"] == {"co2": "ppm", "temperature": "degC"}
