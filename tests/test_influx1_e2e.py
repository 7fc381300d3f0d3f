"""InfluxDB 1.x end to end: devices -> gateway subprocess (``api = "v1"``) -> InfluxDB 1.6.

Readings come in through real inputs (a pty fed by the ``line`` simulator, MQTT QoS 1
through mosquitto), each with the device's own time, so the points read back with
InfluxQL can be compared exactly: time to the nanosecond, every tag, every field value.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gateway_proc import GatewayProcess
from paho.mqtt.enums import CallbackAPIVersion
from servers import (
    Influx1,
    Influx1Factory,
    InfluxQueryError,
    Mosquitto,
    SerialPty,
    SerialPtyFactory,
    TcpProxyFactory,
    wait_until,
)

from devices.line.simulator import LineSimulator

pytestmark = pytest.mark.integration

GatewayFactory = Callable[..., GatewayProcess]
Point = dict[str, Any]
# A static tag that needs every line-protocol escape for tag values (comma, =, space).
SITE = "hall 1,door=a b"


def sink(url: str, database: str, **overrides: Any) -> dict[str, Any]:
    return {
        "url": url,
        "api": "v1",
        "database": database,
        "flush_interval": 0.2,
        "retry_max_interval": 1.0,
        "timeout": 2.0,
        **overrides,
    }


def serial_device(sim: LineSimulator, pty: SerialPty, measurement: str) -> dict[str, Any]:
    return {
        "driver": "line",
        **sim.options(pty.path),
        "measurement": measurement,
        "tags": {"site": SITE},
        "fields": {"seq": {"type": "int"}},
    }


def write_serial(sim: LineSimulator, n: int) -> list[Point]:
    """Write ``n`` lines with the device's time; return the points they must become."""
    lines = list(sim.lines(n))
    sim.write(b"".join(lines))
    points = []
    for line in lines:
        values = dict(kv.split("=") for kv in line.decode().split())
        points.append(
            {
                "time": int(values.pop("ts")) * 1_000_000,
                "device": "ser",
                "site": SITE,
                "seq": int(values.pop("seq")),
                **{k: float(v) for k, v in values.items()},
            }
        )
    return points


def publish_mqtt(broker: Mosquitto, topic: str, n: int) -> list[Point]:
    """Publish ``n`` QoS 1 messages with a nanosecond device time; return their points."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    points = []
    try:
        base = time.time_ns()
        for seq in range(n):
            # Nanosecond digits that a ms or µs path would lose; floats with 17 digits.
            ts = base + seq * 1_000_003 + 7
            value = seq / 3 + 0.1
            info = client.publish(topic, json.dumps({"seq": seq, "level": value, "ts": ts}), qos=1)
            points.append({"time": ts, "device": "mq", "sensor": "s1", "seq": seq, "level": value})
        info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    return points


def mqtt_device(topic_prefix: str, measurement: str) -> dict[str, Any]:
    return {
        "driver": "json",
        "topics": [f"{topic_prefix}/{{sensor}}/state"],
        "time_field": "ts",
        "measurement": measurement,
        "fields": {"seq": {"type": "int"}},
    }


def points(server: Influx1, db: str, measurement: str) -> list[Point]:
    """Every point of ``measurement`` (InfluxQL ``SELECT *``), nulls left out, by time."""
    answer = server.query(f'SELECT * FROM "{measurement}"', db)
    out: list[Point] = []
    for result in answer.get("results", []):
        for series in result.get("series", []):
            for row in series.get("values", []):
                point = dict(zip(series["columns"], row, strict=True))
                out.append({k: v for k, v in point.items() if v is not None})
    return sorted(out, key=lambda p: p["time"])


def wait_points(server: Influx1, db: str, measurement: str, n: int, timeout: float = 20.0) -> None:
    got: list[Point] = []

    def enough() -> bool:
        nonlocal got
        try:
            got = points(server, db, measurement)
        except InfluxQueryError:
            return False
        return len(got) >= n

    try:
        wait_until(enough, timeout=timeout, interval=0.2, what=f"{n} points in {measurement}")
    except TimeoutError as err:
        raise AssertionError(f"{err}: got {len(got)}") from None


def assert_exact(server: Influx1, db: str, measurement: str, expected: list[Point]) -> None:
    """Exactly the expected points: same count (no duplicate), time, tags and values."""
    got = points(server, db, measurement)
    assert len(got) == len(expected), f"{len(got)} points stored, {len(expected)} sent"
    for stored, sent in zip(got, sorted(expected, key=lambda p: p["time"]), strict=True):
        assert stored == sent


def status(gw: GatewayProcess) -> dict[str, Any] | None:
    try:
        return gw.status()
    except (FileNotFoundError, ValueError):
        return None


def sink_status(gw: GatewayProcess) -> dict[str, Any]:
    st = status(gw)
    return {} if st is None else dict(st["sinks"]["influxdb"])


def start_gateway(gw: GatewayProcess, serial: bool = True, mqtt_device: bool = False) -> None:
    gw.start()
    if serial:
        # pyserial flushes the port's input when it opens it: write only after that.
        gw.wait_for_log("serial port opened")
    if mqtt_device:
        gw.wait_for_log("connected to MQTT broker")


def test_influx1_end_to_end_exact_and_replay_idempotent(
    influx1: Influx1,
    mosquitto: Mosquitto,
    serial_pty: SerialPtyFactory,
    tcp_proxy: TcpProxyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """Serial and MQTT readings -> InfluxDB 1.6, read back exactly; lost answers resent.

    Asserted: every point (serial: ms device time; MQTT: ns device time) is stored once
    with its exact time in ns, its tags (``device``, topic tag ``sensor``, a static tag
    needing escapes) and its field values (``seq`` an integer, the rest floats). The
    first writes pass through a proxy that drops InfluxDB's answers after it wrote the
    points, so those batches are sent again: the point counts stay exact.
    """
    db = unique_name
    influx1.create_database(db)
    proxy = tcp_proxy(influx1.host, influx1.port)
    pty = serial_pty()
    sim = LineSimulator(pty.master_fd, "kv", seed=3, with_time=True)
    ser_m, mq_m = f"{unique_name}_serial", f"{unique_name}_mqtt"
    gw = gateway_process(
        {
            "sinks": {"influxdb": sink(proxy.url, db)},
            "brokers": {
                "default": {"host": mosquitto.host, "port": mosquitto.port, "client_id": db}
            },
            "devices": {
                "ser": serial_device(sim, pty, ser_m),
                "mq": mqtt_device(unique_name, mq_m),
            },
        }
    )
    start_gateway(gw, mqtt_device=True)
    proxy.drop_responses()
    serial_points = write_serial(sim, 150)
    wait_until(lambda: proxy.responses_dropped >= 2, timeout=10, what="answers dropped")
    proxy.pass_through()
    mqtt_points = publish_mqtt(mosquitto, f"{unique_name}/s1/state", 120)
    serial_points += write_serial(sim, 50)

    wait_points(influx1, db, ser_m, len(serial_points))
    wait_points(influx1, db, mq_m, len(mqtt_points))
    assert gw.stop() == 0
    assert_exact(influx1, db, ser_m, serial_points)
    assert_exact(influx1, db, mq_m, mqtt_points)
    failed = gw.status()["sinks"]["influxdb"]["batches_failed"]
    assert failed.get("disconnected", 0) >= 2, failed


def test_influx1_with_auth_password_file(
    influx1_factory: Influx1Factory,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
    tmp_path: Path,
) -> None:
    """InfluxDB 1.x with auth on: user + ``password_file``; a wrong password is fixed live.

    Asserted: with a wrong password in the file the sink reports a 401 CONFIG error
    naming the settings to check (the password never in the log) and keeps the readings
    spooled; once the file holds the right password the sink reloads it and resumes by
    itself; every reading is then stored exactly.
    """
    server = influx1_factory(auth=True)
    db = unique_name
    server.create_database(db)
    password_file = tmp_path / "influx-password"
    wrong = "not-the-password"
    password_file.write_text(wrong + "\n")
    pty = serial_pty()
    sim = LineSimulator(pty.master_fd, "kv", seed=4, with_time=True)
    measurement = f"{unique_name}_serial"
    gw = gateway_process(
        {
            "sinks": {
                "influxdb": sink(
                    server.url, db, username=server.admin_user, password_file=str(password_file)
                )
            },
            "devices": {"ser": serial_device(sim, pty, measurement)},
        }
    )
    start_gateway(gw)
    expected = write_serial(sim, 100)
    gw.wait_for_log("sink cannot write")
    error = next(
        e
        for e in gw.log_events()
        if e.get("event") == "sink cannot write; readings stay spooled until fixed"
    )
    assert "401 unauthorized" in error["reason"], error
    assert "password_file" in error["reason"], error
    wait_until(
        lambda: sink_status(gw).get("state") == "blocked" and sink_status(gw)["behind"] == 100,
        timeout=10,
        what="sink blocked with the readings spooled",
    )

    assert "401 unauthorized" in sink_status(gw)["last_error"]

    password_file.write_text(server.admin_password + "\n")
    wait_points(server, db, measurement, len(expected))
    expected += write_serial(sim, 20)
    wait_points(server, db, measurement, len(expected))
    assert gw.stop() == 0
    assert_exact(server, db, measurement, expected)
    log = gw.log_text()
    assert server.admin_password not in log
    assert wrong not in log


def test_influx1_missing_database_blocks_then_resumes(
    influx1: Influx1,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """The database does not exist: a clear CONFIG error naming it, spooling, then resume.

    Asserted: the log has one error saying database "<name>" is not found with the
    ``CREATE DATABASE`` to run; status shows the sink ``blocked`` with every reading
    spooled (``behind``); after ``CREATE DATABASE`` the sink resumes by itself and every
    reading is stored exactly once.
    """
    db = unique_name
    pty = serial_pty()
    sim = LineSimulator(pty.master_fd, "kv", seed=5, with_time=True)
    measurement = f"{unique_name}_serial"
    gw = gateway_process(
        {
            "sinks": {"influxdb": sink(influx1.url, db)},
            "devices": {"ser": serial_device(sim, pty, measurement)},
        }
    )
    start_gateway(gw)
    expected = write_serial(sim, 80)
    gw.wait_for_log("sink cannot write")
    errors = [e for e in gw.log_events() if e.get("event", "").startswith("sink cannot write")]
    assert len(errors) == 1, errors
    assert f'database "{db}" not found' in errors[0]["reason"], errors[0]
    assert f"CREATE DATABASE {db}" in errors[0]["reason"], errors[0]
    assert errors[0]["level"] == "error"
    wait_until(
        lambda: sink_status(gw).get("state") == "blocked" and sink_status(gw)["behind"] == 80,
        timeout=10,
        what="sink blocked with the readings spooled",
    )

    assert f'database "{db}" not found' in sink_status(gw)["last_error"]

    influx1.create_database(db)
    wait_points(influx1, db, measurement, len(expected))
    gw.wait_for_log("sink writing again")  # logged after the write that made them visible
    expected += write_serial(sim, 20)
    wait_points(influx1, db, measurement, len(expected))
    assert gw.stop() == 0
    assert_exact(influx1, db, measurement, expected)
