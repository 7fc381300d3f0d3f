"""docs/writing-a-driver.md: its Python snippets run as written, in order, like a reader
typing them in; the counter driver they build parses answers, rejects errors and can
be given a CR framer; the MQTT sketch decodes a payload."""

from __future__ import annotations

import abc
import re
from pathlib import Path
from typing import Any

import pytest

from gateway.driver import RejectedInput

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "writing-a-driver.md"
# A block whose code after this marker is methods of the named class.
METHODS = re.compile(r"^# (\w+), (?:continued|a method)$", re.MULTILINE)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", GUIDE.read_text(), re.DOTALL)


@pytest.fixture(scope="module")
def guide() -> dict[str, Any]:
    """Every snippet executed in one namespace; methods attached to their class."""
    ns: dict[str, Any] = {"__name__": "guide"}
    for block in python_blocks():
        marker = METHODS.search(block)
        module_part = block[: marker.start()] if marker else block
        # dont_inherit: run as a reader would, without this file's __future__ import.
        exec(compile(module_part, str(GUIDE), "exec", dont_inherit=True), ns)
        if marker:
            methods: dict[str, Any] = {}
            exec(compile(block[marker.end() :], str(GUIDE), "exec", dont_inherit=True), ns, methods)
            cls = ns.get(marker.group(1))
            if cls is not None:
                for name, fn in methods.items():
                    setattr(cls, name, fn)
                abc.update_abstractmethods(cls)
    return ns


def counter(guide: dict[str, Any]) -> Any:
    opts = guide["CounterOptions"].model_validate({"port": "/dev/null", "unit_id": 3})
    return guide["CounterDriver"]("c", opts)


def test_the_guide_has_snippets() -> None:
    assert len(python_blocks()) >= 8


def test_the_counter_driver_parses_answers(guide: dict[str, Any]) -> None:
    driver = counter(guide)
    assert driver.request() == b"READ\n"
    (sample,) = driver.parse(b"COUNT 42 TEMP 21.5")
    assert (sample.fields, sample.tags) == ({"count": 42, "temperature": 21.5}, {"unit": "3"})
    with pytest.raises(RejectedInput) as caught:
        driver.parse(b"ERR busy")
    assert caught.value.reason == "device_error"
    with pytest.raises(RejectedInput) as caught:
        driver.parse(b"COUNT x")
    assert caught.value.reason == "malformed"


def test_the_cr_framer(guide: dict[str, Any]) -> None:
    framer = counter(guide).framer()
    assert framer.feed(b"COUNT 1 TEMP 2.5\rCOUNT 2 T") == [b"COUNT 1 TEMP 2.5"]
    assert framer.feed(b"EMP 3\r") == [b"COUNT 2 TEMP 3"]


def test_the_protocol_defaults_snippet(guide: dict[str, Any]) -> None:
    assert guide["NmeaOptions"].model_validate({"port": "/dev/null"}).baudrate == 4800


def test_the_mqtt_sketch_decodes(guide: dict[str, Any]) -> None:
    opts = guide["MyOptions"].model_validate({"topics": ["sensors/{room}/state"]})
    driver = guide["MyDriver"]("m", opts)
    (sample,) = driver.decode("sensors/kitchen/state", b'{"t": 21.5}')
    assert (sample.fields, sample.tags) == ({"t": 21.5}, {"room": "kitchen"})
    with pytest.raises(RejectedInput):
        driver.decode("sensors/kitchen/state", b"[1]")
