"""The driver API and its conventions: sample configs, discovery, topic patterns, framing.

Every driver folder in ``devices/`` (and the example third-party package) keeps its
``sample.toml`` as the single source of truth; its README embeds it verbatim between
``<!-- sample.toml -->`` and ``<!-- /sample.toml -->``. After editing a sample, run
``SG_UPDATE_README=1 pytest tests/test_driver_api.py`` to copy it into the README.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import sys
import tomllib
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import serial_asyncio_fast
from servers import SerialPtyFactory

from devices.json import JsonDriver
from devices.line import LineDriver
from gateway.config import DeviceSection, config_from_dict
from gateway.driver import (
    Driver,
    LineFramer,
    MqttDriver,
    MqttOptions,
    RejectedInput,
    SerialDriver,
    SerialOptions,
    TopicPattern,
)
from gateway.plugins import ENTRY_POINT_GROUP, discover

REPO = Path(__file__).parents[1]
EXAMPLE = REPO / "examples" / "sensor-gateway-example-driver"

_BLOCK = re.compile(
    r"(<!-- sample\.toml -->\n```toml\n)(?P<body>.*?)(```\n<!-- /sample\.toml -->)", re.DOTALL
)


def _driver_folders() -> list[Path]:
    return sorted(
        p for p in (REPO / "devices").iterdir() if p.is_dir() and (p / "__init__.py").exists()
    )


# (id, README, sample.toml) for every built-in driver and the example package.
_DOCUMENTED = [
    pytest.param(p / "README.md", p / "sample.toml", id=f"devices/{p.name}")
    for p in _driver_folders()
] + [
    pytest.param(EXAMPLE / "README.md", EXAMPLE / "sg_example_driver" / "sample.toml", id="example")
]


def test_driver_folders_are_complete() -> None:
    folders = _driver_folders()
    assert {p.name for p in folders} >= {"line", "json"}
    for folder in folders:
        for name in ("sample.toml", "README.md", "simulator.py"):
            assert (folder / name).is_file(), f"devices/{folder.name}/{name} is missing"


@pytest.mark.parametrize(("readme", "sample"), _DOCUMENTED)
def test_readme_embeds_the_sample_verbatim(readme: Path, sample: Path) -> None:
    text = readme.read_text(encoding="utf-8")
    want = sample.read_text(encoding="utf-8")
    blocks = list(_BLOCK.finditer(text))
    assert len(blocks) == 1, f"{readme} needs exactly one <!-- sample.toml --> block"
    if os.environ.get("SG_UPDATE_README") and blocks[0]["body"] != want:
        readme.write_text(text[: blocks[0].start("body")] + want + text[blocks[0].end("body") :])
        return
    assert blocks[0]["body"] == want, (
        f"{readme} is out of date with {sample.name}; run "
        "SG_UPDATE_README=1 pytest tests/test_driver_api.py"
    )


@pytest.mark.parametrize(("readme", "sample"), _DOCUMENTED)
def test_sample_is_a_valid_configuration(readme: Path, sample: Path) -> None:
    with sample.open("rb") as fh:
        raw: dict[str, Any] = tomllib.load(fh)
    assert raw.get("devices"), f"{sample} defines no [devices.<name>] table"
    raw.setdefault("brokers", {"default": {"host": "localhost"}})
    drivers = dict(discover().drivers)
    if "example_counter" not in drivers:  # the example package is not installed here
        drivers["example_counter"] = _example_driver_cls()
    config = config_from_dict(raw, drivers=drivers, env={})
    assert set(config.devices) == set(raw["devices"])


def _example_module(name: str) -> Any:
    """A module of the example package, installed or not."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return importlib.import_module(name)


def _example_driver_cls() -> type[Driver[Any]]:
    cls = _example_module("sg_example_driver").CounterDriver
    assert isinstance(cls, type)
    assert issubclass(cls, Driver)
    return cls


# -- discovery ----------------------------------------------------------------------------


def test_discover_finds_the_builtin_drivers() -> None:
    found = discover()
    assert found.drivers["line"] is LineDriver
    assert found.drivers["json"] is JsonDriver
    assert found.origins["line"] == found.origins["json"] == "sensor-gateway"
    assert not [p for p in found.problems if p.name in ("line", "json")]


def test_every_discovered_driver_is_well_formed() -> None:
    core_keys = set(DeviceSection.model_fields)
    for name, cls in discover().drivers.items():
        desc = cls.description
        assert desc, f"{name}: no description"
        assert "\n" not in desc, f"{name}: the description must be one line"
        assert len(desc) <= 80, f"{name}: description {desc!r} is over 80 characters"
        if issubclass(cls, SerialDriver):
            assert cls.kind == "serial", name
            assert issubclass(cls.Options, SerialOptions), name
        else:
            assert issubclass(cls, MqttDriver), name
            assert cls.kind == "mqtt", name
            assert issubclass(cls.Options, MqttOptions), name
        # An option named like a core key would be swallowed by the core's device section.
        shadowed = core_keys & set(cls.Options.model_fields)
        assert not shadowed, f"{name}: options {shadowed} clash with core device keys"


def test_example_package_registers_its_driver() -> None:
    with (EXAMPLE / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    eps = project["entry-points"][ENTRY_POINT_GROUP]
    assert eps == {"example_counter": "sg_example_driver:CounterDriver"}
    assert any(dep.startswith("sensor-gateway") for dep in project["dependencies"])


# -- the example driver against its simulator -----------------------------------------------


def test_example_driver_protocol() -> None:
    cls = _example_driver_cls()
    driver = cls("c", cls.Options.model_validate({"port": "/dev/null", "unit_id": 7}))
    assert isinstance(driver, SerialDriver)
    assert driver.request() == b"READ\n"
    assert driver.poll_interval == 5.0
    (sample,) = driver.parse(b"COUNT 42 TEMP -3.5")
    assert sample.fields == {"count": 42, "temperature": -3.5}
    assert sample.tags == {"unit": "7"}
    for frame, reason in [(b"ERR busy", "device_error"), (b"COUNT x", "malformed")]:
        with pytest.raises(RejectedInput) as info:
            driver.parse(frame)
        assert info.value.reason == reason


async def test_example_simulator_answers_polls_on_a_pty(serial_pty: SerialPtyFactory) -> None:
    simulator = _example_module("sg_example_driver.simulator")
    pty = serial_pty()
    cls = _example_driver_cls()
    driver = cls("c", cls.Options.model_validate({"port": pty.path, "unit_id": 3}))
    assert isinstance(driver, SerialDriver)
    device = simulator.CounterDevice(start=10, seed=1)
    server = asyncio.create_task(simulator.serve(pty.master_fd, device))
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=pty.path)
    counts = []
    try:
        framer = driver.framer()
        for _ in range(5):
            request = driver.request()
            assert request is not None
            writer.write(request)
            async with asyncio.timeout(driver.response_timeout * 5):
                frames: list[bytes] = []
                while not frames:
                    frames = framer.feed(await reader.read(100))
            counts += [s.fields["count"] for f in frames for s in driver.parse(f)]
        writer.write(b"HELLO\n")
        async with asyncio.timeout(5):
            frames = []
            while not frames:
                frames = framer.feed(await reader.read(100))
        with pytest.raises(RejectedInput):
            driver.parse(frames[0])
    finally:
        writer.close()
        server.cancel()
    assert counts == [10, 11, 12, 13, 14]
    assert (device.answered, device.errors) == (5, 1)


# -- TopicPattern -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic", "tags"),
    [
        ("sensors/{room}/state", "sensors/kitchen/state", {"room": "kitchen"}),
        ("sensors/{room}/state", "sensors/kitchen/other", None),
        ("sensors/{room}/state", "sensors/kitchen/state/x", None),
        ("sensors/{room}/state", "sensors//state", None),  # a named level must not be empty
        ("sensors/+/state", "sensors//state", {}),  # '+' matches an empty level (MQTT)
        ("{a}/{b}", "x/y", {"a": "x", "b": "y"}),
        ("tele/+/SENSOR", "tele/x/SENSOR", {}),
        ("tele/+/SENSOR", "tele/x/y/SENSOR", None),
        ("zigbee2mqtt/#", "zigbee2mqtt", {}),  # '#' also matches the parent level
        ("zigbee2mqtt/#", "zigbee2mqtt/a/b/c", {}),
        ("{dev}/#", "plug/status/switch:0", {"dev": "plug"}),
        ("a/b", "a/b", {}),
        ("a/b", "a/B", None),
    ],
)
def test_topic_pattern_matching(pattern: str, topic: str, tags: dict[str, str] | None) -> None:
    assert TopicPattern(pattern).match(topic) == tags


@pytest.mark.parametrize(
    ("pattern", "filter_"),
    [
        ("sensors/{room}/state", "sensors/+/state"),
        ("{shelly}/status/{component}", "+/status/+"),
        ("tele/+/#", "tele/+/#"),
    ],
)
def test_topic_pattern_subscribes_with_wildcards(pattern: str, filter_: str) -> None:
    assert TopicPattern(pattern).filter == filter_


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "cannot be empty"),
        ("a/#/b", '"#" must be the last level'),
        ("a/b#", "whole level"),
        ("a+/b", "whole level"),
        ("a/{room", "must look like {name}"),
        ("a/{1x}", "must look like {name}"),
        ("a/x{room}", "must look like {name}"),
    ],
)
def test_topic_pattern_errors(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        TopicPattern(pattern)


def test_mqtt_driver_routes_by_first_matching_pattern() -> None:
    driver = JsonDriver(
        "d", JsonDriver.Options.model_validate({"topics": ["a/{x}/s", "{y}/+/s", "b/#"]})
    )
    assert driver.subscriptions() == ["a/+/s", "+/+/s", "b/#"]
    assert driver.topic_tags("a/1/s") == {"x": "1"}
    assert driver.topic_tags("c/1/s") == {"y": "c"}
    assert driver.topic_tags("b/q/r/s") == {}
    assert driver.topic_tags("c/1/t") is None


# -- LineFramer ---------------------------------------------------------------------------


def test_framer_splits_joins_and_strips_cr() -> None:
    framer = LineFramer(max_bytes=100)
    assert framer.feed(b"a=1\r\nb=") == [b"a=1"]
    assert framer.feed(b"2\n\nc=3\n") == [b"b=2", b"", b"c=3"]
    assert framer.overflows == 0


def test_framer_limit_is_inclusive() -> None:
    framer = LineFramer(max_bytes=10)
    assert framer.feed(b"x" * 10 + b"\n") == [b"x" * 10]
    assert framer.feed(b"y" * 11 + b"\n" + b"ok\n") == [b"ok"]
    assert framer.overflows == 1


def test_framer_custom_terminator_split_across_reads() -> None:
    framer = LineFramer(max_bytes=100, terminator=b"\r\n")
    assert framer.feed(b"a=1\r") == []
    assert framer.feed(b"\nb=2\r\n") == [b"a=1", b"b=2"]


def test_framer_reset_forgets_a_partial_frame() -> None:
    framer = LineFramer()
    framer.feed(b"half a li")
    framer.reset()
    assert framer.feed(b"ne\nwhole\n") == [b"ne", b"whole"]


def test_framer_megabyte_without_newline_is_bounded_and_resyncs() -> None:
    """1 MB of garbage without a newline: memory stays bounded, one overflow, clean resync."""
    framer = LineFramer(max_bytes=4096)
    chunk = bytes(range(256)).replace(b"\n", b"") * 16  # ~4 KB, no newline
    tracemalloc.start()
    try:
        sent = 0
        while sent < 1_000_000:
            assert framer.feed(chunk) == []
            sent += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"framer buffered {peak} bytes for a 1 MB line"
    assert framer.overflows == 1
    # The tail of the long line up to the next newline is dropped, then framing resumes.
    assert framer.feed(b"tail of garbage\nt=21.5\n") == [b"t=21.5"]
    assert framer.overflows == 1


def test_framer_counts_each_long_line_once() -> None:
    framer = LineFramer(max_bytes=16)
    data = (b"z" * 100 + b"\n" + b"ok\n") * 3
    frames = []
    for i in range(0, len(data), 7):  # odd-sized reads, like a serial port
        frames += framer.feed(data[i : i + 7])
    assert frames == [b"ok"] * 3
    assert framer.overflows == 3


def test_framer_survives_random_garbage() -> None:
    import random

    rng = random.Random(0)
    framer = LineFramer(max_bytes=256)
    for _ in range(2000):
        for frame in framer.feed(rng.randbytes(rng.randrange(1, 600))):
            assert len(frame) <= 256
    assert framer.feed(b"\nsync=1\n")[-1] == b"sync=1"


def test_line_driver_framer_uses_max_frame_bytes() -> None:
    driver = LineDriver(
        "d", LineDriver.Options.model_validate({"port": "/dev/null", "max_frame_bytes": "1KiB"})
    )
    framer = driver.framer()
    assert isinstance(framer, LineFramer)
    assert framer.max_bytes == 1024
