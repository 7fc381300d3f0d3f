"""``sensor-gateway status`` asks the running gateway over its Unix socket.

The whole-gateway test runs the real process with a serial device on a pseudo-terminal,
the local store and InfluxDB 1.x (first without its database, so the sink is blocked
with a long error), and runs the ``status`` command as root, as an unprivileged user in
``gateway.status_group`` and as one outside it, and after the gateway stopped. The
socket server and client are also tested on their own: clients that never read, too
many clients, a socket left by a killed gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_proc import GatewayProcess
from servers import Influx1, SerialPtyFactory, wait_until

from gateway.config import config_from_dict
from gateway.delivery.spool import Spool
from gateway.errors import ConfigError, GatewayError
from gateway.service import statusd
from gateway.service.statusd import NoAnswer, NotRunning, StatusServer, request_status
from gateway.telemetry.report import LossEstimate
from gateway.telemetry.status import render_status

REPO = Path(__file__).resolve().parents[1]
# A group every Debian system has; the unprivileged user is nobody (65534).
GROUP = "users"
NOBODY = 65534


# --- the whole gateway ------------------------------------------------------------------


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory an unprivileged user can enter (pytest's tmp_path is root's only)."""
    path = Path(tempfile.mkdtemp(prefix="sgw-status-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _unprivileged_python() -> tuple[str, dict[str, str]]:
    """An interpreter that user 65534 can run, with this checkout importable.

    The venv's python may link to a root-only place (a pyenv under /root); then the
    system's python of the same version runs with the venv's site-packages on its path.
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/tmp",
        "PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    candidates = [sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")]
    for python in filter(None, candidates):
        with contextlib.suppress(OSError):
            probe = subprocess.run(
                [python, "-c", "import gateway.cli"],
                user=NOBODY, group=NOBODY, extra_groups=[], env=env, capture_output=True,
                timeout=30, check=False,
            )  # fmt: skip
            if probe.returncode == 0:
                return python, env
    raise AssertionError(f"no {version} that user {NOBODY} can run imports gateway")


def _status_as_nobody(
    config: Path, groups: list[int], *args: str
) -> subprocess.CompletedProcess[str]:
    python, env = _unprivileged_python()
    return subprocess.run(
        [python, "-m", "gateway", "status", "-c", str(config), *args],
        user=NOBODY, group=NOBODY, extra_groups=groups, env=env, capture_output=True,
        text=True, timeout=30, cwd="/", check=False,
    )  # fmt: skip


def _doc(gw: GatewayProcess) -> dict[str, Any]:
    shown = gw.cli("status", "--format", "json")
    assert shown.returncode == 0, shown.stderr + gw.log_tail()
    doc: dict[str, Any] = json.loads(shown.stdout)
    return doc


def _wait_doc(gw: GatewayProcess, what: str, check: Any, timeout: float = 15.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def ok() -> bool:
        found.update(_doc(gw))
        return bool(check(found))

    try:
        wait_until(ok, timeout=timeout, interval=0.2, what=what)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n{json.dumps(found, indent=1)}\n{gw.log_tail()}") from None
    return found


def _block(text: str, header: str) -> list[str]:
    """The lines of one table (from its header to the next blank line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start + 1 : end]


@pytest.mark.integration
def test_status_over_the_socket_for_the_group_and_after_the_stop(
    open_dir: Path, influx1: Influx1, serial_pty: SerialPtyFactory, unique_name: str
) -> None:
    """Asserted, with the real gateway process:

    * while the only thing entering the spool is the self-metrics and the sink cannot
      write, there is no time to loss (it was "37328.5d"); once readings flow, there is;
    * the device is ``connected`` with its readings, readings/s, last reading; the device
      times it replaced are their own line, not among dropped fields;
    * the blocked sink's error is shown in full (over 120 characters) while it lasts and
      is gone once the sink writes again;
    * an unprivileged user in ``status_group`` gets the same answer; without the group, a
      message naming the group to join; clients that never read change nothing;
    * after SIGTERM: "not running", plainly, and only the last spool figures.
    """
    gid = grp.getgrnam(GROUP).gr_gid
    run_dir = open_dir / "run"
    run_dir.mkdir()
    # What systemd's RuntimeDirectoryMode=0750 with Group= makes.
    os.chown(run_dir, -1, gid)
    run_dir.chmod(0o750)
    pty = serial_pty()
    db = unique_name
    config: dict[str, Any] = {
        "gateway": {"metrics_interval": "200ms", "status_group": GROUP},
        "spool": {"commit_interval": "50ms"},
        "sinks": {
            "local": {"enabled": True, "flush_interval": 0.2},
            "influxdb": {
                "url": influx1.url,
                "api": "v1",
                "database": db,
                "flush_interval": 0.2,
                "retry_max_interval": 1.0,
                "timeout": 2.0,
            },
        },
        "devices": {
            "boiler": {"driver": "line", "port": pty.path, "format": "kv", "time_field": "t"}
        },
    }
    gw = GatewayProcess(open_dir / "gw", config, env={"RUNTIME_DIRECTORY": str(run_dir)})
    try:
        gw.start()
        sock = run_dir / "status.sock"
        # "gateway started" is logged before the services start; the socket comes next.
        wait_until(sock.exists, timeout=5, what="the status socket")
        assert (sock.stat().st_mode & 0o777, sock.stat().st_gid) == (0o660, gid)

        # Nothing flows from devices; the self-metrics pile up behind the blocked sink.
        doc = _wait_doc(
            gw,
            "the sink blocked, two status samples taken",
            lambda d: (
                d["sinks"]["influxdb"]["state"] == "blocked" and time.time() - d["started_at"] > 4.5
            ),
        )
        assert doc["spool"]["waiting"] > 0
        assert doc["spool"]["time_to_loss_s"] is None
        assert "time to loss" not in gw.cli("status").stdout

        now_ms = time.time_ns() // 1_000_000
        skewed = now_ms - 2 * 3600 * 1000  # two hours behind: replaced by the arrival time
        lines = [f"t={now_ms + i} seq={i} temperature=21.{i}\n" for i in range(3)] + [
            f"t={skewed + i} seq={i} temperature=22.{i}\n" for i in (3, 4)
        ]
        pty.write("".join(lines).encode())
        doc = _wait_doc(
            gw,
            "5 readings and a time to loss",
            lambda d: (
                d["devices"]["boiler"]["readings"] == 5 and d["spool"]["time_to_loss_s"] is not None
            ),
        )
        boiler = doc["devices"]["boiler"]
        assert boiler["condition"] == "connected"
        assert boiler["clock_skew"] == 2
        assert boiler["dropped_fields"] == {}
        assert boiler["rejected"] == {}
        assert boiler["readings_per_s"] > 0
        assert boiler["last_reading"]["fields"] == {"seq": 4, "temperature": 22.4}
        error = doc["sinks"]["influxdb"]["error"]
        assert f'database "{db}" not found' in error
        assert len(error) > 120

        text = gw.cli("status").stdout
        assert text.startswith("sensor-gateway ")
        assert " running (pid " in text.splitlines()[0]
        device_rows = _block(text, "DEVICE")
        assert re.match(
            r"boiler\s+connected\s+5\s+\d+\.\d+\s+seq=4 temperature=22\.4\s", device_rows[0]
        )
        assert device_rows[1:] == [" " * 21 + "clock skew (arrival time used): 2"]
        sink_rows = _block(text, "SINK")
        assert re.match(r"influxdb\s+blocked\s", sink_rows[0]), text
        assert sink_rows[1] == " " * 21 + f"error: {error}"  # in full, on its own line
        assert re.match(r"local\s+ok\s", sink_rows[2]), text
        assert len(sink_rows) == 3
        assert re.search(r"^spool .*: \d+ readings waiting, .*time to loss \S+$", text, re.M)

        # An unprivileged member of status_group asks the same gateway: no sudo.
        member = _status_as_nobody(gw.config_path, [gid], "--json")
        assert member.returncode == 0, member.stderr
        seen = json.loads(member.stdout)
        assert seen["pid"] == doc["pid"]
        assert seen["devices"]["boiler"]["readings"] == 5
        member = _status_as_nobody(gw.config_path, [gid])
        assert member.returncode == 0, member.stderr
        assert re.search(r"^boiler\s+connected\s+5\s", member.stdout, re.M)
        # Outside the group: told which group to join, and how.
        outsider = _status_as_nobody(gw.config_path, [])
        assert outsider.returncode == 1
        assert outsider.stdout == ""
        assert outsider.stderr == (
            f"sensor-gateway: permission denied on {sock}: it is open to group "
            f'"{GROUP}" only; join it: sudo usermod -aG {GROUP} nobody, then log in again\n'
        )

        # Clients that connect and never read (one also talks) change nothing.
        idle = []
        for _ in range(40):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(sock))
            idle.append(client)
        with contextlib.suppress(OSError):  # the gateway may have answered and closed
            idle[0].sendall(b"GET / HTTP/1.0\r\n\r\n" * 100)
        began = time.monotonic()
        assert _doc(gw)["devices"]["boiler"]["readings"] == 5
        assert time.monotonic() - began < 5
        for client in idle:
            client.close()

        influx1.create_database(db)
        # A blocked sink rechecks after 5, 10, 20 s…: on a loaded machine the third or
        # fourth recheck is the one that finds the database.
        doc = _wait_doc(
            gw,
            "the sink writing again",
            lambda d: d["sinks"]["influxdb"]["state"] == "ok",
            timeout=45,
        )
        assert doc["sinks"]["influxdb"]["error"] == ""
        assert f'database "{db}" not found' in doc["sinks"]["influxdb"]["last_error"]
        text = gw.cli("status").stdout
        sink_rows = _block(text, "SINK")
        assert [row.split()[:2] for row in sink_rows] == [["influxdb", "ok"], ["local", "ok"]]
        assert "not found" not in text

        assert gw.stop() == 0, gw.log_tail()
        assert not sock.exists()
        last = json.loads((run_dir / "status.json").read_text())
        stopped = gw.cli("status")
        assert stopped.returncode == 1
        out = stopped.stdout.splitlines()
        assert out[0] == f"sensor-gateway is not running (nothing listens on {sock})"
        assert out[1].startswith("last known spool (")
        waiting = last["spool"]["waiting"]
        if waiting:
            assert out[2].startswith(f"  {waiting} readings waiting (")
            assert out[3].startswith(f"  oldest waiting {last['spool']['oldest_age_s']:.0f}s then")
        else:
            assert out[2] == "  nothing waiting: every reading was delivered"
        assert out[-1].startswith(f"  spool {last['spool']['path']}: ")
        assert len(out) <= 5
        for word in ("boiler", "connected", "DEVICE", "SINK", "influxdb  ", " running (pid"):
            assert word not in stopped.stdout
        as_json = json.loads(gw.cli("status", "--json").stdout)
        assert set(as_json) == {"running", "why", "last_spool"}
        assert as_json["running"] is False
        assert as_json["last_spool"]["waiting"] == waiting
        assert as_json["last_spool"]["behind"] == {
            name: s["behind"] for name, s in last["sinks"].items()
        }
    finally:
        gw.close()


# --- the socket on its own ------------------------------------------------------------------


def test_a_socket_left_by_a_killed_gateway_means_not_running(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    with pytest.raises(NotRunning, match="nothing listens on"):
        request_status(path)  # no file
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()  # the file stays, nobody listens: what kill -9 leaves
    assert path.is_socket()
    with pytest.raises(NotRunning, match="nothing listens on"):
        request_status(path)


def test_a_listener_that_never_answers_is_a_timeout(tmp_path: Path) -> None:
    path = tmp_path / "status.sock"
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(path))
    mute.listen()
    try:
        began = time.monotonic()
        with pytest.raises(NoAnswer, match=r"did not answer on .* within 0\.3 s"):
            request_status(path, timeout=0.3)
        assert time.monotonic() - began < 2
    finally:
        mute.close()


async def _read_all(path: Path) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    data = await reader.read()
    writer.close()
    return data


async def test_clients_that_never_read_cannot_stall_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A document larger than the socket buffers: a client that takes none of it is cut
    off after the write timeout; more clients than MAX_CLIENTS at once are turned away;
    readers get the whole document meanwhile; a socket file left behind is replaced; an
    answer still being written when the server stops ends quietly."""
    monkeypatch.setattr(statusd, "WRITE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(statusd, "MAX_CLIENTS", 4)
    path = tmp_path / "status.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    doc = {"devices": {f"d{i}": "x" * 100 for i in range(20_000)}}  # ~2.3 MB
    server = StatusServer(path, lambda: doc)
    task = asyncio.create_task(server.run())
    try:
        await asyncio.wait_for(_until_listening(path), 5)
        idle = [await asyncio.open_unix_connection(str(path)) for _ in range(3)]
        await _until(lambda: server.active == 3)
        assert json.loads(await _read_all(path)) == doc  # the fourth slot
        more = [await asyncio.open_unix_connection(str(path)) for _ in range(2)]
        await _until(lambda: server.turned_away == 1)  # the fifth at once
        await _until(lambda: server.cut_off == 4, timeout=3)
        assert server.active == 0
        assert json.loads(await _read_all(path)) == doc
        assert server.served == 2
        idle.append(await asyncio.open_unix_connection(str(path)))
        await _until(lambda: server.active == 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert server.active == 0
    assert not path.exists()
    for _, writer in idle + more:
        writer.close()
    await asyncio.sleep(0.05)
    # Python 3.11 logs a handler task cancelled with the loop as an error in a callback.
    ours = ("StreamReaderProtocol", "client_connected_cb", "status")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert [m for m in errors if any(word in m for word in ours)] == []


async def _until_listening(path: Path) -> None:
    while True:
        try:
            _, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


async def _until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


# --- time to loss and the table ---------------------------------------------------------------


async def test_no_time_to_loss_while_no_device_reading_comes_in(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", ["local"], max_bytes=10**6)
    await spool.open()
    try:
        estimate = LossEstimate()
        estimate.sample(spool, 0.0, readings=100)
        spool.add_many(["sensor_gateway,kind=spool bytes=1i 1"] * 50)  # self-metrics only
        await spool.commit()
        estimate.sample(spool, 10.0, readings=100)
        assert estimate.seconds(spool) is None
        spool.add_many(["m f=1 2"] * 50)
        await spool.commit()
        estimate.sample(spool, 20.0, readings=150)
        ttl = estimate.seconds(spool)
        assert ttl is not None
        grown = spool.size_bytes  # from an empty spool, over 20 s
        assert ttl == pytest.approx((spool.max_bytes - grown) / (grown / 20.0))
    finally:
        await spool.close()


def test_an_error_is_shown_only_while_it_lasts() -> None:
    broken = "InfluxDB at http://db:8086: 401 unauthorized — " + "x" * 200
    doc: dict[str, Any] = {
        "version": "1",
        "pid": 1,
        "started_at": time.time(),
        "devices": {
            "ghost": {
                "condition": "reconnecting",
                "last_error": "cannot open serial port /dev/ttyUSB7: No such file",
            },
            "lab": {"condition": "connected", "last_error": "unplugged an hour ago"},
        },
        "brokers": {
            "down": {"state": "disconnected", "error": "connection refused", "messages": 3},
            "up": {"state": "connected", "error": "", "last_error": "old trouble"},
        },
        "sinks": {
            "influxdb": {"state": "blocked", "error": broken, "last_error": broken},
            "local": {"state": "ok", "error": "", "last_error": "fixed long ago"},
        },
        "spool": {"path": "/s", "waiting": 0, "bytes": 0, "max_bytes": 1000},
    }
    text = render_status(doc)
    assert _block(text, "DEVICE")[1] == (
        " " * 21 + "error: cannot open serial port /dev/ttyUSB7: No such file"
    )
    assert _block(text, "DEVICE")[2].startswith("lab ")
    assert _block(text, "BROKER")[1:3] == [
        " " * 21 + "error: connection refused",
        f"{'up':<20} {'connected':<12} {0:>9} {0:>8}",
    ]
    assert _block(text, "SINK")[1] == " " * 21 + f"error: {broken}"
    for old in ("old trouble", "fixed long ago", "unplugged an hour ago"):
        assert old not in text
    assert text.splitlines()[-1] == "spool /s: 0 readings waiting, 0 B of 1.0 kB"


def test_an_unknown_status_group_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"gateway": {"status_group": "no-such-group"}}, check_access=False)
    assert caught.value.problems == [
        (
            "gateway.status_group",
            'no group "no-such-group" on this system; create it (groupadd no-such-group) or '
            "leave status_group unset for the gateway's own group",
        )
    ]
    config = config_from_dict({"gateway": {"status_group": GROUP}}, check_access=False)
    assert config.gateway.status_group == GROUP


async def test_a_socket_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / ("d" * 120) / "status.sock"  # over the 107 bytes of sun_path
    with pytest.raises(GatewayError, match=rf"cannot create the status socket {path}: .*too long"):
        await StatusServer(path, dict).run()
