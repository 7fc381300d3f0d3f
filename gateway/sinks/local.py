"""The local store: an embedded, queryable SQLite (WAL) database of readings.

:class:`LocalSink` writes the spool's line-protocol batches into a :class:`LocalStore`;
``gateway.query`` reads it back through a separate read-only connection, which WAL
lets run while the daemon writes.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`)::

    series(id, measurement, tags, device)    tags: canonical JSON (sorted keys);
                                             device: the "device" tag or NULL
    field(id, series_id, name, type)         one row per series + field: its id and
                                             its type (float/integer/boolean/string)
    sample(field_id, time_ns, value)         WITHOUT ROWID, PRIMARY KEY (field_id, time_ns)
    recent(time_ns, field_id, value)         WITHOUT ROWID, PRIMARY KEY (time_ns, field_id)

    hold(id, lo_ns, hi_ns, synced_ns)        time ranges retention must not judge yet
                                             (below); no version bump: older versions
                                             simply ignore the table

``field.id`` stands for (series, field name), so a sample's key is the point's identity
(measurement + tags + field + time): a replayed line overwrites its samples
(``INSERT OR REPLACE``) instead of adding copies, as in InfluxDB. Keying samples by
this one small integer, not by series id plus field name, keeps a row to about 30
bytes on disk and makes every range query one contiguous B-tree scan per field.

Batches go to ``recent``, keyed by time first, so a batch of current readings only
touches the rightmost pages of one B-tree (a few pages per commit, not one per field).
A *fold* moves ``recent`` into ``sample`` in one transaction (every
:data:`FOLD_INTERVAL_S`, past :data:`FOLD_ROWS` rows, and at close): the scattered
writes into ``sample`` happen once per fold instead of once per batch. A key can be
in both tables only when a point was written again after its fold (a replay); the row
in ``recent`` is the newer one, wins in queries and overwrites the other at the next
fold.

Values keep their types: floats are REAL, integers INTEGER, strings TEXT and booleans
INTEGER 0/1, with ``field.type`` telling a boolean from an integer. As in InfluxDB, a
field keeps the type it was first written with; a line that would change it is
refused (``field type conflict``).

Retention deletes samples older than ``retention`` by their timestamps, with two
exceptions for timestamps from a clock that was wrong (a Raspberry Pi has no real-time
clock: until NTP sets it, it runs from its last shutdown time, or from 1970):

* While the time source says the clock is not synchronized, retention pauses: "now"
  is not known, so nothing is judged old.
* Readings stamped while the clock was not synchronized carry the tag
  ``clock=unsynced``. Writing them opens a *hold*: the time range of their stamps.
  The hold closes at the first retention pass with the clock synchronized, and from
  then on protects those readings for ``retention``, counted by the synchronized
  clock: so readings stored minutes before NTP jumped the clock forward are not
  deleted minutes after it. When the hold expires, the usual rule applies. A hold
  only covers series tagged ``clock=unsynced``.

All SQLite work runs on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.config import DEFAULT_BATCH_SIZE, DEFAULT_FLUSH_INTERVAL_S, Config
from gateway.errors import SinkUnavailable
from gateway.pipeline.clock import UNSYNCED_TAG
from gateway.pipeline.lineprotocol import LineProtocolError, parse, split_plain
from gateway.pipeline.reading import FieldValue
from gateway.pipeline.timesource import TimeSource
from gateway.sinks.base import Outcome, Sink, Verdict
from gateway.threads import single_worker
from gateway.transactions import transaction

__all__ = [
    "FOLD_INTERVAL_S",
    "FOLD_ROWS",
    "RETENTION_INTERVAL_S",
    "SCHEMA_VERSION",
    "LocalSink",
    "LocalStore",
    "LocalStoreError",
    "WriteResult",
    "field_type",
]

log = structlog.get_logger("gateway.sinks.local")

SCHEMA_VERSION = 2
"""``PRAGMA user_version`` of the store's schema; bumped by every migration.

1 → 2: the ``recent`` table (created when a version 1 store is opened)."""

RETENTION_INTERVAL_S = 600.0
"""How often old samples are deleted (besides once at start)."""

FOLD_INTERVAL_S = 600.0
"""How often ``recent`` is moved into ``sample`` (besides when it grows, and at close)."""

FOLD_ROWS = 200_000
"""Rows written to ``recent`` after which it is folded into ``sample`` without waiting."""

# Samples deleted per retention transaction: a write batch waits behind at most one
# such transaction (tens of ms), and a large backlog is still cleared in short steps.
RETENTION_BATCH_ROWS = 5000

# Series (with their fields) whose ids are kept in memory. 10,000 covers any single
# gateway's devices many times over; past it the oldest entries are forgotten.
MAX_CACHED_SERIES = 10_000

# Cap the WAL file after checkpoints, so one large retention pass does not leave a
# big -wal file on a small SD card.
JOURNAL_SIZE_LIMIT_BYTES = 8 * 1024**2

_I64_MAX = 2**63 - 1
_RECENT_KEY = itemgetter(0, 1)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    measurement TEXT NOT NULL,
    tags TEXT NOT NULL,
    device TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS series_key ON series (measurement, tags);
CREATE INDEX IF NOT EXISTS series_device ON series (device);
CREATE TABLE IF NOT EXISTS field (
    id INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS field_key ON field (series_id, name);
CREATE TABLE IF NOT EXISTS sample (
    field_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    value,
    PRIMARY KEY (field_id, time_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recent (
    time_ns INTEGER NOT NULL,
    field_id INTEGER NOT NULL,
    value,
    PRIMARY KEY (time_ns, field_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hold (
    id INTEGER PRIMARY KEY,
    lo_ns INTEGER NOT NULL,
    hi_ns INTEGER NOT NULL,
    synced_ns INTEGER
);
"""
# ``value`` has no declared type on purpose: no column affinity, so SQLite stores each
# value exactly as given (a string "12" stays TEXT, 21.0 stays REAL).

# Retention's extra condition while holds exist: not a sample of a series tagged
# clock=unsynced whose time lies in a hold's range.
_NOT_HELD = (
    " AND NOT (field_id IN (SELECT field.id FROM field JOIN series ON series.id = "
    f"field.series_id WHERE json_extract(series.tags, '$.{UNSYNCED_TAG[0]}') = "
    f"'{UNSYNCED_TAG[1]}') AND EXISTS (SELECT 1 FROM hold WHERE time_ns BETWEEN "
    "hold.lo_ns AND hold.hi_ns))"
)


class LocalStoreError(SinkUnavailable):
    """The local store cannot be opened or written.

    ``transient`` is true for a busy/locked database (retry soon); otherwise someone has
    to act (permissions, disk full, damaged file) and readings wait in the spool.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one :meth:`LocalStore.write` did."""

    written: int
    """Lines stored."""
    rejected: list[tuple[int, str]] = field(default_factory=list)
    """(index into the batch, reason) for each line refused."""


def field_type(value: FieldValue) -> str:
    """The InfluxDB type name of a field value: float, integer, boolean or string."""
    kind = type(value)
    if kind is float:
        return "float"
    if kind is bool:
        return "boolean"
    if kind is int:
        return "integer"
    return "string"


@dataclass(slots=True)
class _Series:
    id: int
    fields: dict[str, tuple[int, str]] = field(default_factory=dict)
    """field name → (field id, type)."""
    held: bool = False
    """Tagged clock=unsynced: its writes extend the open hold."""


class LocalStore:
    """The embedded store. ``open()``, then ``write()`` batches; ``expire()`` applies retention.

    Args:
        path: the database file (created with its directory when missing).
        retention: seconds to keep samples for; ``None`` keeps them forever.
        synchronous: ``"full"`` makes each committed batch survive a power cut before
            the spool lets go of it; ``"normal"`` saves an fsync per batch.
        fold_interval: seconds between folds of ``recent`` into ``sample``.
        fold_rows: rows written to ``recent`` that make a fold due before the interval.
    """

    def __init__(
        self,
        path: Path,
        *,
        retention: float | None = 30 * 86400.0,
        synchronous: Literal["normal", "full"] = "full",
        fold_interval: float = FOLD_INTERVAL_S,
        fold_rows: int = FOLD_ROWS,
        time_source: TimeSource | None = None,
    ) -> None:
        self.path = path
        self.time = time_source or TimeSource(check_sync=False)
        self.retention = retention
        self.synchronous = synchronous
        self.fold_interval = fold_interval
        self.fold_rows = fold_rows
        self._recent_rows = 0
        """Rows written to ``recent`` since the last fold (replays count again)."""
        self._folded_at = time.monotonic()
        self._executor = single_worker("local-store")
        self._db: sqlite3.Connection | None = None
        self._cache: dict[tuple[str, tuple[tuple[str, str], ...]], _Series] = {}
        self._series_keys: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {}
        """A line's series key (``measurement[,tags]``, as written) → its ``_cache`` key."""
        self._holding = False
        """Holds exist (as of the last retention pass): deletions must respect them."""
        self._paused = False
        """Retention is paused because the clock is not synchronized."""

    @property
    def is_open(self) -> bool:
        """Whether :meth:`open` succeeded (and :meth:`close` was not called since)."""
        return self._db is not None

    async def open(self) -> None:
        """Open or create the database; raises :class:`LocalStoreError`."""
        if self._db is not None:
            return
        try:
            series, size = await self._run(self._open_sync)
        except (sqlite3.Error, OSError) as err:
            raise _translate(f"cannot open local store {self.path}", err) from err
        log.info("local store opened", path=str(self.path), series=series, bytes=size)

    async def close(self) -> None:
        """Fold ``recent`` into ``sample``, close the database and stop its thread."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    async def write(self, lines: Sequence[str]) -> WriteResult:
        """Store a batch in one transaction; unparseable or conflicting lines are skipped.

        Then folds ``recent`` into ``sample`` when a fold is due; a failed fold is
        logged and tried again after the next batch (the batch is stored all the same).

        Raises:
            LocalStoreError: nothing of the batch was stored.
        """
        try:
            result: WriteResult = await asyncio.shield(self._run(self._write_sync, lines))
        except (sqlite3.Error, OSError) as err:
            raise _translate(f"cannot write to local store {self.path}", err) from err
        if self._recent_rows and (
            self._recent_rows >= self.fold_rows
            or time.monotonic() - self._folded_at >= self.fold_interval
        ):
            try:
                await self.fold()
            except LocalStoreError as err:
                log.error("local store fold failed; trying again later", error=str(err))
        return result

    async def fold(self) -> int:
        """Move ``recent`` into ``sample`` in one transaction; return the rows moved."""
        try:
            moved: int = await asyncio.shield(self._run(self._fold_sync))
        except (sqlite3.Error, OSError) as err:
            raise _translate(f"cannot fold the local store {self.path}", err) from err
        return moved

    async def expire(self, now_ns: int | None = None) -> int:
        """Delete samples older than ``retention``, then series left empty; return rows deleted.

        Deletes at most :data:`RETENTION_BATCH_ROWS` per transaction, so writes interleave.
        Pauses while the clock is not synchronized, and spares held readings (see the
        module's description).
        """
        if self.retention is None:
            return 0
        if self.time.unsynced:
            if not self._paused:
                self._paused = True
                log.warning(
                    "local store retention paused until the system clock is synchronized",
                    path=str(self.path),
                )
            return 0
        if self._paused:
            self._paused = False
            log.info("local store retention resumed: system clock synchronized")
        started = time.monotonic()
        now = self.time.now_ns() if now_ns is None else now_ns
        cutoff = now - int(self.retention * 1e9)
        try:
            held: int = await self._run(self._holds_sync, now, cutoff)
            field_ids: list[int] = await self._run(self._old_fields_sync, cutoff)
            deleted = 0
            for field_id in field_ids:
                while True:
                    count: int = await self._run(
                        self._expire_field_sync, field_id, cutoff, RETENTION_BATCH_ROWS
                    )
                    deleted += count
                    if count < RETENTION_BATCH_ROWS:
                        break
            while True:
                count = await self._run(self._expire_recent_sync, cutoff, RETENTION_BATCH_ROWS)
                deleted += count
                if count < RETENTION_BATCH_ROWS:
                    break
            dropped: tuple[int, int] = await self._run(self._drop_empty_sync)
        except (sqlite3.Error, OSError) as err:
            raise _translate(f"retention failed in local store {self.path}", err) from err
        if deleted or any(dropped):
            log.info(
                "local store retention",
                samples_deleted=deleted,
                fields_dropped=dropped[0],
                series_dropped=dropped[1],
                holds=held,
                took_s=round(time.monotonic() - started, 3),
            )
        return deleted

    # --- internals: everything below runs on the store's thread --------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise sqlite3.OperationalError("the local store is not open")
        return self._db

    def _open_sync(self) -> tuple[int, int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                msg = f"it was created by a newer sensor-gateway (schema {version})"
                raise sqlite3.DatabaseError(msg)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT_BYTES}")
            # Some builds (Debian's) zero every freed page: a fold would then rewrite
            # all the pages of ``recent`` it empties. FAST only zeroes what costs no I/O.
            db.execute("PRAGMA secure_delete=FAST")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            series = db.execute("SELECT COUNT(*) FROM series").fetchone()[0]
            recent = db.execute("SELECT COUNT(*) FROM recent").fetchone()[0]
        except BaseException:
            db.close()
            raise
        self._db = db
        self._cache.clear()
        self._recent_rows = recent
        self._folded_at = time.monotonic()
        return series, self.path.stat().st_size

    def _close_sync(self) -> None:
        try:
            if self._db is not None:
                self._fold_sync()
        except sqlite3.Error as err:
            log.error("local store fold failed at close", error=str(err))
        finally:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    def _fold_sync(self) -> int:
        db = self._conn()
        started = time.monotonic()
        with transaction(db):
            # In sample's key order, so the B-tree is walked once from left to right.
            moved = db.execute(
                "INSERT OR REPLACE INTO sample (field_id, time_ns, value) "
                "SELECT field_id, time_ns, value FROM recent ORDER BY field_id, time_ns"
            ).rowcount
            db.execute("DELETE FROM recent")
        self._recent_rows = 0
        self._folded_at = time.monotonic()
        if moved:
            log.debug("local store folded", rows=moved, took_s=round(time.monotonic() - started, 3))
        return moved

    def _write_sync(self, lines: Sequence[str]) -> WriteResult:
        db = self._conn()
        rows: list[tuple[int, int, FieldValue]] = []  # (time_ns, field_id, value)
        rejected: list[tuple[int, str]] = []
        held_times: list[int] = []
        cache = self._cache
        series_keys = self._series_keys
        db.execute("BEGIN IMMEDIATE")
        try:
            for index, line in enumerate(lines):
                # A plain line of a series seen before: only its fields and time are
                # parsed (they come out exactly as parse() gives them); else all of it.
                plain = split_plain(line)
                key = series_keys.get(plain[0]) if plain is not None else None
                series = cache.get(key) if key is not None else None
                if plain is not None and key is not None and series is not None:
                    measurement = key[0]
                    fields: Mapping[str, FieldValue] = plain[1]
                    time_ns = plain[2]
                else:
                    try:
                        reading = parse(line)
                    except LineProtocolError as err:
                        rejected.append((index, str(err)))
                        continue
                    measurement, tags, time_ns = reading.measurement, reading.tags, reading.time_ns
                    fields = reading.fields
                    key = (measurement, tuple(tags.items()))
                    series = cache.get(key)
                    if series is None:
                        series = self._series_sync(db, measurement, tags)
                        if len(cache) >= MAX_CACHED_SERIES:
                            del cache[next(iter(cache))]
                        cache[key] = series
                    if plain is not None:
                        if len(series_keys) >= MAX_CACHED_SERIES:
                            series_keys.clear()
                        series_keys[plain[0]] = key
                known = series.fields
                start = len(rows)
                for name, value in fields.items():
                    kind = field_type(value)
                    entry = known.get(name)
                    if entry is None:
                        entry = self._field_sync(db, series, name, kind)
                    if entry[1] != kind:
                        reason = (
                            f'field type conflict: input field "{name}" on measurement '
                            f'"{measurement}" is type {kind}, already exists as type {entry[1]}'
                        )
                        break
                    if type(value) is int and value > _I64_MAX:  # a "u" integer
                        reason = f'field "{name}": integer {value} is over the signed 64-bit range'
                        break
                    rows.append((time_ns, entry[0], value))
                else:
                    if series.held:
                        held_times.append(time_ns)
                    continue
                del rows[start:]
                rejected.append((index, reason))
            # Key order makes the inserts B-tree friendly; the sort is stable, so of two
            # lines with the same point in one batch the later one still wins.
            rows.sort(key=_RECENT_KEY)
            db.executemany("INSERT OR REPLACE INTO recent VALUES (?, ?, ?)", rows)
            if held_times:
                self._hold_sync(db, min(held_times), max(held_times))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            # Ids of series and fields created in the rolled-back transaction are void.
            cache.clear()
            raise
        self._recent_rows += len(rows)
        return WriteResult(len(lines) - len(rejected), rejected)

    def _series_sync(
        self, db: sqlite3.Connection, measurement: str, tags: Mapping[str, str]
    ) -> _Series:
        canonical = json.dumps(tags, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        row = db.execute(
            "SELECT id FROM series WHERE measurement = ? AND tags = ?", (measurement, canonical)
        ).fetchone()
        held = tags.get(UNSYNCED_TAG[0]) == UNSYNCED_TAG[1]
        if row is None:
            cur = db.execute(
                "INSERT INTO series (measurement, tags, device) VALUES (?, ?, ?)",
                (measurement, canonical, tags.get("device")),
            )
            assert cur.lastrowid is not None
            return _Series(cur.lastrowid, held=held)
        series = _Series(row[0], held=held)
        for field_id, name, kind in db.execute(
            "SELECT id, name, type FROM field WHERE series_id = ?", (series.id,)
        ):
            series.fields[name] = (field_id, kind)
        return series

    def _field_sync(
        self, db: sqlite3.Connection, series: _Series, name: str, kind: str
    ) -> tuple[int, str]:
        cur = db.execute(
            "INSERT INTO field (series_id, name, type) VALUES (?, ?, ?)", (series.id, name, kind)
        )
        assert cur.lastrowid is not None
        entry = series.fields[name] = (cur.lastrowid, kind)
        return entry

    def _hold_sync(self, db: sqlite3.Connection, lo: int, hi: int) -> None:
        """Widen the open hold to [lo, hi] (open one if none is), inside the write's transaction."""
        row = db.execute("SELECT id FROM hold WHERE synced_ns IS NULL LIMIT 1").fetchone()
        if row is None:
            db.execute("INSERT INTO hold (lo_ns, hi_ns) VALUES (?, ?)", (lo, hi))
        else:
            db.execute(
                "UPDATE hold SET lo_ns = MIN(lo_ns, ?), hi_ns = MAX(hi_ns, ?) WHERE id = ?",
                (lo, hi, row[0]),
            )

    def _holds_sync(self, now: int, cutoff: int) -> int:
        """Close the open hold (the clock is synchronized now), end expired ones; count the rest."""
        db = self._conn()
        with transaction(db):
            closed = db.execute(
                "UPDATE hold SET synced_ns = ? WHERE synced_ns IS NULL", (now,)
            ).rowcount
            ended = db.execute("DELETE FROM hold WHERE synced_ns < ?", (cutoff,)).rowcount
            held: int = db.execute("SELECT COUNT(*) FROM hold").fetchone()[0]
        if closed:
            log.info(
                "readings stamped before the clock was synchronized are kept for the "
                "retention time from now, whatever their timestamps",
                retention_s=self.retention,
            )
        if ended:
            log.info("hold on readings stamped before clock sync ended", holds=ended)
        self._holding = held > 0
        return held

    def _old_fields_sync(self, cutoff: int) -> list[int]:
        db = self._conn()
        return [
            row[0]
            for row in db.execute(
                "SELECT id FROM field WHERE (SELECT time_ns FROM sample WHERE field_id = field.id "
                "ORDER BY time_ns LIMIT 1) < ? ORDER BY id",
                (cutoff,),
            )
        ]

    def _expire_field_sync(self, field_id: int, cutoff: int, limit: int) -> int:
        db = self._conn()
        with transaction(db):
            # The time of the limit-th oldest expired sample bounds this transaction.
            held = _NOT_HELD if self._holding else ""
            row = db.execute(
                f"SELECT time_ns FROM sample WHERE field_id = ? AND time_ns < ?{held} "
                "ORDER BY time_ns LIMIT 1 OFFSET ?",
                (field_id, cutoff, limit - 1),
            ).fetchone()
            if row is None:
                cur = db.execute(
                    f"DELETE FROM sample WHERE field_id = ? AND time_ns < ?{held}",
                    (field_id, cutoff),
                )
            else:
                cur = db.execute(
                    f"DELETE FROM sample WHERE field_id = ? AND time_ns <= ?{held}",
                    (field_id, row[0]),
                )
        return cur.rowcount

    def _expire_recent_sync(self, cutoff: int, limit: int) -> int:
        db = self._conn()
        with transaction(db):
            held = _NOT_HELD if self._holding else ""
            row = db.execute(
                f"SELECT time_ns FROM recent WHERE time_ns < ?{held} "
                "ORDER BY time_ns LIMIT 1 OFFSET ?",
                (cutoff, limit - 1),
            ).fetchone()
            bound = "time_ns < ?" if row is None else "time_ns <= ?"
            cur = db.execute(
                f"DELETE FROM recent WHERE {bound}{held}", (cutoff if row is None else row[0],)
            )
        return cur.rowcount

    def _drop_empty_sync(self) -> tuple[int, int]:
        db = self._conn()
        with transaction(db):
            fields = db.execute(
                "DELETE FROM field WHERE NOT EXISTS "
                "(SELECT 1 FROM sample WHERE field_id = field.id) "
                "AND id NOT IN (SELECT field_id FROM recent)"
            ).rowcount
            series = db.execute(
                "DELETE FROM series WHERE NOT EXISTS "
                "(SELECT 1 FROM field WHERE series_id = series.id)"
            ).rowcount
        if fields or series:
            self._cache.clear()
        return fields, series


def _translate(context: str, err: BaseException) -> LocalStoreError:
    """A :class:`LocalStoreError` for a SQLite or OS error, saying whether to just retry."""
    text = err.strerror or str(err) if isinstance(err, OSError) else str(err)
    transient = isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text)
    return LocalStoreError(f"{context}: {text}", transient=transient)


class LocalSink(Sink):
    """Delivers spooled lines into the :class:`LocalStore` and runs its retention."""

    name = "local"

    def __init__(
        self,
        store: LocalStore,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
        retention_interval: float = RETENTION_INTERVAL_S,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retention_interval = retention_interval
        self._retention: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config, time_source: TimeSource | None = None) -> LocalSink:
        """The sink as ``[sinks.local]`` describes it (store at ``config.local_path``)."""
        section = config.sinks.local
        store = LocalStore(
            config.local_path, retention=section.retention or None, time_source=time_source
        )
        return cls(store, batch_size=section.batch_size, flush_interval=section.flush_interval)

    async def start(self) -> None:
        """Open the store (a failure is retried by :meth:`write`) and start retention."""
        try:
            await self.store.open()
        except LocalStoreError as err:
            log.error("local store unavailable; readings stay spooled", error=str(err))
        if self._retention is None:
            self._retention = asyncio.create_task(
                self._retain(), name=f"sink-{self.name}-retention"
            )

    async def write(self, lines: list[str]) -> Outcome:
        """Store the batch; never raises."""
        try:
            await self.store.open()
            result = await self.store.write(lines)
        except LocalStoreError as err:
            verdict = Verdict.RETRY if err.transient else Verdict.CONFIG
            return Outcome(verdict, reason=str(err))
        if result.rejected:
            return Outcome(Verdict.PARTIAL, reason=result.rejected[0][1], rejected=result.rejected)
        return Outcome(Verdict.OK)

    async def close(self) -> None:
        """Stop retention and close the store."""
        if self._retention is not None:
            self._retention.cancel()
            await asyncio.wait([self._retention])
            self._retention = None
        await self.store.close()

    async def _retain(self) -> None:
        while True:
            if self.store.is_open:
                try:
                    await self.store.expire()
                except LocalStoreError as err:
                    log.error("local store retention failed; trying again later", error=str(err))
            await asyncio.sleep(self.retention_interval)
