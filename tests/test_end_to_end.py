"""The gateway end to end, as a user runs it: ``sensor-gateway run`` as a subprocess.

Real serial devices are simulators on pseudo-terminals, real MQTT devices publish to a
real mosquitto, and readings land in a real VictoriaMetrics (InfluxDB v2 write API) and
in the local store, read back with ``sensor-gateway query``. A third-party driver
package is pip-installed and run the same way.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.publish
import pytest
from gateway_proc import GatewayProcess
from servers import HOST, Mosquitto, SerialPtyFactory, VictoriaMetrics, wait_until

from devices.json.simulator import JsonPublisher
from devices.line.simulator import COLUMNS, TIME_FIELD, LineSimulator
from gateway import query

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[1]
EXAMPLE_DRIVER = REPO / "examples" / "sensor-gateway-example-driver"
EXAMPLE_DIST = "sensor-gateway-example-driver"
GatewayFactory = Callable[..., GatewayProcess]
SeriesKey = tuple[str, frozenset[tuple[str, str]]]
MS = 1_000_000


@dataclass(frozen=True)
class Point:
    """One reading the test expects, as the config's normalization should make it."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int]
    time_ns: int | None
    """The device's time; None when the gateway stamps it on arrival."""


def _series(points: list[Point]) -> dict[SeriesKey, list[tuple[int | None, float | int]]]:
    """Point → VictoriaMetrics' shape: one series per field, ``<measurement>_<field>``."""
    out: dict[SeriesKey, list[tuple[int | None, float | int]]] = {}
    for p in points:
        labels = frozenset(p.tags.items())
        for name, value in p.fields.items():
            out.setdefault((f"{p.measurement}_{name}", labels), []).append((p.time_ns, value))
    return out


def _ns(rfc3339: str) -> int:
    """Nanoseconds for ``2024-05-01T10:00:00.123456789Z`` (as ``query`` writes times)."""
    whole, frac = rfc3339.removesuffix("Z").split(".")
    seconds = int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp())
    return seconds * 1_000_000_000 + int(frac)


def _local_series(stdout: str, tag_keys: set[str]) -> dict[SeriesKey, list[tuple[int, Any]]]:
    """``query -o json`` output (one object per reading: time, measurement, device, the
    tags, the fields) in the same shape (ns times), sorted by time."""
    out: dict[SeriesKey, list[tuple[int, Any]]] = {}
    for line in stdout.splitlines():
        row = json.loads(line)
        time_ns, measurement = _ns(row.pop("time")), row.pop("measurement")
        row.pop("units", None)  # the fields' units, when the unit catalog knows them
        tags = {k: row.pop(k) for k in [*tag_keys, "device"] if k in row}
        labels = frozenset((k, v) for k, v in tags.items() if v is not None)
        for name, value in row.items():
            if value is not None:
                out.setdefault((f"{measurement}_{name}", labels), []).append((time_ns, value))
    for rows in out.values():
        rows.sort()
    return out


def _wait_for_log(gw: GatewayProcess, event: str, device: str, timeout: float = 10.0) -> None:
    def seen() -> bool:
        return any(e.get("event") == event and e.get("device") == device for e in gw.log_events())

    try:
        wait_until(seen, timeout, what=f"{event!r} for {device}")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None


def _stored(gw: GatewayProcess, **request: Any) -> list[query.Row]:
    """What the local store holds now (read-only, while the gateway runs)."""
    path = gw.state_dir / "readings.db"
    if not path.exists():
        return []
    return query.run_query(path, query.QueryRequest(limit=None, **request))


def _wait_stored(gw: GatewayProcess, n: int, timeout: float = 10.0, **request: Any) -> None:
    try:
        wait_until(lambda: len(_stored(gw, **request)) >= n, timeout, what=f"{n} stored rows")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None


# --- serial + MQTT → VictoriaMetrics + local store ----------------------------------------


def _kv_points(lines: list[bytes], measurement: str) -> list[Point]:
    points = []
    for line in lines:
        raw = dict(tok.split("=") for tok in line.decode().split())
        points.append(
            Point(
                measurement,
                {"device": "kv_sensor", "site": "lab"},
                {
                    "seq": int(raw["seq"]),
                    "temp_c": float(raw["temperature"]),  # renamed
                    "humidity": float(raw["humidity"]),
                    "pressure": float(raw["pressure"]) / 10,  # hPa → kPa
                },
                None,
            )
        )
    return points


def _csv_points(lines: list[bytes], measurement: str) -> list[Point]:
    points = []
    for line in lines:
        raw = dict(zip([*COLUMNS, TIME_FIELD], line.decode().strip().split(","), strict=True))
        points.append(
            Point(
                measurement,
                {"device": "csv_sensor"},
                {
                    "seq": int(raw["seq"]),
                    "temp_f": round(float(raw["temperature"]) * 1.8 + 32, 2),  # °C → °F
                    "humidity": float(raw["humidity"]),
                    "pressure": float(raw["pressure"]),
                },
                int(raw[TIME_FIELD]) * MS,
            )
        )
    return points


def test_serial_and_mqtt_devices_reach_victoria_and_the_local_store(
    mosquitto: Mosquitto,
    victoria: VictoriaMetrics,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    u = unique_name
    climate, rooms, zigbee = f"{u}_climate", f"{u}_rooms", f"{u}_zigbee"
    kv_pty, csv_pty = serial_pty(), serial_pty()
    kv_sim = LineSimulator(kv_pty.master_fd, "kv", seed=1)
    csv_sim = LineSimulator(csv_pty.master_fd, "csv", seed=2, with_time=True)
    zb_pub = JsonPublisher(1, prefix=f"{u}/zb", shape="zigbee2mqtt", seed=3)
    config: dict[str, Any] = {
        "gateway": {"metrics_interval": "1h", "shutdown_grace": "10s"},
        "spool": {"commit_interval": "20ms"},
        "brokers": {"default": {"host": HOST, "port": mosquitto.port, "client_id": f"gw-{u}"}},
        "sinks": {
            "influxdb": {
                "url": victoria.url,
                "org": "test",
                "bucket": "test",
                "token": "not-checked-by-victoria",
                "flush_interval": "50ms",
            },
            "local": {"enabled": True, "flush_interval": "50ms"},
        },
        "devices": {
            "kv_sensor": {
                "driver": "line",
                **kv_sim.options(kv_pty.path),
                "measurement": climate,
                "tags": {"site": "lab"},
                "fields": {
                    "seq": {"type": "int"},
                    "temperature": {"name": "temp_c"},
                    "pressure": {"unit": "hPa", "to_unit": "kPa"},
                },
            },
            "csv_sensor": {
                "driver": "line",
                **csv_sim.options(csv_pty.path),
                "measurement": climate,
                "fields": {
                    "seq": {"type": "int"},
                    "temperature": {
                        "name": "temp_f",
                        "unit": "degC",
                        "to_unit": "degF",
                        "round": 2,
                    },
                },
            },
            "rooms": {
                "driver": "json",
                "topics": [f"{u}/rooms/{{room}}/state"],
                "time_field": "ts",
                "measurement": rooms,
                "tags": {"building": "b1"},
                "fields": {"seq": {"type": "int"}, "pressure": {"unit": "bar", "to_unit": "kPa"}},
            },
            "zigbee": {
                "driver": "json",
                **zb_pub.options(),
                "measurement": zigbee,
                "exclude_fields": ["linkquality"],
                "fields": {"seq": {"type": "int"}, "battery": {"type": "int"}},
            },
        },
    }
    gw = gateway_process(config).start()
    for device in ("kv_sensor", "csv_sensor"):
        _wait_for_log(gw, "serial port opened", device)
    gw.wait_for_log("connected to MQTT broker")

    n_serial, n_room, n_zigbee = 30, 10, 20
    begin_ms = time.time_ns() // MS
    kv_lines = list(kv_sim.lines(n_serial))
    csv_lines = list(csv_sim.lines(n_serial))
    kv_pty.write(b"".join(kv_lines))
    csv_pty.write(b"".join(csv_lines))

    # Rooms: hand-made payloads with the device's own time (epoch µs, whole ms apart).
    base_us = (time.time_ns() // MS - 5_000) * 1000
    messages: list[tuple[str, bytes]] = []
    points: list[Point] = _kv_points(kv_lines, climate) + _csv_points(csv_lines, climate)
    for i in range(n_room):
        for r, room in enumerate(("kitchen", "attic")):
            ts_us = base_us + (2 * i + r) * 1000
            body = {
                "seq": i,
                "temperature": 20.0 + i / 4 + r,
                "pressure": 1.5 + i / 100,
                "ts": ts_us,
            }
            messages.append((f"{u}/rooms/{room}/state", json.dumps(body).encode()))
            points.append(
                Point(
                    rooms,
                    {"device": "rooms", "room": room, "building": "b1"},
                    {
                        "seq": i,
                        "temperature": body["temperature"],
                        "pressure": body["pressure"] * 100,
                    },
                    ts_us * 1000,
                )
            )
    for topic, payload in zb_pub.messages(n_zigbee):
        messages.append((topic, payload))
        body = json.loads(payload)
        points.append(
            Point(
                zigbee,
                {"device": "zigbee", "sensor": "sensor-0"},
                {
                    "seq": body["seq"],
                    "temperature": body["temperature"],
                    "humidity": body["humidity"],
                    "pressure": body["pressure"],
                    "battery": body["battery"],
                },
                None,
            )
        )
    paho.mqtt.publish.multiple(
        [{"topic": t, "payload": p, "qos": 1} for t, p in messages],
        hostname=HOST,
        port=mosquitto.port,
        client_id=f"pub-{u}",
    )

    expected = _series(points)
    total_values = sum(len(v) for v in expected.values())
    victoria.wait_for_points(f'{{__name__=~"{u}_.+"}}', total_values, timeout=15)
    _wait_stored(gw, total_values)
    end_ms = time.time_ns() // MS
    assert gw.stop() == 0, gw.log_tail()

    # VictoriaMetrics holds exactly the expected points: every series, every seq once,
    # the normalized values and the device's time where it sent one.
    vm = victoria.series_points(f"{u}_.+")
    assert set(vm) == set(expected)
    arrival: dict[str, list[int]] = {}
    for key, want in expected.items():
        got = vm[key]
        assert [v for _, v in got] == pytest.approx([float(v) for _, v in want], rel=1e-12), key
        times = [t for t, _ in got]
        if want[0][0] is None:  # stamped on arrival: the same instants for every field
            device = dict(key[1])["device"]
            assert arrival.setdefault(device, times) == times, key
            assert begin_ms <= times[0]
            assert times[-1] <= end_ms
            assert times == sorted(set(times))
        else:
            assert times == [t // MS for t, _ in want if t is not None], key

    # The local store answers `query` with the same set, at full ns precision.
    result = gw.cli("query", "--source", "local", "-o", "json", "-n", "1000000")
    assert result.returncode == 0, result.stderr
    local = _local_series(result.stdout, {k for _, labels in expected for k, _ in labels})
    assert set(local) == set(expected)
    for key, rows in local.items():
        assert [t // MS for t, _ in rows] == [t for t, _ in vm[key]], key
        assert [v for _, v in rows] == pytest.approx([v for _, v in vm[key]], rel=1e-12), key
        want = expected[key]
        if want[0][0] is not None:
            assert [t for t, _ in rows] == [t for t, _ in want], key
        if key[0].endswith("_seq"):
            assert all(type(v) is int for _, v in rows), "seq is stored as an integer"

    # `status` after SIGTERM: not running, and the counts.
    per_device = {
        "kv_sensor": n_serial,
        "csv_sensor": n_serial,
        "rooms": 2 * n_room,
        "zigbee": n_zigbee,
    }
    result = gw.cli("status", "--json")
    assert result.returncode == 1, "status exits 1 when the gateway is not running"
    assert json.loads(result.stdout)["running"] is False
    doc = gw.status()  # the counters the gateway wrote when it stopped
    assert doc["running"] is False
    for name, n in per_device.items():
        d = doc["devices"][name]
        assert (d["readings"], d["rejected"], d["dropped_fields"], d["restarts"]) == (n, {}, {}, 0)
    assert doc["brokers"]["default"]["messages"] == 2 * n_room + n_zigbee
    assert doc["brokers"]["default"]["unrouted"] == 0
    for sink in ("influxdb", "local"):
        assert doc["sinks"][sink]["points_written"] == len(points)
        assert doc["sinks"][sink]["behind"] == 0
    text = gw.cli("status").stdout
    assert "is not running" in text
    for name in per_device:
        assert name not in text, "a stopped gateway's devices are not shown as if live"


# --- one device failing never affects another ----------------------------------------------


def _retry_events(gw: GatewayProcess, device: str) -> list[dict[str, Any]]:
    return [
        e
        for e in gw.log_events()
        if e.get("event") == "device unavailable; retrying" and e.get("device") == device
    ]


def test_a_failing_device_never_affects_another(
    serial_pty: SerialPtyFactory, gateway_process: GatewayFactory, tmp_path: Path
) -> None:
    healthy_pty, unplugged_pty = serial_pty(), serial_pty()
    missing = tmp_path / "no-such-tty"
    initial, ceiling = 0.05, 0.4
    config: dict[str, Any] = {
        "gateway": {
            "restart_backoff_initial": f"{initial * 1000:g}ms",
            "restart_backoff_max": f"{ceiling * 1000:g}ms",
        },
        "spool": {"commit_interval": "20ms"},
        "sinks": {"local": {"flush_interval": "50ms"}},
        "devices": {
            "ghost": {"driver": "line", "port": str(missing)},
            "healthy": {"driver": "line", "port": healthy_pty.path},
            "unplugged": {"driver": "line", "port": unplugged_pty.path},
        },
    }
    gw = gateway_process(config).start()
    _wait_for_log(gw, "serial port opened", "healthy")
    _wait_for_log(gw, "serial port opened", "unplugged")
    healthy = LineSimulator(healthy_pty.master_fd, seed=1)
    unplugged = LineSimulator(unplugged_pty.master_fd, seed=2)
    healthy.write_lines(5)
    unplugged.write_lines(5)
    _wait_stored(gw, 5, device="healthy", fields=["seq"])
    _wait_stored(gw, 5, device="unplugged", fields=["seq"])

    unplugged_pty.close()  # the USB adapter is pulled
    _wait_for_log(gw, "device unavailable; retrying", "unplugged")
    healthy.write_lines(5)
    _wait_stored(gw, 10, device="healthy", fields=["seq"])
    wait_until(lambda: len(_retry_events(gw, "ghost")) >= 5, 10, what="ghost retried 5 times")
    assert gw.stop() == 0, gw.log_tail()

    stored = {
        name: sorted(int(r.value) for r in _stored(gw, device=name, fields=["seq"]))
        for name in ("healthy", "unplugged", "ghost")
    }
    assert stored == {"healthy": list(range(10)), "unplugged": list(range(5)), "ghost": []}

    # The missing port is retried with capped exponential backoff (with jitter), and
    # every attempt says which device and why.
    ghost = _retry_events(gw, "ghost")
    for attempt, event in enumerate(ghost[:6]):
        top = min(ceiling, initial * 2**attempt)
        assert top / 2 - 0.05 <= event["retry_in_s"] <= top + 0.05, (attempt, event)
        assert "cannot open serial port" in event["reason"]
        assert str(missing) in event["reason"]
        assert event["level"] == "warning"
    # The unplug is noticed, logged with the device's name, and counted as a restart.
    unplug = _retry_events(gw, "unplugged")[0]
    assert unplugged_pty.path in unplug["reason"]
    assert _retry_events(gw, "healthy") == []

    doc = gw.status()  # the counters the gateway wrote when it stopped
    ghost_status, unplugged_status, healthy_status = (
        doc["devices"][n] for n in ("ghost", "unplugged", "healthy")
    )
    assert ghost_status["restarts"] == len(ghost)
    assert ghost_status["state"] == "waiting"
    assert "cannot open serial port" in ghost_status["last_error"]
    assert str(missing) in ghost_status["last_error"]
    assert unplugged_status["restarts"] >= 1
    assert unplugged_pty.path in unplugged_status["last_error"]
    assert unplugged_status["readings"] == 5
    assert (healthy_status["restarts"], healthy_status["readings"]) == (0, 10)


# --- a third-party driver package -------------------------------------------------------------


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def example_driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example driver package, pip-installed into a directory of its own (``--target``)
    that this module's gateway processes get on their PYTHONPATH; yields its source.

    Not into the venv: the suite runs in parallel workers, and a plugin appearing in the
    shared venv would change what every other test's ``drivers`` listing shows.
    """
    assert (EXAMPLE_DRIVER / "pyproject.toml").exists()
    # Build from a copy: pip builds in-tree and would leave build/ and *.egg-info behind.
    src = tmp_path_factory.mktemp("example-driver") / EXAMPLE_DRIVER.name
    shutil.copytree(
        EXAMPLE_DRIVER, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    site = tmp_path_factory.mktemp("example-site")
    target = ("--target", str(site))
    installed = _pip("install", "--no-deps", "--no-build-isolation", *target, str(src))
    if installed.returncode != 0:
        # The venv's own build tools are missing or too old (setuptools>=68, wheel):
        # let pip fetch them into an isolated build environment.
        first = installed.stdout + installed.stderr
        installed = _pip("install", "--no-deps", *target, str(src))
        assert installed.returncode == 0, first + installed.stdout + installed.stderr
    old_path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), old_path) if p)
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    try:
        yield src
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m.split(".")[0] == "sg_example_driver"]:
            del sys.modules[name]
        if old_path is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old_path


def test_an_installed_driver_package_is_listed(example_driver: Path) -> None:
    listing = subprocess.run(
        [sys.executable, "-m", "gateway", "drivers"], capture_output=True, text=True, check=True
    )
    assert "\nexample_counter  serial  " in listing.stdout
    assert f"[{EXAMPLE_DIST}]" in listing.stdout
    detail = subprocess.run(
        [sys.executable, "-m", "gateway", "drivers", "example_counter"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert detail.stdout.startswith(f"example_counter (serial, from {EXAMPLE_DIST})\n")
    assert "    unit_id: integer — required" in detail.stdout
    doc = json.loads(
        subprocess.run(
            [sys.executable, "-m", "gateway", "drivers", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert doc["problems"] == []
    counter = next(d for d in doc["drivers"] if d["name"] == "example_counter")
    assert counter["package"] == EXAMPLE_DIST
    options = {o["name"]: o for o in counter["options"]}
    assert {"port", "unit_id", "poll_interval", "response_timeout"} <= set(options)
    assert options["poll_interval"]["type"] == "duration"
    assert options["poll_interval"]["default"] == 5.0


def test_an_installed_driver_runs_end_to_end(
    example_driver: Path, serial_pty: SerialPtyFactory, gateway_process: GatewayFactory
) -> None:
    simulator = importlib.import_module("sg_example_driver.simulator")
    device = simulator.CounterDevice(start=100, seed=1)
    pty = serial_pty()
    stop = threading.Event()
    serving = threading.Thread(
        target=simulator.serve_blocking, args=(pty.master_fd, device, stop), daemon=True
    )
    serving.start()
    config: dict[str, Any] = {
        "spool": {"commit_interval": "20ms"},
        "sinks": {"local": {"flush_interval": "50ms"}},
        "devices": {
            "counter_7": {
                "driver": "example_counter",
                "port": pty.path,
                "unit_id": 7,
                "poll_interval": "50ms",
                "measurement": "counter",
                "fields": {"count": {"type": "int"}},
            }
        },
    }
    gw = gateway_process(config)
    try:
        check = gw.cli("check-config")
        assert check.returncode == 0, check.stderr
        assert "counter_7: example_counter" in check.stdout
        gw.start()
        _wait_stored(gw, 5, device="counter_7", fields=["count"])
        assert gw.stop() == 0, gw.log_tail()
    finally:
        stop.set()
        serving.join(5)

    result = gw.cli("query", "-o", "json", "-d", "counter_7")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]  # one per reading
    counts = [r["count"] for r in rows if r.get("count") is not None]
    temps = [r["temperature"] for r in rows if r.get("temperature") is not None]
    # Every answered poll once, in order, from the first: nothing lost or duplicated.
    assert counts == list(range(100, 100 + len(counts)))
    assert len(counts) >= 5
    assert len(counts) in (device.answered, device.answered - 1)  # one answer may be cut off
    assert len(temps) == len(counts)
    assert all(18.0 <= t <= 24.0 for t in temps)
    assert {r["measurement"] for r in rows} == {"counter"}
    assert all(r["unit"] == "7" for r in rows)
    doc = gw.status()  # the counters the gateway wrote when it stopped
    assert doc["devices"]["counter_7"]["readings"] == len(counts)
    assert doc["devices"]["counter_7"]["rejected"] == {}
