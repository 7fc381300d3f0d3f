"""Shared fixtures: real servers, the fault proxy, pseudo-terminals and the fake InfluxDB.

Session-scoped servers (``mosquitto``, ``victoria``, ``influx1``) are shared by all tests:
use names derived from :func:`unique_name` for topics, measurements and databases, and never
stop, kill or reconfigure them. A test that kills or restarts a server takes its own from a
``*_factory`` fixture; whatever a factory made is stopped/closed at the end of the test.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_proc import GatewayProcess
from servers import (
    FakeInfluxServer,
    Influx1,
    Influx1Factory,
    SerialPty,
    SerialPtyFactory,
    TcpProxy,
    TcpProxyFactory,
)

# The real-server fixtures and the virtual-port fixtures come from the public driver test
# kit, so a third-party driver's tests use the very same ones.
from gateway.testing.fixtures import (  # noqa: F401
    mosquitto,
    mosquitto_factory,
    pluggable_port,
    scripted_device,
    victoria,
    victoria_factory,
    virtual_port,
)

_name_uses: dict[str, int] = {}


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """``request.node.name`` sanitised to [a-z0-9_] plus a short hash of the node id.

    E.g. ``test_foo[a-b]`` -> ``test_foo_a_b_3f2a9c``. Unique per test (also per parameter
    set and per repeated run in one session) and never a prefix of another test's name, so
    ``{__name__=~"<name>_.+"}`` selects only this test's series.
    """
    nodeid = request.node.nodeid
    uses = _name_uses[nodeid] = _name_uses.get(nodeid, 0) + 1
    base = re.sub(r"[^a-z0-9_]+", "_", request.node.name.lower())
    base = re.sub(r"_+", "_", base).strip("_")[:60].rstrip("_") or "t"
    digest = hashlib.sha1(f"{nodeid}#{uses}".encode()).hexdigest()[:6]
    return f"{base}_{digest}"


# -- shared (session) servers ------------------------------------------------------------------


@pytest.fixture(scope="session")
def influx1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influx1]:
    """A shared InfluxDB 1.x without auth. Create your own database (``unique_name``)."""
    with Influx1(tmp_path_factory.mktemp("influx1")) as server:
        yield server


# -- per-test factories --------------------------------------------------------------------------


def _subdir(tmp_path: Path, prefix: str) -> Path:
    n = sum(1 for p in tmp_path.glob(f"{prefix}*"))
    d = tmp_path / f"{prefix}{n}"
    d.mkdir()
    return d


@pytest.fixture
def influx1_factory(tmp_path: Path) -> Iterator[Influx1Factory]:
    """``make(auth=False, *, port=None, start=True) -> Influx1``: a private InfluxDB 1.x."""
    made: list[Influx1] = []

    def make(auth: bool = False, *, port: int | None = None, start: bool = True) -> Influx1:
        server = Influx1(_subdir(tmp_path, "influx1"), port, auth)
        made.append(server)
        return server.start() if start else server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def tcp_proxy() -> Iterator[TcpProxyFactory]:
    """``make(upstream_host, upstream_port) -> TcpProxy`` (closed at teardown)."""
    made: list[TcpProxy] = []

    def make(upstream_host: str, upstream_port: int) -> TcpProxy:
        proxy = TcpProxy(upstream_host, upstream_port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


@pytest.fixture
def serial_pty() -> Iterator[SerialPtyFactory]:
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
def fake_influx() -> Iterator[FakeInfluxServer]:
    """A FAKE InfluxDB write endpoint for scripted error answers (see FakeInfluxServer)."""
    with FakeInfluxServer() as server:
        yield server


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    """Factory: ``gateway_process(config_dict, name="gw")`` → a not-yet-started gateway subprocess."""
    made: list[GatewayProcess] = []

    def make(
        config: dict[str, Any], name: str = "gw", env: dict[str, str] | None = None
    ) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / name, config, env)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.close()
