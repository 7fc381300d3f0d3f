"""Nothing around the hot path stops the gateway: each housekeeping and sink-side step
failing for real, in-process (real spool, real local store, real pseudo-terminals).

The faults are real SQLite errors from the real spool file (a trigger another connection
adds, as a damaged or full disk would answer) and a real OS error for the status file (its
path taken by a directory). The gateway must log, count, retry, and lose nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from servers import Answer, FakeInfluxServer, SerialPty, SerialPtyFactory
from structlog.testing import capture_logs

from gateway import query
from gateway.app import Gateway
from gateway.config import config_from_dict
from gateway.delivery.spool import Spool
from gateway.errors import SpoolError
from gateway.telemetry.report import LossEstimate


def _config(tmp_path: Path, port: str, **sinks: Any) -> Any:
    return config_from_dict(
        {
            "gateway": {
                "state_dir": str(tmp_path / "state"),
                "clock_sync_check": False,
                "shutdown_grace": 2.0,
            },
            "spool": {"commit_interval": 0.05},
            "sinks": sinks or {"local": {"flush_interval": 0.05}},
            "devices": {"s": {"driver": "line", "port": port, "measurement": "m"}},
        }
    )


async def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


@pytest.fixture
async def gateway_on(
    serial_pty: SerialPtyFactory,
) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[Gateway, asyncio.Task[None]]] = []

    async def start(config: Any, pty: SerialPty) -> Gateway:
        gateway = Gateway(config)
        ready = asyncio.Event()
        task = asyncio.create_task(gateway.run(ready=ready.set))
        started.append((gateway, task))
        await ready.wait()
        await _until(lambda: gateway.pipeline.devices["s"].stats.state == "running")
        return gateway

    yield start
    for gateway, task in started:
        gateway.stop()
        await task


def _sql(path: Path, statement: str) -> None:
    with closing(sqlite3.connect(path, timeout=10)) as db:
        db.execute(statement)
        db.commit()


def _seqs(tmp_path: Path) -> list[int]:
    rows = query.run_query(
        tmp_path / "state" / "readings.db", query.QueryRequest(fields=["seq"], limit=None)
    )
    return sorted(int(float(r.value)) for r in rows)  # type: ignore[arg-type]


def _write(pty: SerialPty, seqs: range) -> None:
    pty.write(b"".join(f"seq={n}\n".encode() for n in seqs))


async def test_status_file_unwritable_is_counted_and_retried(
    tmp_path: Path, serial_pty: SerialPtyFactory, gateway_on: Callable[..., Any]
) -> None:
    pty = serial_pty()
    gateway = await gateway_on(_config(tmp_path, pty.path), pty)
    gateway.status_path.unlink(missing_ok=True)
    gateway.status_path.mkdir()  # os.replace onto a directory: IsADirectoryError
    _write(pty, range(10))
    await _until(lambda: gateway.supervisor.stats["status"].failures >= 2)
    await _until(lambda: len(_seqs(tmp_path)) == 10)
    gateway.status_path.rmdir()
    await _until(lambda: gateway.status_path.is_file())
    assert gateway.status()["tasks"]["status"]["failures"] >= 2


async def test_field_type_save_failing_keeps_the_pins_for_later(
    tmp_path: Path, serial_pty: SerialPtyFactory, gateway_on: Callable[..., Any]
) -> None:
    pty = serial_pty()
    gateway = await gateway_on(_config(tmp_path, pty.path), pty)
    spool_path = tmp_path / "state" / "spool.db"
    _sql(
        spool_path,
        "CREATE TRIGGER fail_pins BEFORE INSERT ON field_type "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error (test)'); END",
    )
    _write(pty, range(3))
    await _until(lambda: gateway.supervisor.stats["field-types"].failures >= 1)
    _sql(spool_path, "DROP TRIGGER fail_pins")

    def pins() -> dict[tuple[str, str], str]:
        with closing(sqlite3.connect(spool_path, timeout=10)) as db:
            return {(m, f): t for m, f, t in db.execute("SELECT * FROM field_type")}

    # The next save (2 s later) writes the pins it was given back.
    await _until(lambda: ("m", "seq") in pins())
    assert pins()[("m", "seq")] == "float"
    assert not gateway.pipeline.field_types.new


async def test_spool_ack_failing_restarts_the_sink_and_loses_nothing(
    tmp_path: Path, serial_pty: SerialPtyFactory, gateway_on: Callable[..., Any]
) -> None:
    pty = serial_pty()
    gateway = await gateway_on(_config(tmp_path, pty.path), pty)
    spool_path = tmp_path / "state" / "spool.db"
    _write(pty, range(10))
    await _until(lambda: len(_seqs(tmp_path)) == 10)
    _sql(
        spool_path,
        "CREATE TRIGGER fail_acks BEFORE UPDATE ON cursor "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error (test)'); END",
    )
    with capture_logs() as logs:
        _write(pty, range(10, 20))
        await _until(lambda: gateway.supervisor.stats["sink-local"].failures >= 2)
        _sql(spool_path, "DROP TRIGGER fail_acks")
        _write(pty, range(20, 30))
        await _until(lambda: gateway.spool.behind("local") == 0 and len(_seqs(tmp_path)) == 30)
    assert _seqs(tmp_path) == list(range(30))  # each once: replays merge
    failed = [e for e in logs if e["event"] == "service failed; restarting"]
    assert failed
    assert failed[0]["task"] == "sink-local"
    assert "disk I/O error (test)" in failed[0]["error"]
    assert gateway.status()["tasks"]["sink-local"]["failures"] >= 2


async def test_dead_letter_insert_failing_is_retried(
    tmp_path: Path,
    serial_pty: SerialPtyFactory,
    fake_influx: FakeInfluxServer,
    gateway_on: Callable[..., Any],
) -> None:
    """A FAKE InfluxDB (tests/servers.py) refuses every line as unparseable."""
    fake_influx.default = Answer(
        status=400, body='{"code":"invalid","message":"unable to parse \'x\': bad"}'
    )
    pty = serial_pty()
    config = _config(
        tmp_path,
        pty.path,
        influxdb={
            "url": fake_influx.url,
            "bucket": "b",
            "org": "o",
            "token": "t",
            "flush_interval": 0.05,
            "retry_max_interval": 0.1,
        },
    )
    gateway = await gateway_on(config, pty)
    spool_path = tmp_path / "state" / "spool.db"
    _sql(
        spool_path,
        "CREATE TRIGGER fail_dead BEFORE INSERT ON dead_letter "
        "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END",
    )
    _write(pty, range(1))
    await _until(lambda: gateway.supervisor.stats["sink-influxdb"].failures >= 1)
    _sql(spool_path, "DROP TRIGGER fail_dead")
    await _until(lambda: gateway.spool.behind("influxdb") == 0)
    rows = await gateway.spool.dead_letters("influxdb")
    assert len(rows) == 1
    assert "seq=0" in rows[0]["line"]


async def test_unusable_spool_stops_gracefully_with_a_reason(
    tmp_path: Path,
    serial_pty: SerialPtyFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The spool's commit loop raising SpoolError (a narrow seam: a spool damaged while
    running cannot be produced on demand) stops the gateway through the graceful path."""
    pty = serial_pty()
    gateway = Gateway(_config(tmp_path, pty.path))
    broken = asyncio.Event()

    async def commits() -> None:
        await broken.wait()
        raise SpoolError("spool state/spool.db is damaged (test); restart to salvage it")

    monkeypatch.setattr(gateway.spool, "run_commits", commits)
    ready = asyncio.Event()
    task = asyncio.create_task(gateway.run(ready=ready.set))
    await ready.wait()
    await _until(lambda: gateway.pipeline.devices["s"].stats.state == "running")
    _write(pty, range(5))
    await _until(lambda: gateway.spool.pending == 5)
    broken.set()
    async with asyncio.timeout(15):
        await task
    assert gateway.fatal_reason is not None
    assert "damaged (test)" in gateway.fatal_reason
    # The last commit ran: the readings are in the spool for the next start.
    reopened = Spool(tmp_path / "state" / "spool.db", ["local"])
    await reopened.open()
    try:
        assert reopened.behind("local") == 5
    finally:
        await reopened.close()


async def test_status_document_is_a_copy(
    tmp_path: Path, serial_pty: SerialPtyFactory, gateway_on: Callable[..., Any]
) -> None:
    """Serialized off the loop later, so it must not share dicts the loop mutates."""
    pty = serial_pty()
    gateway = await gateway_on(_config(tmp_path, pty.path), pty)
    pty.write(b"not a pair\n")
    await _until(lambda: gateway.pipeline.devices["s"].stats.rejected)
    doc = gateway.status()
    stats = gateway.pipeline.devices["s"].stats
    assert doc["devices"]["s"]["rejected"] == stats.rejected
    assert doc["devices"]["s"]["rejected"] is not stats.rejected
    assert doc["spool"]["dropped"] is not gateway.spool.stats.dropped


async def test_time_to_loss_uses_the_memory_cap_while_commits_fail(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", ["local"], max_bytes=10**9)
    await spool.open()
    try:
        estimate = LossEstimate()
        spool.max_pending = 1000
        estimate.sample(spool, 0.0)
        spool.add_many(["m f=1 1"] * 100)
        spool.commit_failing = True
        estimate.sample(spool, 10.0)  # 10 readings/s waiting in memory, 900 of room
        assert estimate.seconds(spool) == pytest.approx(90.0)
    finally:
        spool._pending.clear()
        await spool.close()
