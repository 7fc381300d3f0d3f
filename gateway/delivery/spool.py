"""The spool: a durable outbox in SQLite (WAL) between the readers and the sinks.

Readings arrive as line-protocol lines and wait in memory for at most one commit
window; then the whole group is committed as one compressed *chunk* row (group commit:
one disk write per window, not per reading). A reading counts as received once its
chunk is committed. Each sink keeps its own cursor (chunk id, line offset); a sink's
cursor moves only after the sink confirmed a batch, and chunks are deleted once every
sink's cursor has passed them. After a crash, each sink resumes from its cursor:
at-least-once delivery, idempotent in effect because timestamps are fixed before the
spool.

All SQLite work runs on one dedicated thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import structlog

from gateway.clockgrid import next_tick
from gateway.errors import SpoolError
from gateway.pipeline.timesource import TimeSource
from gateway.telemetry.stats import RateLimit
from gateway.threads import single_worker
from gateway.transactions import transaction

log = structlog.get_logger("gateway.spool")


# Readings held in memory while the disk cannot take them (disk full, I/O errors).
# Past this the oldest are dropped and counted, so memory stays bounded.
MAX_PENDING_LINES = 200_000
# Commit early when this many readings wait, so a burst does not make a huge chunk.
EARLY_COMMIT_LINES = 20_000
# SQLite's own bookkeeping per row, counted against the byte cap.
ROW_OVERHEAD_BYTES = 40
# Drop messages are rate-limited to one per this many seconds.
DROP_LOG_INTERVAL_S = 60.0
# Free space the spool leaves on its filesystem. Below it each commit first drops the
# oldest chunks (counted as "disk_full"), so the file reuses their pages instead of
# growing, and the WAL is checkpointed at once. Once the disk is really full SQLite cannot
# even delete (that needs WAL space too), so the margin must be kept *before* it fills:
# at least twice the WAL's size (WAL_AUTOCHECKPOINT_PAGES pages) plus a chunk.
DISK_HEADROOM_BYTES = 16 * 1024**2
# SQLite page size for new spool files (SQLite's default is 4096); see _connect.
PAGE_SIZE = 1024
# Pages in the WAL before SQLite copies them into the database (SQLite's default).
WAL_AUTOCHECKPOINT_PAGES = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunk (
    -- Ids are assigned past every cursor by the INSERT (see _commit_sync), not by
    -- AUTOINCREMENT, whose sqlite_sequence update would write a second page per commit.
    id INTEGER PRIMARY KEY,
    count INTEGER NOT NULL,
    -- On the spool clock (Spool._clock_ns_sync), which a wall-clock step cannot move.
    created_ns INTEGER NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS cursor (
    sink TEXT PRIMARY KEY,
    chunk_id INTEGER NOT NULL,
    line INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY,
    sink TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS field_type (
    measurement TEXT NOT NULL,
    field TEXT NOT NULL,
    type TEXT NOT NULL,
    PRIMARY KEY (measurement, field)
) WITHOUT ROWID;
"""


def _readable_chunk_ids(old: sqlite3.Connection) -> tuple[list[int], int, int]:
    """Chunk ids whose index entries can be read, walking around damaged pages.

    Returns (ids, chunks missing between readable ones, chunks missing at the end). Ids
    are dense from the lowest cursor on (assigned in order, deleted oldest first), so a
    gap is what a damaged page held; the end is checked against the last id handed out
    (sqlite_sequence, in spool files made before ids were assigned explicitly; 0 when
    that is unknown), and counts as 1 if that is unreadable too.
    """

    def one(sql: str) -> int | None:
        try:
            row = old.execute(sql).fetchone()
        except sqlite3.DatabaseError:
            return None
        return None if row is None or row[0] is None else int(row[0])

    ids: list[int] = []
    lost = 0
    last = (one("SELECT MIN(chunk_id) FROM cursor") or 1) - 1
    probe = last + 1
    while True:
        # One lookup per id: a scan would stop at the first damaged page.
        try:
            # Same lookup as _first_id_past_damage's probe, so a probe that passed
            # guarantees progress here.
            row = old.execute(
                "SELECT id FROM chunk WHERE id >= ? ORDER BY id LIMIT 1", (probe,)
            ).fetchone()
        except sqlite3.DatabaseError:
            skip_to = _first_id_past_damage(old, probe - 1)
            if skip_to is not None:
                probe = skip_to
                continue
            row = None
            if (seq := one("SELECT seq FROM sqlite_sequence WHERE name = 'chunk'")) is None:
                return ids, lost, 1
        else:
            seq = None
        if row is None:
            if seq is None:
                seq = one("SELECT seq FROM sqlite_sequence WHERE name = 'chunk'") or last
            return ids, lost, max(0, seq - last)
        lost += row[0] - last - 1
        ids.append(row[0])
        last = probe = row[0]
        probe += 1


def _first_id_past_damage(old: sqlite3.Connection, after: int) -> int | None:
    """The smallest id past ``after`` whose lookup does not touch the damaged page.

    A lookup of id >= x descends into the damaged leaf exactly while x is at most that
    leaf's upper key, so probing outward then bisecting finds the key just past it.
    None when every lookup fails (the last leaf is damaged).
    """

    def readable(x: int) -> bool:
        try:
            old.execute("SELECT id FROM chunk WHERE id >= ? ORDER BY id LIMIT 1", (x,)).fetchone()
        except sqlite3.DatabaseError:
            return False
        return True

    bad, step = after, 1
    while not readable(after + step):
        bad = after + step
        if step > 1 << 62:
            return None
        step *= 2
    good = after + step
    while good - bad > 1:
        mid = (bad + good) // 2
        if readable(mid):
            good = mid
        else:
            bad = mid
    return good


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the spool: everything before line ``line`` of chunk ``chunk_id``."""

    chunk_id: int
    line: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Lines read for one sink, and the position to acknowledge once they are delivered."""

    lines: list[str]
    end: Position


@dataclass(slots=True)
class SpoolStats:
    """Counters and gauges for status and self-metrics."""

    committed: int = 0
    commits: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    write_errors: int = 0
    dead_lettered: int = 0
    recovered_lost_chunks: int = 0


@dataclass(slots=True)
class _CommitResult:
    added: int = 0
    freed: int = 0
    error: str | None = None
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    positions: dict[str, Position] = field(default_factory=dict)


@dataclass(slots=True)
class _SinkState:
    position: Position
    behind: int = 0
    since: float = 0.0
    event: asyncio.Event = field(default_factory=asyncio.Event)
    cache: tuple[int, list[str]] | None = None


class Spool:
    """The durable outbox. Open it, ``add`` lines, run :meth:`run_commits`, read per sink.

    ``sinks`` are the sinks that run now; each gets a cursor (a new one starts at the
    oldest chunk still there). ``inactive_sinks`` are configured but turned off: their
    cursors stay where they are, so the chunks they have not had wait for them until they
    run again (the byte and age caps still apply; what those drop is counted against
    them). The cursor of any other sink is removed when the spool opens, its backlog
    counted as dropped (``sink_removed``) and logged.
    """

    def __init__(
        self,
        path: Path,
        sinks: Sequence[str],
        *,
        inactive_sinks: Sequence[str] = (),
        commit_interval: float = 0.2,
        max_bytes: int = 256 * 1024**2,
        max_age: float | None = None,
        synchronous: Literal["normal", "full"] = "normal",
        time_source: TimeSource | None = None,
    ) -> None:
        self.path = path
        self.time = time_source or TimeSource(check_sync=False)
        # The spool clock (see _clock_ns_sync): monotonic time plus this, once known.
        self._clock_base: int | None = None
        self.commit_interval = commit_interval
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.synchronous = synchronous
        self.stats = SpoolStats()
        self._sink_names = list(sinks)
        self._inactive = [name for name in inactive_sinks if name not in self._sink_names]
        self._sinks: dict[str, _SinkState] = {}
        self._pending: list[str] = []
        self._early = asyncio.Event()
        self._arrived = asyncio.Event()  # a line came while none was pending
        self._executor = single_worker("spool")
        self._db: sqlite3.Connection | None = None
        self._bytes = 0
        self._commit_lock = asyncio.Lock()
        self._last_drop_log = 0.0
        self._unlogged_drops: dict[str, int] = {}
        self._error_limit = RateLimit(burst=3, interval=60.0)
        self.commit_failing = False
        """The last commit failed (disk full, I/O error): readings wait in memory."""
        self.max_pending = MAX_PENDING_LINES
        self.added = 0
        """Lines passed to :meth:`add` in this run."""
        self.settled = 0
        """How many of the ``added`` lines, oldest first, are committed (or were dropped
        while the disk failed, counted as ``spool_unwritable``): a reader that noted
        ``added`` after handing over its lines may acknowledge its source once
        ``settled`` reaches that mark (see :meth:`add_commit_listener`)."""
        self._commit_listeners: list[Callable[[int], None]] = []

    # --- lifecycle ----------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating or recovering) the spool file and load the sinks' cursors."""
        try:
            positions, behind, size = await self._run(self._open_sync)
        except sqlite3.Error as err:
            raise SpoolError(f"cannot open spool {self.path}: {err}") from err
        except OSError as err:
            raise SpoolError(f"cannot open spool {self.path}: {err.strerror}") from err
        self._bytes = size
        now = time.monotonic()
        for name in self._sink_names:
            self._sinks[name] = _SinkState(positions[name], behind[name], now)
            if behind[name]:
                self._sinks[name].event.set()
        for name in self._removed(positions):
            if behind[name]:
                self._count_drop("sink_removed", behind[name], name)
            log.warning(
                "spool cursor of a sink no longer in use removed; its backlog is dropped",
                sink=name,
                dropped=behind[name],
                hint="to keep a sink's backlog while it is off, set enabled = false in its "
                "section instead of removing it",
            )
        for name in self._inactive:
            if name in positions:
                log.warning(
                    "backlog kept for a sink that is not enabled",
                    sink=name,
                    backlog=behind[name],
                    hint="readings wait for it until it is enabled again (the spool's "
                    "max_bytes and max_age still apply; what they drop is counted against "
                    "it); to let them go, remove the sink from the configuration",
                )
        log.info(
            "spool opened",
            path=str(self.path),
            backlog={name: s.behind for name, s in self._sinks.items()},
            bytes=self._bytes,
        )

    async def close(self) -> None:
        """Commit what is pending and close the file."""
        with contextlib.suppress(Exception):
            await self.commit()
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    # --- writing ------------------------------------------------------------------

    def add(self, line: str) -> None:
        """Queue one line for the next group commit. Never blocks."""
        pending = self._pending
        if not pending:
            self._arrived.set()
        pending.append(line)
        self.added += 1
        if len(pending) >= EARLY_COMMIT_LINES:
            self._early.set()

    def add_many(self, lines: Iterable[str]) -> None:
        """Queue several lines for the next group commit."""
        for line in lines:
            self.add(line)

    @property
    def pending(self) -> int:
        """Lines waiting in memory for the next commit."""
        return len(self._pending)

    def request_commit(self) -> bool:
        """Commit soon rather than at the end of the commit window (a reader that holds
        unacknowledged input asks before its source's flow control stalls). True when
        this asked for a commit not yet asked for."""
        if not self._pending or self._early.is_set():
            return False
        self._early.set()
        return True

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(settled)`` on the event loop whenever ``settled`` grows."""
        self._commit_listeners.append(listener)

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Stop calling ``listener`` (no error when it is not registered)."""
        with contextlib.suppress(ValueError):
            self._commit_listeners.remove(listener)

    def _settle(self, count: int) -> None:
        self.settled += count
        for listener in list(self._commit_listeners):
            try:
                listener(self.settled)
            except Exception:  # one broken listener must not stop the others
                log.exception("spool commit listener failed")

    async def run_commits(self) -> None:
        """Commit pending lines within ``commit_interval`` of the first of them, until
        cancelled (nothing pending: no timer wakes the host)."""
        while True:
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            # Within commit_interval, on the grid serial reads in turns use too.
            due = next_tick(asyncio.get_running_loop().time(), self.commit_interval)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(due):
                    await self._early.wait()
            self._early.clear()
            await self.commit()

    async def commit(self) -> int:
        """Commit pending lines now as one chunk; return how many were committed."""
        async with self._commit_lock:
            if not self._pending:
                return 0
            lines, self._pending = self._pending, []
            # The bookkeeping runs when the disk work is done, even if our caller is
            # cancelled meanwhile (shutdown): memory must match the file.
            # While the disk is full readings wait in memory; only once half the memory
            # cap is used does a failed commit make room by dropping the oldest chunks.
            make_room = len(lines) + len(self._pending) >= self.max_pending // 2
            fut = self._submit(self._commit_sync, lines, make_room)
            fut.add_done_callback(lambda f: self._committed(lines, f))
            try:
                result: _CommitResult = await asyncio.shield(fut)
            except (sqlite3.Error, OSError):
                return 0  # reported and requeued by _committed
            return 0 if result.error is not None else len(lines)

    def _committed(self, lines: list[str], fut: asyncio.Future[_CommitResult]) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        result = fut.result() if exc is None else _CommitResult(error=str(exc))
        self._apply_drops(result)
        if result.error is not None:
            self.stats.write_errors += 1
            self._requeue(lines)
            self.commit_failing = True
            # Once per commit window while the disk is full would flood the journal.
            if self._error_limit.allow("commit"):
                suppressed = self._error_limit.take_suppressed("commit")
                log.error(
                    "spool commit failed; readings kept in memory and retried",
                    error=result.error,
                    pending=len(self._pending),
                    max_pending=MAX_PENDING_LINES,
                    path=str(self.path),
                    **({"suppressed_since_last": suppressed} if suppressed else {}),
                )
            return
        if self.commit_failing:
            self.commit_failing = False
            log.info(
                "spool commits work again", path=str(self.path), failed=self.stats.write_errors
            )
        self._bytes += result.added
        self.stats.committed += len(lines)
        self.stats.commits += 1
        self._settle(len(lines))
        now = time.monotonic()
        for state in self._sinks.values():
            if state.behind == 0:
                state.since = now
            state.behind += len(lines)
            state.event.set()

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.wrap_future(self._executor.submit(fn, *args))

    def _requeue(self, lines: list[str]) -> None:
        self._pending = lines + self._pending
        excess = len(self._pending) - self.max_pending
        if excess > 0:
            del self._pending[:excess]
            self._count_drop("spool_unwritable", excess)
            self._settle(excess)

    # --- reading (per sink) -------------------------------------------------------

    def behind(self, sink: str) -> int:
        """Committed lines the sink has not confirmed yet."""
        return self._sinks[sink].behind

    def position(self, sink: str) -> Position:
        """Where the sink's next read starts (moved by its acks, and by drops passing it)."""
        return self._sinks[sink].position

    def waiting_since(self, sink: str) -> float:
        """Monotonic time since which the sink has had undelivered lines."""
        return self._sinks[sink].since

    async def wait_for_data(self, sink: str) -> None:
        """Return once the sink has committed lines to deliver."""
        state = self._sinks[sink]
        while state.behind == 0:
            state.event.clear()
            await state.event.wait()

    async def wait_for_more(self, sink: str, timeout: float) -> None:  # noqa: ASYNC109
        """Return at the next commit for ``sink``, or after ``timeout`` seconds."""
        state = self._sinks[sink]
        state.event.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await state.event.wait()

    async def read(self, sink: str, max_lines: int) -> Batch | None:
        """Up to ``max_lines`` undelivered lines for ``sink``, oldest first."""
        state = self._sinks[sink]
        if state.behind == 0:
            return None
        dropped = _CommitResult()
        batch: Batch | None = await self._run(self._read_sync, state, max_lines, dropped)
        if dropped.dropped:
            self._apply_drops(dropped)
        if batch is None and state.behind:
            # Nothing on disk after the cursor although the counter says otherwise: trust
            # the disk, so the sink does not spin.
            log.error(
                "spool backlog counter out of step with the file; resetting it",
                sink=sink,
                counted=state.behind,
            )
            state.behind = 0
        return batch

    async def ack(self, sink: str, batch: Batch) -> None:
        """The sink delivered (or dead-lettered) every line of ``batch``: move its cursor."""
        state = self._sinks[sink]
        fut = self._submit(self._ack_sync, sink, batch.end)

        def acked(f: asyncio.Future[tuple[int, int]]) -> None:
            if f.cancelled() or f.exception() is not None:
                return
            freed, count = f.result()
            self._bytes -= freed
            # A drop may have passed (part of) the batch meanwhile and counted those lines
            # already: only the lines between the stored cursor and ``end`` are new.
            state.position = max(state.position, batch.end)
            state.behind = max(0, state.behind - count)

        fut.add_done_callback(acked)
        await asyncio.shield(fut)

    async def dead_letter(self, sink: str, rejected: Sequence[tuple[str, str]]) -> None:
        """Keep lines a sink refused for good, with the server's reason."""
        if rejected:
            await self._run(self._dead_letter_sync, sink, rejected)
            self.stats.dead_lettered += len(rejected)

    async def dead_letters(
        self, sink: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Dead-lettered lines, newest first."""
        rows: list[dict[str, Any]] = await self._run(self._dead_letters_sync, sink, limit)
        return rows

    async def oldest_age(self) -> float | None:
        """Seconds since the oldest undelivered chunk was committed (None when empty).

        Measured on the spool clock (see :meth:`_clock_ns_sync`): a wall-clock step
        does not change it.
        """
        age: int | None = await self._run(self._oldest_sync)
        return None if age is None else max(0.0, age / 1e9)

    @property
    def size_bytes(self) -> int:
        """Bytes the spooled chunks take, as counted against ``max_bytes``."""
        return self._bytes

    # --- field types (pinned on first sight, kept across restarts) ----------------

    async def load_field_types(self) -> dict[tuple[str, str], str]:
        rows: dict[tuple[str, str], str] = await self._run(self._load_types_sync)
        return rows

    async def save_field_types(self, types: Sequence[tuple[str, str, str]]) -> None:
        if types:
            await self._run(self._save_types_sync, types)

    # --- internals: all below run on the spool thread -----------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args))

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Small pages: a commit writes a few pages to the WAL, so their size is the disk
        # (SD-card) cost of a commit window. Only takes effect when the file is new.
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
        return db

    def _open_sync(self) -> tuple[dict[str, Position], dict[str, int], int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = self._connect()
            ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            ok = False
            log.error("spool file is damaged", path=str(self.path), error=str(err))
        if not ok:
            with contextlib.suppress(Exception):
                db.close()
            db = self._salvage()
        self._db = db
        known = {row[0] for row in db.execute("SELECT sink FROM cursor")}
        first = db.execute("SELECT MIN(id) FROM chunk").fetchone()[0] or 1
        for name in self._sink_names:
            if name not in known:
                db.execute("INSERT INTO cursor VALUES (?, ?, 0)", (name, first))
        positions: dict[str, Position] = {}
        behind: dict[str, int] = {}
        for name, chunk_id, line in db.execute("SELECT sink, chunk_id, line FROM cursor"):
            positions[name] = Position(chunk_id, line)
            total = db.execute(
                "SELECT COALESCE(SUM(count), 0) FROM chunk WHERE id >= ?", (chunk_id,)
            ).fetchone()[0]
            behind[name] = max(0, total - line)
        for gone in self._removed(positions):
            # A sink removed from the configuration would otherwise pin chunks forever.
            db.execute("DELETE FROM cursor WHERE sink = ?", (gone,))
        size = db.execute(
            "SELECT COALESCE(SUM(LENGTH(data)), 0) + COUNT(*) * ? FROM chunk", (ROW_OVERHEAD_BYTES,)
        ).fetchone()[0]
        size -= self._gc_sync(db)
        return positions, behind, size

    def _removed(self, cursors: Iterable[str]) -> list[str]:
        """The sinks among ``cursors`` neither running nor kept: their cursors go at open."""
        return sorted(set(cursors) - {*self._sink_names, *self._inactive})

    def _salvage(self) -> sqlite3.Connection:
        """Move a damaged spool aside, copy every readable chunk into a fresh one."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        damaged = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{damaged}{suffix}")
        db = self._connect()
        db.executescript(_SCHEMA)
        saved = 0
        try:
            old = sqlite3.connect(f"file:{damaged}?mode=ro", uri=True)
            # Without this SQLite refuses a file shorter than its header says (truncated).
            old.execute("PRAGMA writable_schema = ON")
            ids, lost, tail_lost = _readable_chunk_ids(old)
        except sqlite3.DatabaseError as err:
            log.error(
                "spool could not be read at all; starting empty",
                error=str(err),
                damaged=str(damaged),
            )
            return db
        db.execute("BEGIN")
        for chunk_id in ids:
            try:
                row = old.execute(
                    "SELECT id, count, created_ns, data FROM chunk WHERE id = ?", (chunk_id,)
                ).fetchone()
                text = zlib.decompress(row[3]).decode("utf-8")
                if text.count("\n") + 1 != row[1]:
                    raise ValueError("line count does not match")
                db.execute("INSERT INTO chunk VALUES (?, ?, ?, ?)", row)
                saved += 1
            except (sqlite3.DatabaseError, zlib.error, ValueError):
                lost += 1
        # Cursors, dead letters and pinned field types: whatever can still be read.
        for table in ("cursor", "dead_letter", "field_type"):
            with contextlib.suppress(sqlite3.DatabaseError):
                for row in old.execute(f"SELECT * FROM {table}"):
                    marks = ", ".join("?" * len(row))
                    db.execute(f"INSERT OR REPLACE INTO {table} VALUES ({marks})", row)
        db.execute("COMMIT")
        old.close()
        self.stats.recovered_lost_chunks = lost + tail_lost
        log.error(
            "damaged spool recovered",
            saved_chunks=saved,
            lost_chunks=lost + tail_lost,
            lost_at_end=tail_lost,
            damaged_copy=str(damaged),
        )
        return db

    def _commit_sync(self, lines: list[str], make_room: bool = True) -> _CommitResult:
        db = self._db
        assert db is not None
        data = zlib.compress("\n".join(lines).encode("utf-8"), 1)
        result = _CommitResult(added=len(data) + ROW_OVERHEAD_BYTES)
        # Only worth it while the spool itself is big enough to give the headroom back:
        # when another program filled the disk, dropping a small backlog frees nothing
        # useful and loses what a sink was about to deliver.
        low_space = self._bytes > DISK_HEADROOM_BYTES and self._free_bytes() < DISK_HEADROOM_BYTES
        try:
            db.execute("BEGIN IMMEDIATE")
            # The id must be past every cursor: SQLite gives rowid 1 again once the
            # table is empty, which would hide the chunk behind cursors already further on.
            db.execute(
                "INSERT INTO chunk (id, count, created_ns, data) VALUES (MAX("
                "(SELECT COALESCE(MAX(id), 0) + 1 FROM chunk), "
                "(SELECT COALESCE(MAX(chunk_id), 1) FROM cursor)), ?, ?, ?)",
                (len(lines), self._clock_ns_sync(db), data),
            )
            if low_space:
                # Twice the new chunk's size, so free pages build up for the next ones.
                result.added -= self._drop_oldest_sync(db, 2 * result.added, "disk_full", result)
            over = self._bytes + result.added - self.max_bytes
            if over > 0:
                result.added -= self._drop_oldest_sync(db, over, "spool_full", result)
            if self.max_age is not None:
                result.added -= self._drop_older_sync(db, result)
            db.execute("COMMIT")
            if low_space:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as err:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            result = _CommitResult(error=str(err))
            if make_room and "full" in str(err).lower():
                # The disk stayed full while memory filled up: make room inside the file by
                # dropping the oldest chunks (freed pages are reused), so the retry of this
                # commit can succeed. Before that, a sink that is merely a batch behind must
                # not lose that batch to a disk that fills for a moment.
                try:
                    db.execute("BEGIN IMMEDIATE")
                    need = max(len(data) * 2, self._bytes // 10)
                    result.freed = self._drop_oldest_sync(
                        db, need, "disk_full", result, keep_last=False
                    )
                    db.execute("COMMIT")
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                    result.dropped.clear()
                    result.freed = 0
        if result.dropped:
            result.positions = {
                sink: Position(c, ln)
                for sink, c, ln in db.execute("SELECT sink, chunk_id, line FROM cursor")
            }
        return result

    def _free_bytes(self) -> int:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return DISK_HEADROOM_BYTES  # unknown: assume enough
        return st.f_bavail * st.f_frsize

    def _drop_oldest_sync(
        self,
        db: sqlite3.Connection,
        need: int,
        reason: str,
        result: _CommitResult,
        keep_last: bool = True,
    ) -> int:
        freed = 0
        last_id = db.execute("SELECT MAX(id) FROM chunk").fetchone()[0]
        for chunk_id, count, size in db.execute(
            "SELECT id, count, LENGTH(data) FROM chunk ORDER BY id"
        ).fetchall():
            if freed >= need or (keep_last and chunk_id == last_id):
                break
            self._drop_chunk_sync(db, chunk_id, count, reason, result)
            freed += size + ROW_OVERHEAD_BYTES
        return freed

    def _clock_ns_sync(self, db: sqlite3.Connection) -> int:
        """The spool clock: what chunks' ``created_ns`` and their ages are measured on.

        The wall clock can step (NTP setting a Pi's clock after boot), so ages are never
        judged by it: the spool clock is the monotonic clock, set once per run to go on
        from the newest chunk's ``created_ns`` (or, with no chunk left, from the wall
        clock). So a chunk's age is the time the gateway has run since it was committed:
        a wall-clock step, now or between runs, never makes a chunk older, and time the
        gateway was stopped does not count either.
        """
        if self._clock_base is None:
            row = db.execute("SELECT created_ns FROM chunk ORDER BY id DESC LIMIT 1").fetchone()
            start = self.time.wall_ns() if row is None else int(row[0])
            self._clock_base = start - self.time.monotonic_ns()
        return self.time.monotonic_ns() + self._clock_base

    def _drop_older_sync(self, db: sqlite3.Connection, result: _CommitResult) -> int:
        assert self.max_age is not None
        limit = self._clock_ns_sync(db) - int(self.max_age * 1e9)
        freed = 0
        for chunk_id, count, size in db.execute(
            "SELECT id, count, LENGTH(data) FROM chunk WHERE created_ns < ? ORDER BY id", (limit,)
        ).fetchall():
            self._drop_chunk_sync(db, chunk_id, count, "max_age", result)
            freed += size + ROW_OVERHEAD_BYTES
        return freed

    def _drop_chunk_sync(
        self,
        db: sqlite3.Connection,
        chunk_id: int,
        count: int,
        reason: str,
        result: _CommitResult,
        oldest: bool = True,
    ) -> None:
        db.execute("DELETE FROM chunk WHERE id = ?", (chunk_id,))
        for sink, cur_chunk, cur_line in db.execute(
            "SELECT sink, chunk_id, line FROM cursor WHERE chunk_id <= ?", (chunk_id,)
        ).fetchall():
            lost = count - (cur_line if cur_chunk == chunk_id else 0)
            per = result.dropped.setdefault(sink, {})
            per[reason] = per.get(reason, 0) + lost
            # Past the oldest chunk every cursor at or before it moves on; a chunk dropped
            # from the middle (corrupt) must not make a cursor skip older lines.
            if oldest or cur_chunk == chunk_id:
                db.execute(
                    "UPDATE cursor SET chunk_id = ?, line = 0 WHERE sink = ?", (chunk_id + 1, sink)
                )

    def _read_sync(self, state: _SinkState, max_lines: int, dropped: _CommitResult) -> Batch | None:
        db = self._db
        assert db is not None
        pos = state.position
        lines: list[str] = []
        chunk_id, offset = pos.chunk_id, pos.line
        end = pos
        while len(lines) < max_lines:
            if state.cache is not None and state.cache[0] == chunk_id:
                chunk_lines = state.cache[1]
            else:
                row = db.execute(
                    "SELECT id, count FROM chunk WHERE id >= ? ORDER BY id LIMIT 1", (chunk_id,)
                ).fetchone()
                if row is None:
                    break
                if row[0] != chunk_id:
                    chunk_id, offset = row[0], 0
                try:
                    data = db.execute("SELECT data FROM chunk WHERE id = ?", (chunk_id,)).fetchone()
                    chunk_lines = zlib.decompress(data[0]).decode("utf-8").split("\n")
                except (sqlite3.DatabaseError, zlib.error, UnicodeDecodeError) as err:
                    # Damage SQLite's check cannot see (flipped bytes in a chunk): drop the
                    # chunk for every sink, count it, and go on with the next one.
                    self._drop_corrupt_sync(db, chunk_id, row[1], err, dropped)
                    chunk_id, offset = chunk_id + 1, 0
                    continue
                state.cache = (chunk_id, chunk_lines)
            take = chunk_lines[offset : offset + max_lines - len(lines)]
            lines.extend(take)
            offset += len(take)
            if offset >= len(chunk_lines):
                chunk_id, offset = chunk_id + 1, 0
            end = Position(chunk_id, offset)
        return Batch(lines, end) if lines else None

    def _drop_corrupt_sync(
        self,
        db: sqlite3.Connection,
        chunk_id: int,
        count: int,
        err: Exception,
        result: _CommitResult,
    ) -> None:
        log.error("unreadable spool chunk dropped", chunk=chunk_id, lines=count, error=str(err))
        try:
            db.execute("BEGIN IMMEDIATE")
            self._drop_chunk_sync(db, chunk_id, count, "corrupt", result, oldest=False)
            db.execute("COMMIT")
        except sqlite3.Error as db_err:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise SpoolError(
                f"spool {self.path} is damaged ({db_err}); restart to salvage it"
            ) from db_err
        result.positions = {
            sink: Position(c, ln)
            for sink, c, ln in db.execute("SELECT sink, chunk_id, line FROM cursor")
        }

    def _ack_sync(self, sink: str, end: Position) -> tuple[int, int]:
        db = self._db
        assert db is not None
        with transaction(db):
            start_chunk, start_line = db.execute(
                "SELECT chunk_id, line FROM cursor WHERE sink = ?", (sink,)
            ).fetchone()
            acked = 0
            if Position(start_chunk, start_line) < end:
                between = db.execute(
                    "SELECT COALESCE(SUM(count), 0) FROM chunk WHERE id >= ? AND id < ?",
                    (start_chunk, end.chunk_id),
                ).fetchone()[0]
                acked = max(0, between - start_line + end.line)
            # A drop may have moved the cursor past this batch meanwhile; never move it back.
            db.execute(
                "UPDATE cursor SET chunk_id = ?, line = ? WHERE sink = ? AND (chunk_id < ? OR "
                "(chunk_id = ? AND line < ?))",
                (end.chunk_id, end.line, sink, end.chunk_id, end.chunk_id, end.line),
            )
            freed = self._gc_sync(db)
        return freed, acked

    def _gc_sync(self, db: sqlite3.Connection) -> int:
        low = db.execute("SELECT MIN(chunk_id) FROM cursor").fetchone()[0]
        if low is None:
            return 0
        freed: int = db.execute(
            "SELECT COALESCE(SUM(LENGTH(data)), 0) + COUNT(*) * ? FROM chunk WHERE id < ?",
            (ROW_OVERHEAD_BYTES, low),
        ).fetchone()[0]
        db.execute("DELETE FROM chunk WHERE id < ?", (low,))
        return freed

    def _dead_letter_sync(self, sink: str, rejected: Sequence[tuple[str, str]]) -> None:
        db = self._db
        assert db is not None
        now = time.time_ns()
        with transaction(db):
            db.executemany(
                "INSERT INTO dead_letter (sink, created_ns, reason, line) VALUES (?, ?, ?, ?)",
                [(sink, now, reason, line) for line, reason in rejected],
            )

    def _dead_letters_sync(self, sink: str | None, limit: int) -> list[dict[str, Any]]:
        db = self._db
        assert db is not None
        query = "SELECT id, sink, created_ns, reason, line FROM dead_letter"
        args: tuple[Any, ...] = ()
        if sink is not None:
            query += " WHERE sink = ?"
            args = (sink,)
        query += " ORDER BY id DESC LIMIT ?"
        return [
            {"id": r[0], "sink": r[1], "time_ns": r[2], "reason": r[3], "line": r[4]}
            for r in db.execute(query, (*args, limit))
        ]

    def _oldest_sync(self) -> int | None:
        db = self._db
        assert db is not None
        row = db.execute(
            "SELECT created_ns FROM chunk WHERE id >= (SELECT MIN(chunk_id) FROM cursor) "
            "ORDER BY id LIMIT 1"
        ).fetchone()
        return None if row is None else self._clock_ns_sync(db) - int(row[0])

    def _load_types_sync(self) -> dict[tuple[str, str], str]:
        db = self._db
        assert db is not None
        return {
            (m, f): t for m, f, t in db.execute("SELECT measurement, field, type FROM field_type")
        }

    def _save_types_sync(self, types: Sequence[tuple[str, str, str]]) -> None:
        db = self._db
        assert db is not None
        with transaction(db):
            db.executemany("INSERT OR IGNORE INTO field_type VALUES (?, ?, ?)", types)

    # --- drops --------------------------------------------------------------------

    def _apply_drops(self, result: _CommitResult) -> None:
        self._bytes -= result.freed
        for sink, reasons in result.dropped.items():
            state = self._sinks.get(sink)
            if state is not None:
                state.behind = max(0, state.behind - sum(reasons.values()))
                state.cache = None
                state.position = result.positions.get(sink, state.position)
            for reason, count in reasons.items():
                self._count_drop(reason, count, sink)

    def _count_drop(self, reason: str, count: int, sink: str | None = None) -> None:
        key = f"{sink}:{reason}" if sink else reason
        self.stats.dropped[key] = self.stats.dropped.get(key, 0) + count
        self._unlogged_drops[key] = self._unlogged_drops.get(key, 0) + count
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            self._last_drop_log = now
            log.warning(
                "spool dropped readings",
                dropped=dict(self._unlogged_drops),
                total=dict(self.stats.dropped),
                max_bytes=self.max_bytes,
                max_age=self.max_age,
            )
            self._unlogged_drops.clear()
