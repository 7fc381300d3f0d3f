"""The counter driver: its protocol without I/O, then through the gateway's serial
runner against its simulator on a virtual port (gateway.testing)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from gateway.driver import RejectedInput
from gateway.testing import (
    PluggableSerialPty,
    ScriptedDevice,
    SerialPty,
    run_serial_driver,
)

from sg_example_driver import CounterDriver, CounterOptions
from sg_example_driver.simulator import CounterDevice


def _driver(port: str, **options: object) -> CounterDriver:
    opts = {"port": port, "unit_id": 3, "poll_interval": 0.05, **options}
    return CounterDriver("counter", CounterOptions.model_validate(opts))


def test_answers_parse_and_errors_are_rejected() -> None:
    driver = _driver("/dev/null")
    (sample,) = driver.parse(b"COUNT 10 TEMP 21.03")
    assert sample.fields == {"count": 10, "temperature": 21.03}
    assert sample.tags == {"unit": "3"}
    with pytest.raises(RejectedInput) as err:
        driver.parse(b"ERR busy")
    assert err.value.reason == "device_error"


async def test_polls_are_answered_in_order(
    virtual_port: Callable[[], SerialPty], scripted_device: Callable[..., ScriptedDevice]
) -> None:
    pty = virtual_port()
    device = CounterDevice(start=10, seed=1)
    scripted_device(pty).respond(b"READ", lambda request: device.answer(request))
    run = await run_serial_driver(_driver(pty.path), readings=5)
    assert run.fields("count") == [10, 11, 12, 13, 14]
    assert run.stats.rejected == {}


async def test_a_late_answer_is_not_taken_for_the_next_poll(
    virtual_port: Callable[[], SerialPty], scripted_device: Callable[..., ScriptedDevice]
) -> None:
    pty = virtual_port()
    device = CounterDevice(start=0)
    script = scripted_device(pty)
    # The second answer comes after its poll timed out (0.2 s) but before the next poll.
    script.respond(b"READ", device.answer, times=1)
    script.respond(b"READ", device.answer, delay=0.3, times=1)
    script.respond(b"READ", device.answer)
    driver = _driver(pty.path, poll_interval=0.5, response_timeout=0.2)
    run = await run_serial_driver(driver, readings=3)
    assert run.fields("count") == [0, 2, 3]  # 1 came too late and was discarded
    assert run.stats.rejected == {"no_response": 1, "late_answer": 1}


async def test_polling_resumes_after_an_unplug(
    pluggable_port: Callable[..., PluggableSerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    usb = pluggable_port("usb-Example_Counter_0001-if00-port0")
    device = CounterDevice(start=0)
    scripted_device(usb).respond(b"READ", device.answer)
    run = await run_serial_driver(_driver(usb.path), readings=3)
    assert run.ended is None
    usb.unplug()
    usb.plug()
    run = await run_serial_driver(_driver(usb.path), readings=3)
    assert run.fields("count")[0] >= 3
