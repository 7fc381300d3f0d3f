"""pytest fixtures of the driver test kit.

Use them from a driver package's ``conftest.py``::

    pytest_plugins = ["gateway.testing.fixtures"]

``virtual_port`` and ``pluggable_port`` are factories of virtual serial ports (closed at
teardown), ``scripted_device`` a factory of :class:`ScriptedDevice` (stopped at
teardown); ``mosquitto`` and ``victoria`` are session-wide real servers (never stop
them; use topics and measurements unique to your test), ``mosquitto_factory`` and
``victoria_factory`` give a test its own server to stop, kill and restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.serial.framers import Framer
from gateway.testing.device import ScriptedDevice
from gateway.testing.pty import PluggableSerialPty, SerialPty
from gateway.testing.servers import Mosquitto, VictoriaMetrics

__all__ = [
    "mosquitto",
    "mosquitto_factory",
    "pluggable_port",
    "scripted_device",
    "victoria",
    "victoria_factory",
    "virtual_port",
]


@pytest.fixture
def virtual_port() -> Iterator[Callable[[], SerialPty]]:
    """``make() -> SerialPty``: a raw pseudo-terminal pair (closed at teardown)."""
    made: list[SerialPty] = []

    def make() -> SerialPty:
        pty = SerialPty()
        made.append(pty)
        return pty

    yield make
    for pty in made:
        pty.close()


@pytest.fixture
def pluggable_port(tmp_path: Path) -> Iterator[Callable[..., PluggableSerialPty]]:
    """``make(name="usb-Example_Sensor-if00-port0", plugged=True) -> PluggableSerialPty``.

    A virtual port behind a stable symlink in the test's temp dir (like
    ``/dev/serial/by-id/<name>``), unplugged at teardown.
    """
    made: list[PluggableSerialPty] = []

    def make(
        name: str = "usb-Example_Sensor-if00-port0", plugged: bool = True
    ) -> PluggableSerialPty:
        links = tmp_path / "by-id"
        links.mkdir(exist_ok=True)
        port = PluggableSerialPty(os.fspath(links / name), plugged=plugged)
        made.append(port)
        return port

    yield make
    for port in made:
        port.close()


@pytest.fixture
def scripted_device() -> Iterator[Callable[..., ScriptedDevice]]:
    """``make(port, request_framer=None) -> ScriptedDevice`` (started; stopped at teardown)."""
    made: list[ScriptedDevice] = []

    def make(
        port: SerialPty | PluggableSerialPty, request_framer: Framer | None = None
    ) -> ScriptedDevice:
        device = ScriptedDevice(port, request_framer).start()
        made.append(device)
        return device

    yield make
    for device in made:
        device.stop()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A shared mosquitto broker (anonymous, no persistence). Don't stop or kill it."""
    with Mosquitto(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    """A shared VictoriaMetrics (InfluxDB v2 write target). Don't stop or kill it."""
    with VictoriaMetrics(tmp_path_factory.mktemp("victoria")) as vm:
        yield vm


def _subdir(tmp_path: Path, prefix: str) -> Path:
    n = sum(1 for _ in tmp_path.glob(f"{prefix}*"))
    d = tmp_path / f"{prefix}{n}"
    d.mkdir()
    return d


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """``make(persistence=False, extra_conf="", *, port=None, username=None, password=None,
    start=True) -> Mosquitto``: a private broker for this test (stopped at teardown)."""
    made: list[Mosquitto] = []

    def make(
        persistence: bool = False,
        extra_conf: str = "",
        *,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        start: bool = True,
    ) -> Mosquitto:
        broker = Mosquitto(
            _subdir(tmp_path, "mosquitto"),
            port,
            persistence,
            extra_conf,
            username=username,
            password=password,
        )
        made.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in made:
        broker.stop()


@pytest.fixture
def victoria_factory(tmp_path: Path) -> Iterator[Callable[..., VictoriaMetrics]]:
    """``make(*, port=None, start=True) -> VictoriaMetrics``: a private VM for this test."""
    made: list[VictoriaMetrics] = []

    def make(*, port: int | None = None, start: bool = True) -> VictoriaMetrics:
        vm = VictoriaMetrics(_subdir(tmp_path, "victoria"), port)
        made.append(vm)
        return vm.start() if start else vm

    yield make
    for vm in made:
        vm.stop()
