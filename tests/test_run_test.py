"""``sensor-gateway run --test``: the real CLI on a real mosquitto and a real pty prints
each reading (row and line protocol) and each rejection, and stores nothing: no spool, no
sink, no pins, no unit catalog, no status, no lock; the production MQTT session is left
alone; it runs beside a running gateway on the same config."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import paho.mqtt.publish
import pytest
from gateway_proc import GatewayProcess, to_toml
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto, SerialPty, VictoriaMetrics, free_port, wait_until
from stored_rows import stored_rows

from gateway.cli.trial import read_pinned_types
from gateway.delivery.spool import Spool
from gateway.service.lock import StateDirBusy, StateDirLock

ROOT = Path(__file__).resolve().parents[1]


class TrialProcess:
    """``python -m gateway run --test`` as a user runs it; output kept in files."""

    def __init__(self, tmp: Path, config_path: Path, *args: str) -> None:
        self.out_path = tmp / "trial.out"
        self.err_path = tmp / "trial.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "run", "--test", "-c", str(config_path), *args],
                stdout=out,
                stderr=err,
                cwd=tmp,
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text()

    @property
    def err(self) -> str:
        return self.err_path.read_text()

    def wait_for(self, text: str, *, stream: str = "out", timeout: float = 15.0) -> None:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in getattr(self, stream):
                raise AssertionError(f"run --test ended ({self.proc.returncode}):\n{self.dump()}")
            return text in getattr(self, stream)

        try:
            wait_until(seen, timeout=timeout, what=f"{text!r} on {stream}")
        except TimeoutError as err:
            raise AssertionError(f"{err}\n{self.dump()}") from None

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"run --test did not end:\n{self.dump()}") from None

    def client_id(self, broker: str = "default") -> str:
        match = re.search(rf"broker {broker}: connected to \S+ as (\S+) ", self.err)
        assert match, self.err
        return match.group(1)

    def dump(self) -> str:
        return f"--- stdout ---\n{self.out}\n--- stderr ---\n{self.err}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def trial(tmp_path: Path) -> Iterator[Callable[..., TrialProcess]]:
    made: list[TrialProcess] = []

    def start(config_path: Path, *args: str) -> TrialProcess:
        process = TrialProcess(tmp_path, config_path, *args)
        made.append(process)
        return process

    yield start
    for process in made:
        process.kill()


def write_config(tmp: Path, config: dict[str, Any]) -> Path:
    path = tmp / "gateway.toml"
    path.write_text(to_toml(config))
    return path


def snapshot(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every file below ``directory``: (size, mtime, sha256)."""
    return {
        str(p.relative_to(directory)): (
            p.stat().st_size,
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def publish(broker: Mosquitto, messages: list[tuple[str, str]]) -> None:
    paho.mqtt.publish.multiple(
        [(topic, payload, 1, False) for topic, payload in messages],
        hostname=broker.host,
        port=broker.port,
    )


def session_present(broker: Mosquitto, client_id: str) -> bool:
    """Whether the broker keeps a session for ``client_id``; asked over MQTT 5 with clean
    start off and session expiry 0, so the check itself leaves no session behind."""
    found: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id, protocol=mqtt.MQTTv5)
    client.on_connect = lambda _c, _u, flags, _rc, _p: found.append(flags.session_present)
    client.connect(broker.host, broker.port, clean_start=False)
    client.loop_start()
    try:
        wait_until(lambda: bool(found), timeout=5, what="CONNACK")
    finally:
        client.disconnect()
        client.loop_stop()
    return found[0]


def tasmota_payload(temperature: float) -> str:
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None).isoformat()
    return json.dumps({"Time": now, "AM2301": {"Temperature": temperature, "Humidity": 56.3}})


@pytest.mark.integration
def test_prints_readings_and_rejections_and_stores_nothing(
    tmp_path: Path,
    mosquitto: Mosquitto,
    victoria: VictoriaMetrics,
    virtual_port: Callable[[], SerialPty],
    unique_name: str,
    trial: Callable[..., TrialProcess],
) -> None:
    name = unique_name
    state = tmp_path / "state"
    port = virtual_port()
    config = {
        "gateway": {"state_dir": str(state), "clock_sync_check": False, "log_format": "json"},
        "sinks": {"influxdb": {"url": victoria.url, "org": "o", "bucket": "b", "token": "t"}},
        "brokers": {"default": {"host": mosquitto.host, "port": mosquitto.port}},
        "devices": {
            "rooms": {
                "driver": "json",
                "topics": [f"{name}/{{room}}/state"],
                "measurement": name,
                "fields": {
                    "temperature": {"unit": "degC", "min": -40.0, "max": 85.0},
                    "humidity": {"unit": "%"},
                },
            },
            "bath": {
                "driver": "tasmota",
                "topics": [f"{name}/tele/{{node}}/SENSOR"],
                "timezone": "UTC",
                "measurement": f"{name}_tasmota",
            },
            "bench": {
                "driver": "line",
                "port": port.path,
                "format": "kv",
                "time_field": "ts",
                "measurement": name,
                "fields": {"t": {"name": "temperature", "unit": "degC"}},
            },
        },
    }
    # The gateway ran before: its spool holds a pinned field type, which the trial must
    # check against (and leave as it is).
    spool = Spool(state / "spool.db", ["influxdb"])

    async def pin() -> None:
        await spool.open()
        await spool.save_field_types([(name, "humidity", "bool")])
        await spool.close()

    asyncio.run(pin())
    before = snapshot(state)
    run = trial(write_config(tmp_path, config))
    run.wait_for("broker default: connected", stream="err")
    run.wait_for("device bench: reading", stream="err")
    publish(
        mosquitto,
        [
            (f"{name}/kitchen/state", '{"temperature": 21.5}'),
            (f"{name}/kitchen/state", "not json"),
            (f"{name}/hall/state", '{"temperature": 121.5, "humidity": 40}'),
            (f"{name}/tele/bathroom/SENSOR", tasmota_payload(22.1)),
            (f"{name}/tele/bathroom/SENSOR", "[1, 2]"),
        ],
    )
    stamp = time.time_ns() // 1_000_000
    port.write(f"t=19.5 ts={stamp}\ngarbage\nt=20 ts=1000\n".encode())
    for marker in (
        "temperature=21.5",
        "invalid JSON",
        "pinned as bool",
        "temperature=22.1",
        "tele/bathroom/SENSOR\n",
        "temperature=19.5",
        "garbage",
        "clock_skew",
    ):
        run.wait_for(marker)
    assert run.stop() == 0, run.dump()
    out = run.out
    # A reading: one aligned row (time, device, measurement, tags, fields with units),
    # the line protocol under it.
    assert re.search(rf"  rooms   {name}  +room=kitchen +temperature=21\.5 degC\n", out), out
    assert f"    {name},device=rooms,room=kitchen temperature=21.5 " in out
    assert re.search(r"  bath  .*sensor=AM2301.* temperature=22\.1 ", out), out
    assert f"    {name},device=bench temperature=19.5 {stamp * 1_000_000}\n" in out
    # Rejections, with reason and where.
    assert re.search(r"rooms +! malformed: input rejected: invalid JSON.*topic=" + name, out), out
    dropped = "! out_of_range: field dropped (outside its min/max) — field=temperature"
    assert f"{dropped}, topic={name}/hall/state" in out
    assert f"field 'humidity' of '{name}' is pinned as bool; float value 40.0 dropped" in out
    assert re.search(rf"bath +! \w+: input rejected: .*topic={name}/tele/bathroom/SENSOR", out)
    assert re.search(r'bench +! malformed: input rejected: kv token "garbage" .*frame=garbage', out)
    assert re.search(r"bench +! clock_skew: device time .* off the gateway clock", out), out
    # Summary per device.
    summary = out.split("summary after ", 1)[1]
    assert re.search(
        r"\nrooms +3 +1 +malformed 1, type_conflict 1 +out_of_range 1, type_conflict 1\n", summary
    ), summary
    assert re.search(r"\nbath +2 +1 +not_object 1 +-\n", summary), summary
    assert re.search(r"\nbench +3 +2 +malformed 1 +clock_skew 1\n", summary), summary
    # Nothing stored: the state directory is as it was, no sink got anything.
    assert snapshot(state) == before
    victoria.force_flush()
    assert victoria.export(victoria.measurement_selector(name)) == []
    assert not session_present(mosquitto, run.client_id())


@pytest.mark.integration
def test_the_production_session_keeps_its_messages_and_the_trial_leaves_none(
    tmp_path: Path, mosquitto: Mosquitto, unique_name: str, trial: Callable[..., TrialProcess]
) -> None:
    name = unique_name
    production = f"{name}-prod"
    topic = f"{name}/+/state"
    # The gateway's persistent session (MQTT 3.1.1, clean_session = false), away now.
    received: list[bytes] = []
    present: list[bool] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, production, protocol=mqtt.MQTTv311, clean_session=False
    )
    client.on_connect = lambda c, _u, flags, _rc, _p: present.append(flags.session_present)
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    wait_until(lambda: bool(present), timeout=5, what="CONNACK")
    subscribed: list[int] = []
    client.on_subscribe = lambda _c, _u, mid, _codes, _p: subscribed.append(mid)
    mid = client.subscribe(topic, qos=1)[1]
    wait_until(lambda: mid in subscribed, timeout=5, what="SUBACK")
    client.disconnect()
    client.loop_stop()
    config = {
        "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False},
        "brokers": {
            "default": {
                "host": mosquitto.host,
                "port": mosquitto.port,
                "client_id": production,
                "protocol": "3.1.1",
            }
        },
        "devices": {
            "rooms": {"driver": "json", "topics": [f"{name}/{{room}}/state"], "measurement": name}
        },
    }
    run = trial(write_config(tmp_path, config), "-o", "json")
    run.wait_for("broker default: connected", stream="err")
    assert run.client_id().startswith(f"{production}-test-"), run.err
    payloads = ['{"temperature": 20.5}', '{"temperature": 21}', '"just a string"']
    publish(mosquitto, [(f"{name}/kitchen/state", p) for p in payloads])
    run.wait_for('"rejection"')
    run.wait_for("temperature=21.0")
    assert run.stop(signal.SIGTERM) == 0, run.dump()
    events = [json.loads(line) for line in run.out.splitlines()]
    readings = [e for e in events if "reading" in e]
    assert [e["reading"]["fields"] for e in readings] == [
        {"temperature": 20.5},
        {"temperature": 21.0},
    ]
    assert readings[0]["device"] == "rooms"
    assert readings[0]["reading"]["tags"] == {"device": "rooms", "room": "kitchen"}
    assert readings[0]["line"].startswith(f"{name},device=rooms,room=kitchen temperature=20.5 ")
    (rejection,) = [e for e in events if "rejection" in e]
    assert rejection["device"] == "rooms"
    assert rejection["rejection"]["reason"] == "not_object"
    assert rejection["rejection"]["topic"] == f"{name}/kitchen/state"
    assert events[-1]["summary"]["rooms"]["readings"] == 2
    assert events[-1]["summary"]["rooms"]["rejected"] == {"not_object": 1}
    # The production session was neither taken over nor cleaned: what was published
    # meanwhile waits there for the gateway.
    present.clear()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, production, protocol=mqtt.MQTTv311, clean_session=False
    )
    client.on_connect = lambda c, _u, flags, _rc, _p: present.append(flags.session_present)
    client.on_message = lambda _c, _u, message: received.append(message.payload)
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        wait_until(lambda: len(received) >= len(payloads), timeout=5, what="queued messages")
    finally:
        client.disconnect()
        client.loop_stop()
    assert present == [True]
    assert received == [p.encode() for p in payloads]
    assert not session_present(mosquitto, run.client_id())
    session_present(mosquitto, production)  # ends the production session (expiry 0)


@pytest.mark.integration
def test_beside_a_running_gateway_on_the_same_config(
    mosquitto: Mosquitto,
    virtual_port: Callable[[], SerialPty],
    unique_name: str,
    gateway_process: Callable[..., GatewayProcess],
    trial: Callable[..., TrialProcess],
) -> None:
    name = unique_name
    port = virtual_port()
    gw = gateway_process(
        {
            "brokers": {"default": {"host": mosquitto.host, "port": mosquitto.port}},
            "devices": {
                "rooms": {
                    "driver": "json",
                    "topics": [f"{name}/{{room}}/state"],
                    "time_field": "ts",
                    "measurement": name,
                },
                "bench": {"driver": "line", "port": port.path, "measurement": name},
            },
        }
    ).start()
    gw.wait_for_log("serial port opened")
    assert gw.proc is not None
    run = trial(gw.config_path, "-o", "json")
    run.wait_for("broker default: connected", stream="err")
    # The daemon holds the serial port: said clearly, the other devices run on.
    run.wait_for('"unavailable"')
    (busy,) = [json.loads(x) for x in run.out.splitlines() if '"unavailable"' in x]
    assert busy["device"] == "bench"
    assert "in use by another program" in busy["unavailable"]
    assert f"the running gateway (pid {gw.proc.pid}) has it open" in busy["unavailable"]
    stamp = time.time_ns() // 1_000_000 * 1_000_000
    publish(mosquitto, [(f"{name}/hall/state", json.dumps({"t": 7.25, "ts": stamp}))])
    run.wait_for('"reading"')
    assert run.stop() == 0, run.dump()
    (reading,) = [json.loads(x) for x in run.out.splitlines() if '"reading"' in x]
    assert reading["line"] == f"{name},device=rooms,room=hall t=7.25 {stamp}"
    # The daemon kept its lock and its data: it stored the same reading.
    with pytest.raises(StateDirBusy):
        StateDirLock(gw.state_dir).acquire({})
    assert gw.proc.poll() is None
    assert gw.stop() == 0
    rows = stored_rows(gw.state_dir, "rooms")
    assert [(r["time_ns"], r["field"], r["value"], r["tags"]) for r in rows] == [
        (stamp, "t", 7.25, {"room": "hall"})
    ]


def test_an_unknown_device_is_named_with_the_configured_ones(tmp_path: Path) -> None:
    config = {
        "gateway": {"state_dir": str(tmp_path / "state")},
        "brokers": {"default": {"host": "127.0.0.1"}},
        "devices": {
            "rooms": {"driver": "json", "topics": ["a/+/state"]},
            "attic": {"driver": "json", "topics": ["b/+/state"], "enabled": False},
        },
    }
    path = write_config(tmp_path, config)
    gateway = [sys.executable, "-m", "gateway", "run", "-c", str(path)]
    result = subprocess.run(
        [*gateway, "--test", "-d", "rooms", "-d", "romos"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"sensor-gateway: no device named 'romos' in {path}; configured: rooms, attic (disabled)\n"
    )
    assert result.stdout == ""
    result = subprocess.run([*gateway, "-d", "rooms"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "-d, --duration and -o go with run --test" in result.stderr
    assert not (tmp_path / "state").exists()


def test_duration_ends_it_with_the_summary_while_the_broker_is_away(tmp_path: Path) -> None:
    config = {
        "gateway": {"state_dir": str(tmp_path / "state")},
        "brokers": {"default": {"host": "127.0.0.1", "port": free_port()}},
        "devices": {"attic": {"driver": "json", "topics": ["b/+/state"], "enabled": False}},
    }
    path = write_config(tmp_path, config)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "run",
            "-c",
            str(path),
            "--test",
            "-d",
            "attic",
            "--duration",
            "0.5s",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "broker default (127.0.0.1:" in result.stderr
    assert "retrying" in result.stderr
    assert re.search(r"\nattic +0 +0 +- +-\n", result.stdout), result.stdout
    assert not (tmp_path / "state").exists()


def test_pins_are_read_while_the_gateway_has_its_spool_open(tmp_path: Path) -> None:
    """With a WAL (the gateway runs) the spool is read read-only: pins saved in the WAL
    and not yet checkpointed are seen; no file appears, the database and WAL stay as
    they were."""
    path = tmp_path / "spool.db"
    spool = Spool(path, ["local"])

    async def check() -> None:
        await spool.open()
        try:
            await spool.save_field_types([("m", "f", "int"), ("m", "s", "string")])
            assert path.with_name("spool.db-wal").exists()
            before = snapshot(tmp_path)
            pins = await asyncio.to_thread(read_pinned_types, path)
            assert pins == {("m", "f"): "int", ("m", "s"): "string"}
            after = snapshot(tmp_path)
            # -shm is SQLite's shared index, where every reader takes a read mark.
            assert after.keys() == before.keys()
            assert after["spool.db"] == before["spool.db"]
            assert after["spool.db-wal"] == before["spool.db-wal"]
        finally:
            await spool.close()

    asyncio.run(check())
    assert read_pinned_types(tmp_path / "none.db") is None
    assert not (tmp_path / "none.db").exists()
