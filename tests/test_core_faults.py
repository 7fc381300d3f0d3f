"""The core around the hot path, run for real: disk full, a second instance, signals,
a broker that never answers our DISCONNECT.

Each test runs the real gateway process (``python -m gateway run``) against real
servers (VictoriaMetrics, mosquitto), pseudo-terminals and the suite's TCP proxy, and
injects the fault for real: a full tmpfs, a second process, a signal, a black hole.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_proc import GatewayProcess
from servers import (
    Mosquitto,
    SerialPtyFactory,
    TcpProxyFactory,
    VictoriaMetrics,
    wait_until,
)
from test_faults import (
    GatewayFactory,
    LineFeeder,
    influx_sink,
    line_device,
    spooled_seqs,
    start_serial_gateway,
    stored,
    wait_for_seqs,
)

pytestmark = pytest.mark.integration

DISK_BYTES = 24 * 1024**2


def _events(gw: GatewayProcess, text: str) -> list[dict[str, object]]:
    return [e for e in gw.log_events() if e.get("event") == text]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 24 MiB tmpfs, mounted for the test (needs root, as CI and scripts/test run)."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and must run as root (as scripts/test does in CI)")
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte with one file; return it."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_disk_full_keeps_running_and_loses_nothing(
    small_disk: Path,
    victoria: VictoriaMetrics,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """Spool and status on one tmpfs that fills up while readings arrive.

    Asserted: the gateway keeps running through 6 s of a full disk (no exit, the readings
    wait in memory), says "spool commit failed" a few times rather than once per commit
    window, and once space is freed every reading sent reaches the database exactly once.
    """
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=200)
    gw = gateway_process(
        {
            "gateway": {"state_dir": str(small_disk / "state"), "shutdown_grace": 5.0},
            "spool": {"commit_interval": 0.1},
            "sinks": {"influxdb": influx_sink(victoria.url)},
            "devices": {"dev": line_device(feeder, pty, unique_name)},
        }
    )
    start_serial_gateway(gw)
    feeder.start()
    try:
        wait_for_seqs(victoria, unique_name, set(range(50)))
        filler = _fill(small_disk)
        gw.wait_for_log("spool commit failed", timeout=15)
        time.sleep(6)
        assert gw.proc is not None
        assert gw.proc.poll() is None, gw.log_tail()
        failures = _events(gw, "spool commit failed; readings kept in memory and retried")
        # 6 s at 0.1 s commits would be 60 lines; the log is rate-limited.
        assert 1 <= len(failures) <= 5, [e.get("timestamp") for e in failures]
        filler.unlink()
        gw.wait_for_log("spool commits work again", timeout=15)
        time.sleep(0.5)
    finally:
        sent = feeder.stop()
    got = wait_for_seqs(victoria, unique_name, set(range(sent)), timeout=30)
    dups = {seq: rows for seq, rows in got.items() if len(rows) > 1}
    assert not dups, f"stored twice: {list(dups)[:10]}"
    assert gw.stop() == 0, gw.log_tail()


def test_second_instance_on_the_same_state_dir_exits_2(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    gw = gateway_process({"sinks": {"local": {"enabled": True}}})
    gw.start()
    second = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=gw.dir,
    )
    assert second.returncode == 2, second.stderr
    assert gw.proc is not None
    assert f"another sensor-gateway (pid {gw.proc.pid}) is using {gw.state_dir}" in second.stderr
    assert "Traceback" not in second.stderr
    assert gw.proc.poll() is None, "the first gateway must keep running"
    assert gw.stop() == 0
    # Once the first is gone, the state directory is free again (also after kill -9).
    gw.start()
    gw.kill()
    gw.start()
    assert gw.stop() == 0


def test_sighup_does_not_kill_the_gateway(gateway_process: GatewayFactory) -> None:
    gw = gateway_process({"sinks": {"local": {"enabled": True}}})
    gw.start()
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_for_log("configuration reloaded")
    time.sleep(0.5)
    assert gw.proc.poll() is None, gw.log_tail()
    assert gw.stop() == 0


def test_sighup_while_starting_reloads_once_started(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    """A SIGHUP between the handlers' installation and the gateway being up (devices,
    sinks, the status socket starting) is kept and acted on, not dropped.

    The window is made wide on purpose: a runtime directory whose path is too long for a
    Unix socket, so the status socket cannot bind and readiness waits its 2 s for it.
    """
    run_dir = tmp_path / ("r" * 60) / ("u" * 60)
    run_dir.mkdir(parents=True)
    gw = gateway_process(
        {"sinks": {"local": {"enabled": True}}}, env={"RUNTIME_DIRECTORY": str(run_dir)}
    )
    gw.start()
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_for_log("configuration reloaded")
    assert "SIGHUP while starting" in gw.log_text()
    assert gw.stop() == 0, gw.log_tail()


def test_second_sigterm_stops_at_once_with_readings_on_disk(
    victoria: VictoriaMetrics,
    tcp_proxy: TcpProxyFactory,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """A database that hangs and a 60 s grace: the second SIGTERM ends the wait.

    Asserted: exit 0 within a few seconds of the second signal; the log says the readings
    are in the spool; every reading read before the stop is in the spool or the database,
    and a restart with the database reachable delivers all of them exactly once.
    """
    proxy = tcp_proxy(victoria.host, victoria.port)
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=100)
    gw = gateway_process(
        {
            "gateway": {"shutdown_grace": 60.0},
            "sinks": {"influxdb": influx_sink(proxy.url, timeout=30.0)},
            "devices": {"dev": line_device(feeder, pty, unique_name)},
        }
    )
    start_serial_gateway(gw)
    feeder.start()
    wait_for_seqs(victoria, unique_name, set(range(20)))
    proxy.blackhole()
    time.sleep(1.0)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    gw.wait_for_log("stopping: readers first")
    time.sleep(0.5)
    sent = feeder.stop()
    began = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(15) == 0, gw.log_tail()
    assert time.monotonic() - began < 10, "the second signal must not wait for the grace time"
    assert _events(gw, "second stop signal: not waiting for the sinks; everything read is "
                   "committed to the spool and is delivered after the next start")
    in_spool = spooled_seqs(gw.state_dir / "spool.db", gw.dir / "copy")
    in_db = set(stored(victoria, unique_name))
    assert in_spool, "the stuck batch must still be in the spool"
    proxy.pass_through()
    gw.start()
    got = wait_for_seqs(victoria, unique_name, in_spool | in_db, timeout=30)
    assert not {s for s, rows in got.items() if len(rows) > 1}
    assert max(got) <= sent
    assert gw.stop() == 0


def test_stop_is_bounded_when_the_broker_stops_answering(
    mosquitto: Mosquitto,
    tcp_proxy: TcpProxyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """The MQTT connection goes into a black hole; SIGTERM still ends the process promptly."""
    proxy = tcp_proxy(mosquitto.host, mosquitto.port)
    gw = gateway_process(
        {
            "gateway": {"shutdown_grace": 1.0},
            "brokers": {"default": {"host": "127.0.0.1", "port": proxy.port, "keepalive": 60}},
            "sinks": {"local": {"enabled": True}},
            "devices": {"m": {"driver": "json", "topics": [f"{unique_name}/#"]}},
        }
    )
    gw.start()
    gw.wait_for_log("connected to MQTT broker")
    proxy.blackhole()
    began = time.monotonic()
    assert gw.stop(timeout=30) == 0, gw.log_tail()
    assert time.monotonic() - began < 12, gw.log_tail()


def test_status_goes_to_the_runtime_directory(
    gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    """With systemd's RUNTIME_DIRECTORY the status file lives there (RAM), not on the SD card."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    gw = gateway_process(
        {"sinks": {"local": {"enabled": True}}}, env={"RUNTIME_DIRECTORY": str(run_dir)}
    )
    gw.start()
    wait_until(lambda: (run_dir / "status.json").exists(), timeout=10, what="status.json")
    assert not (gw.state_dir / "status.json").exists()
    # The status command finds it through the state directory, without the variable.
    env = {k: v for k, v in os.environ.items() if k != "RUNTIME_DIRECTORY"}
    shown = subprocess.run(
        [sys.executable, "-m", "gateway", "status", "--json", "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["pid"] == gw.proc.pid if gw.proc else False
    assert gw.stop() == 0
