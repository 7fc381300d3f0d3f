"""The local store and its sink: writes, idempotent replays, types, rejects, retention."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import gateway.sinks.local as local
from gateway.delivery.loop import DeliveryLoop
from gateway.delivery.spool import Spool
from gateway.pipeline.lineprotocol import LineProtocolError, parse
from gateway.pipeline.timesource import TimeSource
from gateway.query.local import QueryRequest, Row, SeriesSummary, run_query, summary
from gateway.sinks.base import Verdict
from gateway.sinks.local import LocalSink, LocalStore

T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z
S = 1_000_000_000
H = 3600 * S


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "readings.db"


@pytest.fixture
async def sink(db_path: Path) -> AsyncIterator[LocalSink]:
    sink = LocalSink(LocalStore(db_path, retention=None))
    await sink.start()
    yield sink
    await sink.close()


def rows(path: Path, **filters: object) -> list[Row]:
    return run_query(path, QueryRequest(limit=None, **filters))  # type: ignore[arg-type]


def count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        result: int = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return result


def samples(path: Path) -> int:
    """Points stored, in ``sample`` or ``recent`` (a point in both counts once)."""
    return count(
        path,
        "(SELECT field_id, time_ns FROM sample UNION SELECT field_id, time_ns FROM recent)",
    )


def climate(device: str, time_ns: int, temperature: float = 21.5) -> str:
    return (
        f"climate,device={device},site=home "
        f"temperature={temperature!r},humidity=45.2,battery=87i {time_ns}"
    )


async def test_write_stores_every_field_of_every_line(sink: LocalSink, db_path: Path) -> None:
    outcome = await sink.write([climate("d1", T0), climate("d2", T0), climate("d1", T0 + S)])

    assert outcome.verdict is Verdict.OK
    assert count(db_path, "series") == 2
    assert samples(db_path) == 9
    got = rows(db_path, device="d1", fields=["temperature"])
    assert got == [
        Row(T0, "climate", "d1", {"device": "d1", "site": "home"}, "temperature", 21.5),
        Row(T0 + S, "climate", "d1", {"device": "d1", "site": "home"}, "temperature", 21.5),
    ]


async def test_schema_is_compact_and_keyed_by_point_identity(
    sink: LocalSink, db_path: Path
) -> None:
    await sink.write(["m,site=x,device=d7 v=1.5 5"])
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT measurement, tags, device FROM series").fetchall() == [
            ("m", '{"device":"d7","site":"x"}', "d7")
        ]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (local.SCHEMA_VERSION,)
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'sample'").fetchone()[0]
    assert "WITHOUT ROWID" in sql
    assert "PRIMARY KEY (field_id, time_ns)" in sql
    with sqlite3.connect(db_path) as db:
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = 'recent'").fetchone()[0]
    assert "WITHOUT ROWID" in sql
    assert "PRIMARY KEY (time_ns, field_id)" in sql


async def test_batches_go_to_recent_and_a_fold_moves_them_to_sample(
    sink: LocalSink, db_path: Path
) -> None:
    await sink.write([climate("d1", T0), climate("d2", T0 + S)])
    assert (count(db_path, "recent"), count(db_path, "sample")) == (6, 0)

    assert await sink.store.fold() == 6

    assert (count(db_path, "recent"), count(db_path, "sample")) == (0, 6)
    assert [r.time_ns for r in rows(db_path, fields=["battery"])] == [T0, T0 + S]
    assert await sink.store.fold() == 0


async def test_a_point_replayed_after_its_fold_overwrites_it(
    sink: LocalSink, db_path: Path
) -> None:
    await sink.write([climate("d1", T0, temperature=20.0), climate("d1", T0 + S, 20.5)])
    await sink.store.fold()

    await sink.write([climate("d1", T0, temperature=22.0)])  # in recent, and in sample

    assert (count(db_path, "recent"), count(db_path, "sample")) == (3, 6)
    want = [(T0, 22.0), (T0 + S, 20.5)]
    assert [(r.time_ns, r.value) for r in rows(db_path, fields=["temperature"])] == want
    assert [r.value for r in rows(db_path, fields=["temperature"], end_ns=T0 + 1)] == [22.0]
    newest = run_query(db_path, QueryRequest(fields=["temperature"], latest=True, end_ns=T0 + 1))
    assert [r.value for r in newest] == [22.0]
    assert summary(db_path)[-1] == SeriesSummary("climate", "d1", "temperature", 2, T0, T0 + S)

    await sink.store.fold()

    assert (count(db_path, "recent"), count(db_path, "sample")) == (0, 6)
    assert [(r.time_ns, r.value) for r in rows(db_path, fields=["temperature"])] == want


async def test_a_fold_is_due_after_fold_rows_or_fold_interval_and_at_close(
    db_path: Path,
) -> None:
    store = LocalStore(db_path, retention=None, fold_rows=6)
    await store.open()
    await store.write([climate("d1", T0)])
    assert count(db_path, "recent") == 3
    await store.write([climate("d1", T0 + S)])  # 6 rows: folded
    assert (count(db_path, "recent"), count(db_path, "sample")) == (0, 6)
    store.fold_interval = 0.0
    await store.write([climate("d1", T0 + 2 * S)])
    assert (count(db_path, "recent"), count(db_path, "sample")) == (0, 9)
    store.fold_interval = 3600.0
    await store.write([climate("d1", T0 + 3 * S)])
    assert count(db_path, "recent") == 3
    await store.close()
    assert (count(db_path, "recent"), count(db_path, "sample")) == (0, 12)


async def test_a_version_1_store_opens_and_keeps_its_samples(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.executescript(local._SCHEMA.split("CREATE TABLE IF NOT EXISTS recent")[0])
        db.executescript(
            "PRAGMA journal_mode=WAL;"
            "INSERT INTO series VALUES (1, 'm', '{\"device\":\"d1\"}', 'd1');"
            "INSERT INTO field VALUES (1, 1, 'v', 'integer');"
            "INSERT INTO sample VALUES (1, 5, 41), (1, 6, 42);"
            "PRAGMA user_version = 1;"
        )
    assert count(db_path, "sqlite_master WHERE name = 'recent'") == 0
    # Read before the daemon has reopened it: no recent table yet.
    assert [r.value for r in rows(db_path)] == [41, 42]
    assert summary(db_path) == [SeriesSummary("m", "d1", "v", 2, 5, 6)]

    store = LocalStore(db_path, retention=None)
    await store.open()
    try:
        assert (await store.write(["m,device=d1 v=43i 7", "m,device=d1 v=40i 5"])).rejected == []
        assert [(r.time_ns, r.value) for r in rows(db_path)] == [(5, 40), (6, 42), (7, 43)]
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
    assert (count(db_path, "recent"), count(db_path, "sample")) == (0, 3)


async def test_replaying_a_batch_changes_nothing(sink: LocalSink, db_path: Path) -> None:
    batch = [climate(f"d{i}", T0 + i) for i in range(50)]
    assert (await sink.write(batch)).verdict is Verdict.OK
    before = rows(db_path)

    assert (await sink.write(batch)).verdict is Verdict.OK
    assert (await sink.write(batch[10:20])).verdict is Verdict.OK

    assert rows(db_path) == before
    assert samples(db_path) == 150
    assert count(db_path, "series") == 50


async def test_a_point_written_again_overwrites_and_the_last_in_a_batch_wins(
    sink: LocalSink, db_path: Path
) -> None:
    await sink.write([climate("d1", T0, temperature=20.0)])
    await sink.write([climate("d1", T0, temperature=22.0), climate("d1", T0, temperature=23.0)])

    assert [r.value for r in rows(db_path, fields=["temperature"])] == [23.0]


async def test_field_types_are_kept(sink: LocalSink, db_path: Path) -> None:
    line = 'kinds,device=d1 f=21.0,i=87i,neg=-5i,u=7u,b=true,b2=F,s="12",e="" 1'

    assert (await sink.write([line])).verdict is Verdict.OK

    values = {r.field: r.value for r in rows(db_path)}
    assert values == {
        "f": 21.0,
        "i": 87,
        "neg": -5,
        "u": 7,
        "b": True,
        "b2": False,
        "s": "12",
        "e": "",
    }
    assert {k: type(v) for k, v in values.items()} == {
        "f": float,
        "i": int,
        "neg": int,
        "u": int,
        "b": bool,
        "b2": bool,
        "s": str,
        "e": str,
    }
    with sqlite3.connect(db_path) as db:
        stored = dict(
            db.execute(
                "SELECT f.name, typeof(s.value) FROM "
                "(SELECT field_id, value FROM sample UNION ALL SELECT field_id, value FROM recent) s "
                "JOIN field f ON f.id = s.field_id"
            ).fetchall()
        )
        types = dict(db.execute("SELECT name, type FROM field").fetchall())
    assert stored == {
        "f": "real",
        "i": "integer",
        "neg": "integer",
        "u": "integer",
        "b": "integer",
        "b2": "integer",
        "s": "text",
        "e": "text",
    }
    assert types["b"] == "boolean"
    assert types["i"] == "integer"
    assert types["f"] == "float"
    assert types["s"] == "string"


async def test_escaped_names_and_strings_are_stored_unescaped(
    sink: LocalSink, db_path: Path
) -> None:
    line = (
        r"my\ room\,x,device=d\ 1,place=a\=b\,c "
        r'temp\ C=21.5,note="say \"hi\" \\ bye" 1'
    )

    assert (await sink.write([line])).verdict is Verdict.OK

    assert rows(db_path) == [
        Row(1, "my room,x", "d 1", {"device": "d 1", "place": "a=b,c"}, "note", 'say "hi" \\ bye'),
        Row(1, "my room,x", "d 1", {"device": "d 1", "place": "a=b,c"}, "temp C", 21.5),
    ]


async def test_unparseable_lines_are_partial_with_index_and_parser_reason(
    sink: LocalSink, db_path: Path
) -> None:
    bad1 = "climate,device=d1 temperature=oops 5"
    bad3 = "no fields at all"
    batch = [climate("d1", T0), bad1, climate("d2", T0), bad3]

    outcome = await sink.write(batch)

    assert outcome.verdict is Verdict.PARTIAL
    reasons = {}
    for bad in (bad1, bad3):
        with pytest.raises(LineProtocolError) as err:
            parse(bad)
        reasons[bad] = str(err.value)
    assert list(outcome.rejected) == [(1, reasons[bad1]), (3, reasons[bad3])]
    assert "column" in outcome.rejected[0][1]
    assert {r.device for r in rows(db_path)} == {"d1", "d2"}
    assert samples(db_path) == 6


async def test_a_field_changing_type_is_refused_like_influxdb(
    sink: LocalSink, db_path: Path
) -> None:
    await sink.write(["m,device=d1 v=1.5 1"])

    outcome = await sink.write(["m,device=d1 v=2.5 2", "m,device=d1 w=1,v=3i 3"])

    assert outcome.verdict is Verdict.PARTIAL
    assert list(outcome.rejected) == [
        (
            1,
            'field type conflict: input field "v" on measurement "m" is type integer, '
            "already exists as type float",
        )
    ]
    # Nothing of the refused line is stored, not even its good field.
    assert [(r.time_ns, r.field, r.value) for r in rows(db_path)] == [(1, "v", 1.5), (2, "v", 2.5)]


async def test_unsigned_integer_beyond_int64_is_refused(sink: LocalSink) -> None:
    outcome = await sink.write([f"m u={2**63}u 1", "m u=5u 2"])

    assert outcome.verdict is Verdict.PARTIAL
    assert [i for i, _ in outcome.rejected] == [0]
    assert "64-bit" in outcome.rejected[0][1]


async def test_bad_lines_reach_the_dead_letter_table_through_the_delivery_loop(
    tmp_path: Path, sink: LocalSink, db_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.db", [sink.name])
    await spool.open()
    try:
        spool.add_many([climate("d1", T0), "garbage", climate("d1", T0 + S)])
        await spool.commit()
        loop = DeliveryLoop(sink, spool)

        await loop.drain()

        dead = await spool.dead_letters(sink.name)
        assert [(d["line"], d["reason"].split(":")[0]) for d in dead] == [("garbage", "column 8")]
        assert loop.stats.points_written == 2
        assert samples(db_path) == 6
    finally:
        await spool.close()


async def test_series_cache_is_bounded_and_stays_correct(
    monkeypatch: pytest.MonkeyPatch, sink: LocalSink, db_path: Path
) -> None:
    monkeypatch.setattr(local, "MAX_CACHED_SERIES", 3)
    for t in range(3):
        assert (await sink.write([climate(f"d{i}", T0 + t) for i in range(10)])).verdict is (
            Verdict.OK
        )

    assert len(sink.store._cache) <= 3
    assert count(db_path, "series") == 10
    assert count(db_path, "field") == 30
    assert samples(db_path) == 90


async def test_retention_deletes_old_samples_in_batches_and_drops_empty_series(
    monkeypatch: pytest.MonkeyPatch, db_path: Path
) -> None:
    monkeypatch.setattr(local, "RETENTION_BATCH_ROWS", 10)
    store = LocalStore(db_path, retention=3600)
    await store.open()
    try:
        now = T0 + 10 * H
        old = [f"m,device=gone v={i}i {now - 2 * H + i}" for i in range(25)]
        mixed = [f"m,device=kept v={i}i {now - 2 * H + i}" for i in range(5)]
        fresh = [f"m,device=kept v=99i {now - 60 * S}"]
        await store.write(old + mixed + fresh)
        await store.fold()
        deletes: list[int] = []
        original = store._expire_field_sync

        def spy(field_id: int, cutoff: int, limit: int) -> int:
            deletes.append(original(field_id, cutoff, limit))
            return deletes[-1]

        monkeypatch.setattr(store, "_expire_field_sync", spy)

        with capture_logs() as logs:
            deleted = await store.expire(now)

        assert deleted == 30
        assert max(deletes) == 10  # never more than a batch per transaction
        assert [(r.device, r.value) for r in rows(db_path)] == [("kept", 99)]
        assert count(db_path, "series") == 1
        assert count(db_path, "field") == 1
        assert logs[0]["event"] == "local store retention"
        assert logs[0]["samples_deleted"] == 30
        assert logs[0]["series_dropped"] == 1

        # A dropped series comes back cleanly (its cached id was forgotten).
        assert (await store.write([f"m,device=gone v=1i {now}"])).rejected == []
        assert [r.device for r in rows(db_path)] == ["kept", "gone"]
        assert await store.expire(now) == 0
    finally:
        await store.close()


async def test_retention_deletes_from_both_tables_and_keeps_fields_only_in_recent(
    monkeypatch: pytest.MonkeyPatch, db_path: Path
) -> None:
    monkeypatch.setattr(local, "RETENTION_BATCH_ROWS", 4)
    store = LocalStore(db_path, retention=3600)
    await store.open()
    try:
        now = T0 + 10 * H
        await store.write([f"m,device=a v={i}i {now - 2 * H + i}" for i in range(5)])
        await store.fold()
        # Written after the fold: old points (a replay) and a series only in recent.
        await store.write(
            [f"m,device=a v={i}i {now - 2 * H + 10 + i}" for i in range(9)]
            + [f"m,device=a v=1i {now - 2 * H}", f"m,device=b v=7i {now - 60 * S}"]
        )

        assert await store.expire(now) == 5 + 9 + 1

        assert [(r.device, r.value) for r in rows(db_path)] == [("b", 7)]
        assert (count(db_path, "sample"), count(db_path, "recent")) == (0, 1)
        assert count(db_path, "series") == 1
        assert count(db_path, "field") == 1
    finally:
        await store.close()
    assert (count(db_path, "sample"), count(db_path, "recent")) == (1, 0)


async def test_sink_applies_retention_when_it_starts(db_path: Path) -> None:
    now = time.time_ns()
    store = LocalStore(db_path, retention=None)
    await store.open()
    await store.write([f"m,device=d1 v=1 {now - 3 * H}", f"m,device=d1 v=2 {now}"])
    await store.close()

    sink = LocalSink(LocalStore(db_path, retention=3600))
    await sink.start()
    try:
        async with asyncio.timeout(5):
            while samples(db_path) != 1:
                await asyncio.sleep(0.01)
    finally:
        await sink.close()
    assert [r.value for r in rows(db_path)] == [2.0]


async def test_queries_run_while_the_sink_writes(sink: LocalSink, db_path: Path) -> None:
    batches, size = 20, 500
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                got = run_query(db_path, QueryRequest(limit=None, fields=["battery"]))
                latest = run_query(db_path, QueryRequest(latest=True))
            except BaseException as err:  # reported by the assertion below
                errors.append(err)
                return
            seen.append(len(got))
            assert len(latest) <= 3 * 10

    await sink.write([climate("d0", T0)])  # the store exists before the reader starts
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for b in range(batches):
            lines = [climate(f"d{i % 10}", T0 + S + b * size + i) for i in range(size)]
            assert (await sink.write(lines)).verdict is Verdict.OK
            await asyncio.sleep(0.005)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)

    assert errors == []
    assert len(seen) > 3
    assert seen == sorted(seen)  # each query saw a consistent, growing store
    assert len(rows(db_path, fields=["battery"])) == 1 + batches * size


async def test_writes_run_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch, sink: LocalSink
) -> None:
    threads: set[str] = set()
    original = parse

    def spy(line: str) -> object:
        threads.add(threading.current_thread().name)
        return original(line)

    monkeypatch.setattr(local, "parse", spy)

    await sink.write([climate("d1", T0)])

    assert len(threads) == 1
    assert threads.pop().startswith("local-store")


async def test_unopenable_store_keeps_readings_spooled(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    sink = LocalSink(LocalStore(blocker / "readings.db"))
    with capture_logs() as logs:
        await sink.start()
    try:
        outcome = await sink.write([climate("d1", T0)])
    finally:
        await sink.close()

    assert outcome.verdict is Verdict.CONFIG
    assert f"cannot open local store {blocker / 'readings.db'}" in outcome.reason
    assert logs[0]["event"] == "local store unavailable; readings stay spooled"


async def test_store_recovers_once_the_problem_is_fixed(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("")
    path = blocker / "readings.db"
    sink = LocalSink(LocalStore(path))
    await sink.start()
    try:
        assert (await sink.write([climate("d1", T0)])).verdict is Verdict.CONFIG
        blocker.unlink()
        assert (await sink.write([climate("d1", T0)])).verdict is Verdict.OK
    finally:
        await sink.close()
    assert samples(path) == 3


# --- retention and a clock that was wrong ------------------------------------------------

D = 24 * H


class _Clock:
    """The kernel's sync answer and a wall clock, as the test sets them (no real clock)."""

    def __init__(self, wall: int, synced: bool) -> None:
        self.wall = wall
        self.synced = synced

    def source(self) -> TimeSource:
        ts = TimeSource(
            wall_ns=lambda: self.wall,
            monotonic_ns=lambda: self.wall,  # moved together: no steps in these tests
            synchronized=lambda: self.synced,
        )
        ts.refresh_sync()
        return ts


async def test_retention_pauses_while_the_clock_is_unsynchronized(db_path: Path) -> None:
    clock = _Clock(T0 + 365 * D, synced=False)  # a bad real-time clock, a year ahead
    ts = clock.source()
    store = LocalStore(db_path, retention=30 * 86400, time_source=ts)
    await store.open()
    try:
        await store.write([f"m,device=d v=1 {T0}"])
        with capture_logs() as logs:
            assert await store.expire() == 0
            assert await store.expire() == 0
        assert [e["event"] for e in logs] == [
            "local store retention paused until the system clock is synchronized"
        ]
        assert samples(db_path) == 1
        clock.synced = True
        ts.refresh_sync()
        assert await store.expire() == 1
    finally:
        await store.close()


async def test_readings_stamped_before_sync_are_kept_for_retention_after_sync(
    db_path: Path,
) -> None:
    """A Pi boots 40 days stale (its last shutdown time); then NTP sets the clock."""
    stale = T0 - 40 * D
    clock = _Clock(stale, synced=False)
    ts = clock.source()
    store = LocalStore(db_path, retention=30 * 86400, time_source=ts)
    await store.open()
    await store.write([f"m,device=d,clock=unsynced v={i} {stale + i * S}" for i in range(3)])
    await store.close()  # a restart before the clock is set: the hold is on disk
    store = LocalStore(db_path, retention=30 * 86400, time_source=ts)
    await store.open()
    try:
        await store.write([f"m,device=d,clock=unsynced v=3 {stale + 3 * S}"])
        clock.wall = T0
        clock.synced = True
        ts.refresh_sync()
        # Old by timestamp, but neither tagged nor stamped by the gateway: judged as usual.
        await store.write([f"m,device=gps v=9 {T0 - 31 * D}", f"m,device=d v=4 {T0 + H}"])

        assert await store.expire() == 1
        assert sorted(r.value for r in rows(db_path, device="d")) == [0, 1, 2, 3, 4]

        clock.wall = T0 + 30 * D  # exactly the retention time after the sync: still held
        assert await store.expire() == 0
        clock.wall += 1
        assert await store.expire() == 4  # the hold ended; their timestamps are old
        assert [r.value for r in rows(db_path)] == [4]
        assert count(db_path, "hold") == 0
    finally:
        await store.close()


async def test_a_hold_covers_only_series_tagged_unsynced_and_only_its_time_range(
    db_path: Path,
) -> None:
    clock = _Clock(T0, synced=False)
    ts = clock.source()
    store = LocalStore(db_path, retention=3600, time_source=ts)
    await store.open()
    try:
        await store.write([f"m,device=d,clock=unsynced v=1 {T0 - 5 * H}"])
        await store.fold()  # held samples in both tables
        await store.write([f"m,device=d,clock=unsynced v=2 {T0 - 4 * H}"])
        clock.synced = True
        ts.refresh_sync()
        await store.write(
            [
                f"m,device=d,clock=unsynced v=0 {T0 - 6 * H}",  # a replay from the spool
                f"m,device=other v=1 {T0 - 5 * H}",  # inside the range, not tagged
            ]
        )
        assert await store.expire() == 1
        got = sorted((r.device, r.value) for r in rows(db_path))
        assert got == [("d", 0), ("d", 1), ("d", 2)]
        # The replay came before a retention pass saw the clock synchronized: it widened
        # the open hold, which ends a retention time after that pass.
        assert count(db_path, "hold") == 1
        clock.wall += 2 * H
        assert await store.expire() == 3
    finally:
        await store.close()


async def test_lines_of_a_known_series_are_stored_as_parsing_them_whole_would(
    tmp_path: Path,
) -> None:
    # The store parses only the fields and time of a plain line whose series it has seen;
    # the same lines written to a store that parses every line whole give the same rows
    # and the same rejections.
    warm = [f"m,device=d{i} a=1i,b=1.5,c=true {T0 + i}" for i in range(3)]
    batch = [
        f"m,device=d0 a=2i,b=2.5,c=false {T0 + S}",
        f"m,device=d1 a=3i,b=-0.5e3,c=T {T0 + S}",
        f'm,device=d2 a=4i,b=7,c=f,s="x y" {T0 + S}',  # a string: not plain
        f"m,device=d0 a=5u {T0 + 2 * S}",
        f"m,device=d0 a=1.5 {T0 + 3 * S}",  # a is an integer: a conflict
        f"m,device=d1 a=1.2.3 {T0 + 3 * S}",  # not a number
        f"m,device=d1 a=9i,a=8i {T0 + 4 * S}",  # a field twice
        f"m,device=d2 a=6i -{T0}",  # a negative time: the general parser's
        f"m,device=d2 a=6i {T0 + 5 * S} 7",  # text after the time
        f"m,device=d2 b=nan {T0 + 5 * S}",
        f"m,device=d0 a=7i {T0 + 6 * S}\n",  # a line break: not plain
    ]
    outcomes: list[list[str]] = []
    for name in ("cached", "whole"):
        store = LocalStore(tmp_path / f"{name}.db", retention=None)
        await store.open()
        assert (await store.write(warm)).rejected == []
        if name == "cached":
            result = await store.write(batch)
            assert len(store._series_keys) == 3  # the warm-up's series, known by their key
            reasons = dict(result.rejected)
            outcomes.append([reasons.get(i, "stored") for i in range(len(batch))])
        else:
            outcome = []
            for line in batch:
                store._series_keys.clear()  # parsed whole, as before the series cache
                result = await store.write([line])
                outcome.append(result.rejected[0][1] if result.rejected else "stored")
            outcomes.append(outcome)
        await store.close()
    assert outcomes[0] == outcomes[1]
    assert [i for i, o in enumerate(outcomes[0]) if o == "stored"] == [0, 1, 2, 3, 7, 10]
    stored = [
        [(r.device, r.field, r.time_ns, r.value) for r in rows(tmp_path / f"{name}.db")]
        for name in ("cached", "whole")
    ]
    assert stored[0] == stored[1]
    assert len(stored[0]) == 9 + 3 + 3 + 4 + 1 + 1 + 1
