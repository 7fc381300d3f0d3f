"""The gateway in-process: supervision, timestamps, self-metrics, clock flag, type pins.

Each test runs a real Gateway (real spool, real local store, real pseudo-terminals) as an
asyncio task and stops it the way SIGTERM does.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from servers import Answer, FakeInfluxServer, SerialPty, SerialPtyFactory, free_port

from gateway import query
from gateway.app import Gateway
from gateway.config import config_from_dict


def _config(tmp_path: Path, devices: dict[str, Any], **gateway: Any) -> Any:
    return config_from_dict(
        {
            "gateway": {
                "state_dir": str(tmp_path / "state"),
                "clock_sync_check": False,
                "restart_backoff_initial": 0.05,
                "restart_backoff_max": 0.2,
                **gateway,
            },
            "spool": {"commit_interval": 0.05},
            "sinks": {"local": {"flush_interval": 0.05}},
            "devices": devices,
        }
    )


def _with_influx(tmp_path: Path, url: str, port: str, **gateway: Any) -> Any:
    """Both sinks on: InfluxDB at ``url`` (fast retries) and the local store."""
    return config_from_dict(
        {
            "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False, **gateway},
            "spool": {"commit_interval": 0.05},
            "sinks": {
                "influxdb": {
                    "url": url,
                    "bucket": "b",
                    "org": "o",
                    "token": "t",
                    "flush_interval": 0.05,
                    "retry_max_interval": 0.1,
                },
                "local": {"enabled": True, "flush_interval": 0.05},
            },
            "devices": {"s": {"driver": "line", "port": port}},
        }
    )


async def _until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Any], Any]]:
    started: list[tuple[Gateway, asyncio.Task[None]]] = []

    async def start(config: Any) -> Gateway:
        gateway = Gateway(config)
        ready = asyncio.Event()
        task = asyncio.create_task(gateway.run(ready=ready.set))
        started.append((gateway, task))
        await ready.wait()
        return gateway

    yield start
    for gateway, task in started:
        gateway.stop()
        await task


async def _stop(gateway: Gateway) -> None:
    gateway.stop()
    await _until(lambda: gateway.spool._db is None)


def _rows(tmp_path: Path, **kw: Any) -> list[query.Row]:
    return query.run_query(tmp_path / "state" / "readings.db", query.QueryRequest(limit=None, **kw))


async def _open(pty: SerialPty, gateway: Gateway, device: str) -> None:
    await _until(lambda: gateway.pipeline.devices[device].stats.state == "running")


async def test_a_burst_of_lines_gets_distinct_timestamps(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[[Any], Any]
) -> None:
    pty = serial_pty()
    gateway = await running(
        _config(tmp_path, {"s": {"driver": "line", "port": pty.path, "measurement": "m"}})
    )
    await _open(pty, gateway, "s")
    pty.write(b"".join(f"seq={i}\n".encode() for i in range(50)))  # one read, one arrival time
    await _until(lambda: gateway.loops[0].stats.points_written >= 50)
    times = [r.time_ns for r in _rows(tmp_path, fields=["seq"])]
    assert len(times) == 50
    assert len(set(times)) == 50
    assert all(b - a >= 1_000_000 for a, b in itertools.pairwise(times))


async def test_a_failing_device_is_retried_and_never_stops_another(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[[Any], Any]
) -> None:
    pty = serial_pty()
    gateway = await running(
        _config(
            tmp_path,
            {
                "good": {"driver": "line", "port": pty.path, "measurement": "m"},
                "gone": {
                    "driver": "line",
                    "port": str(tmp_path / "no-such-tty"),
                    "measurement": "m",
                },
            },
        )
    )
    await _open(pty, gateway, "good")
    gone = gateway.pipeline.devices["gone"].stats
    await _until(lambda: gone.restarts >= 3)
    assert "cannot open serial port" in gone.last_error
    for i in range(5):
        pty.write(f"seq={i}\n".encode())
    await _until(lambda: gateway.pipeline.devices["good"].stats.readings == 5)


async def test_unplug_is_noticed_and_retried(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[[Any], Any]
) -> None:
    pty = serial_pty()
    gateway = await running(_config(tmp_path, {"s": {"driver": "line", "port": pty.path}}))
    await _open(pty, gateway, "s")
    pty.close()
    stats = gateway.pipeline.devices["s"].stats
    await _until(lambda: stats.restarts >= 1)
    assert "unplugged" in stats.last_error or "failed" in stats.last_error


async def test_status_file_and_self_metrics(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[[Any], Any]
) -> None:
    pty = serial_pty()
    gateway = await running(
        _config(tmp_path, {"s": {"driver": "line", "port": pty.path}}, metrics_interval=0.1)
    )
    await _open(pty, gateway, "s")
    pty.write(b"seq=1\nnot a pair\n")
    status_path = tmp_path / "state" / "status.json"
    await _until(
        lambda: (
            status_path.exists()
            and json.loads(status_path.read_text())["devices"]["s"]["readings"] == 1
        ),
        timeout=10,
    )
    doc = json.loads(status_path.read_text())
    assert doc["running"] is True
    assert doc["devices"]["s"]["rejected"] == {"malformed": 1}
    assert set(doc["sinks"]) == {"local"}
    assert doc["spool"]["max_bytes"] > 0
    await _until(
        lambda: any(r.measurement == "sensor_gateway" for r in _rows(tmp_path)), timeout=10
    )
    rows = _rows(tmp_path, measurement="sensor_gateway")
    device_rows = {
        r.field: r.value
        for r in rows
        if r.tags.get("kind") == "device" and r.tags.get("name") == "s"
    }
    assert device_rows["readings"] >= 1
    assert device_rows["rejected"] >= 1


async def test_unsynchronized_clock_tags_readings(
    tmp_path: Path,
    serial_pty: SerialPtyFactory,
    running: Callable[[Any], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.pipeline.timesource.clock_synchronized", lambda: False)
    pty = serial_pty()
    gateway = await running(
        _config(tmp_path, {"s": {"driver": "line", "port": pty.path}}, clock_sync_check=True)
    )
    await _open(pty, gateway, "s")
    pty.write(b"seq=1\n")
    await _until(lambda: gateway.loops[0].stats.points_written >= 1)
    assert [r.tags.get("clock") for r in _rows(tmp_path)] == ["unsynced"]


async def test_field_types_are_pinned_across_restarts(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[[Any], Any]
) -> None:
    pty = serial_pty()
    devices = {"s": {"driver": "line", "port": pty.path, "measurement": "m"}}
    gateway = await running(_config(tmp_path, devices))
    await _open(pty, gateway, "s")
    pty.write(b"state=on level=3\n")  # state pinned as string, level as float
    await _until(lambda: gateway.loops[0].stats.points_written >= 1)
    await _stop(gateway)

    gateway = await running(_config(tmp_path, devices))
    await _open(pty, gateway, "s")
    pty.write(b"state=5 level=off\n")  # state coerced to "5"; level "off" cannot be a float
    stats = gateway.pipeline.devices["s"].stats
    await _until(lambda: gateway.loops[0].stats.points_written >= 1)
    assert stats.dropped_fields == {"type_conflict": 1}
    values = {(r.field, r.value) for r in _rows(tmp_path)}
    assert ("state", "5.0") in values  # numbers are floats; the pinned string takes "5.0"
    assert ("level", 3.0) in values
    assert all(not (f == "level" and v == "off") for f, v in values)


async def test_sigterm_path_commits_and_drains(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[[Any], Any]
) -> None:
    pty = serial_pty()
    gateway = await running(_config(tmp_path, {"s": {"driver": "line", "port": pty.path}}))
    await _open(pty, gateway, "s")
    pty.write(b"".join(f"seq={i}\n".encode() for i in range(200)))
    await _until(lambda: gateway.pipeline.devices["s"].stats.readings == 200)
    await _stop(gateway)  # readers stop, pending lines commit, the sink drains in the grace time
    assert len(_rows(tmp_path, fields=["seq"])) == 200


async def test_self_metrics_count_failed_batches_by_reason(
    tmp_path: Path,
    fake_influx: FakeInfluxServer,
    serial_pty: SerialPtyFactory,
    running: Callable[[Any], Any],
) -> None:
    """A FAKE InfluxDB (tests/servers.py) answers 503 twice, then accepts."""
    fake_influx.script([Answer(status=503, body="busy"), Answer(status=503, body="busy")])
    pty = serial_pty()
    config = _with_influx(
        tmp_path, fake_influx.url, pty.path, metrics_interval=0.1, shutdown_grace=1.0
    )
    gateway = await running(config)
    await _open(pty, gateway, "s")
    pty.write(b"seq=1\n")

    def influx_metrics() -> dict[str, Any]:
        rows = _rows(tmp_path, measurement="sensor_gateway")
        return {r.field: r.value for r in rows if r.tags.get("name") == "influxdb"}

    # Self-metrics are written every 0.1 s: wait for a row taken after the success.
    await _until(
        lambda: influx_metrics().get("batches_failed_http_503_unavailable") == 2
        and influx_metrics().get("points_written", 0) >= 1,
        timeout=30,
    )


async def test_one_sink_failing_never_stalls_readers_or_the_other_sink(
    tmp_path: Path, serial_pty: SerialPtyFactory, running: Callable[[Any], Any]
) -> None:
    pty = serial_pty()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config = _with_influx(tmp_path, dead, pty.path, shutdown_grace=0.5)
    gateway = await running(config)
    await _open(pty, gateway, "s")
    for i in range(20):
        pty.write(f"seq={i}\n".encode())
        await asyncio.sleep(0.01)
    await _until(lambda: len(_rows(tmp_path, fields=["seq"])) == 20)
    # The rows are in the store a moment before the spool hears the batch was written.
    await _until(lambda: gateway.spool.behind("local") == 0)
    influx, local = gateway.loops
    assert local.stats.state == "ok"
    assert influx.sink.name == "influxdb"
    assert influx.stats.state == "retrying"
    assert gateway.spool.behind("influxdb") >= 20
    assert gateway.pipeline.devices["s"].stats.readings == 20
