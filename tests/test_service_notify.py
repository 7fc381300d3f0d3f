"""sd_notify: readiness, watchdog, status, stopping — with a real datagram socket.

The socket stands in for systemd (no service manager runs here); the gateway is the real
process (``python -m gateway run``) or a real in-process :class:`Gateway`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_listener import NotifyListener
from servers import SerialPtyFactory, wait_until
from test_faults import GatewayFactory, LineFeeder, line_device

from gateway.app import Gateway
from gateway.config import config_from_dict
from gateway.service.notify import Notifier


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    sock = NotifyListener()
    yield sock
    sock.close()


def test_notifier_speaks_the_datagram_protocol(listener: NotifyListener) -> None:
    notify = Notifier(listener.env(watchdog_s=4.0))
    assert notify.enabled
    assert notify.watchdog_s == 4.0
    assert notify.ready("2/2 devices up")
    assert notify.reloading()
    assert notify.stopping()
    ready = listener.wait_for("READY", "1")
    assert ready.fields["STATUS"] == "2/2 devices up"
    assert "MONOTONIC_USEC" in listener.wait_for("RELOADING", "1").fields
    assert listener.wait_for("STOPPING", "1").fields["STATUS"] == "stopping"
    notify.close()


def test_notifier_without_systemd_does_nothing() -> None:
    notify = Notifier({})
    assert not notify.enabled
    assert notify.watchdog_s is None
    assert not notify.ready("x")
    # A watchdog meant for another process (WATCHDOG_PID) is not ours to feed.
    assert Notifier({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_s is None


def test_abstract_socket_address() -> None:
    import socket

    name = f"sensor-gateway-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert sock.recv(100) == b"WATCHDOG=1"
    finally:
        sock.close()


def test_a_missing_socket_is_reported_once(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    notify = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with capture_logs() as logs:
        assert not notify.watchdog()
        assert not notify.watchdog()
    assert [e["event"] for e in logs] == ["could not notify systemd"]


async def test_watchdog_stops_while_the_loop_is_blocked(
    tmp_path: Path, listener: NotifyListener
) -> None:
    """A loop stuck in blocking code sends no WATCHDOG=1; systemd would restart us."""
    config = config_from_dict(
        {
            "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False},
            "sinks": {"local": {"enabled": True}},
        }
    )
    gw = Gateway(config, notifier=Notifier(listener.env(watchdog_s=0.2)))
    ready = asyncio.Event()
    task = asyncio.create_task(gw.run(ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        await asyncio.to_thread(wait_until, lambda: len(listener.with_key("WATCHDOG")) >= 3)
        blocked_at = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - the defect simulated: blocking code on the loop
        unblocked_at = time.monotonic()
        await asyncio.to_thread(
            wait_until, lambda: listener.with_key("WATCHDOG", since=unblocked_at), 5.0
        )
        during = [
            n.at
            for n in listener.with_key("WATCHDOG", since=blocked_at + 0.05)
            if n.at < unblocked_at
        ]
        assert during == []
    finally:
        gw.stop()
        await asyncio.wait_for(task, 30)


@pytest.mark.integration
def test_process_ready_watchdog_sigstop_and_stopping(
    listener: NotifyListener,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """The real process: READY=1 after the devices started, WATCHDOG=1 at half of
    WATCHDOG_USEC, none while SIGSTOPped, again after SIGCONT, STOPPING=1 on SIGTERM."""
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=50)
    gw = gateway_process(
        {
            "sinks": {"local": {"enabled": True}},
            "devices": {"dev": line_device(feeder, pty, unique_name)},
        },
        env=listener.env(watchdog_s=0.4),
    )
    gw.start(wait_ready=False)
    listener.wait_for("READY", "1")
    # READY is sent after the devices' tasks were started and the startup line logged.
    started = [e for e in gw.log_events() if e.get("event") == "gateway started"]
    assert started, gw.log_tail()
    assert started[0]["devices"] == 1
    feeder.start()
    try:
        wait_until(
            lambda: any(
                n.fields["STATUS"].startswith("1/1 devices up")
                and not n.fields["STATUS"].startswith("1/1 devices up, -")
                for n in listener.with_key("STATUS")
            ),
            timeout=15,
            what="a STATUS line with the device up and a reading rate",
        )
        since = time.monotonic()
        wait_until(lambda: len(listener.with_key("WATCHDOG", since)) >= 6, timeout=10)
        times = [n.at for n in listener.with_key("WATCHDOG", since)]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # Half of WATCHDOG_USEC (0.2 s), well inside the 0.4 s systemd would allow.
        assert 0.1 < statistics.median(gaps) < 0.35, gaps

        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        time.sleep(1.0)
        cont_at = time.monotonic()
        gw.proc.send_signal(signal.SIGCONT)
        during = [n for n in listener.with_key("WATCHDOG", stopped_at + 0.05) if n.at < cont_at]
        assert during == []
        wait_until(lambda: bool(listener.with_key("WATCHDOG", cont_at)), timeout=5)
    finally:
        feeder.stop()
    assert gw.stop() == 0, gw.log_tail()
    stopping = listener.wait_for("STOPPING", "1")
    assert stopping.at > listener.wait_for("READY", "1").at
