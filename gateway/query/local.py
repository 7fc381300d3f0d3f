"""The local store backend: ``sensor-gateway query`` over the gateway's SQLite store.

:func:`run_query` answers a :class:`QueryRequest` with :class:`Row` values; :func:`summary`
lists what is stored (``query --list``); :class:`LocalBackend` is both behind the
:class:`~gateway.query.backend.Backend` interface. The store is opened read-only, so
queries run while the daemon writes (SQLite WAL: readers see the last committed batch and
never block it).

Samples are in two tables (see ``gateway.sinks.local``): ``sample``, keyed by field, and
the small ``recent``, keyed by time, which holds what was written since the last fold.
Where both hold a point, the one in ``recent`` is the newer write and wins.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from gateway.query.backend import (
    QueryError,
    QueryRequest,
    Row,
    SeriesSummary,
    checked_range,
)
from gateway.query.readings import newest_readings, take_readings
from gateway.query.windows import aggregate

__all__ = ["LocalBackend", "run_query", "summary"]


class LocalBackend:
    """The local store at ``path`` behind the :class:`~gateway.query.backend.Backend` interface."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def description(self) -> str:
        return f"the local store {self.path}"

    def rows(self, req: QueryRequest) -> list[Row]:
        return run_query(self.path, req)

    def summary(self) -> list[SeriesSummary]:
        return summary(self.path)


class _Column(NamedTuple):
    """One stored series + field, as selected by a request."""

    field_id: int
    measurement: str
    device: str | None
    tags: dict[str, str]
    field: str
    type: str


# --- reading -----------------------------------------------------------------------


def run_query(store_path: Path, req: QueryRequest) -> list[Row]:
    """The rows ``req`` selects from the local store at ``store_path``.

    Raises:
        QueryError: the store is missing or unreadable, or the request is invalid.
    """
    start, end = checked_range(req)
    if req.every_ns is not None and req.agg is not None:
        raw = run_query(store_path, replace(req, limit=None, every_ns=None, agg=None))
        return newest_readings(aggregate(raw, req.every_ns, req.agg), req.limit)
    with _reading(store_path) as db:
        columns = _columns(db, req)
        recent = _recent(db, {col.field_id for col in columns}, start, end)
        if req.latest:
            rows = []
            for col in columns:
                hit = db.execute(
                    "SELECT time_ns, value FROM sample WHERE field_id = ? AND time_ns >= ? "
                    "AND time_ns < ? ORDER BY time_ns DESC LIMIT 1",
                    (col.field_id, start, end),
                ).fetchone()
                newer = recent.get(col.field_id)
                if newer and (hit is None or newer[0][0] >= hit[0]):
                    hit = newer[0]
                if hit is not None:
                    rows.append(_row(col, hit[0], hit[1]))
            rows.sort(key=lambda row: row.time_ns)
            return newest_readings(rows, req.limit)
        # Newest first from each column, merged: reads only about ``limit`` rows of
        # ``sample`` however much is stored. Ties in time are broken by column order, so
        # output is stable.
        streams = [
            _newest_first(db, rank, col.field_id, start, end, recent.get(col.field_id, []))
            for rank, col in enumerate(columns)
        ]
        merged = heapq.merge(*streams, reverse=True)
        newest_first = (_row(columns[rank], t, value) for t, rank, value in merged)
        picked = list(take_readings(newest_first, req.limit))
        picked.reverse()
        return picked


def summary(store_path: Path) -> list[SeriesSummary]:
    """Per measurement + device + field: how many values, the first and last time.

    Counting walks every stored sample, so this takes time proportional to the store's size.
    """
    totals: dict[tuple[str, str | None, str], list[int]] = {}
    with _reading(store_path) as db:
        # Per field in ``recent``: rows, first, last, and how many of its points are
        # also in ``sample`` (written again after a fold), not to be counted twice.
        recent: dict[int, tuple[int, int, int, int]] = {}
        if _has_recent(db):
            recent = {
                fid: (n, lo, hi, both)
                for fid, n, lo, hi, both in db.execute(
                    "SELECT field_id, COUNT(*), MIN(time_ns), MAX(time_ns), "
                    "SUM(EXISTS (SELECT 1 FROM sample s "
                    "WHERE s.field_id = r.field_id AND s.time_ns = r.time_ns)) "
                    "FROM recent r GROUP BY field_id"
                )
            }
        for field_id, measurement, device, name, count, first, last in db.execute(
            "SELECT f.id, s.measurement, s.device, f.name, "
            "(SELECT COUNT(*) FROM sample WHERE field_id = f.id), "
            "(SELECT time_ns FROM sample WHERE field_id = f.id ORDER BY time_ns LIMIT 1), "
            "(SELECT time_ns FROM sample WHERE field_id = f.id ORDER BY time_ns DESC LIMIT 1) "
            "FROM field f JOIN series s ON s.id = f.series_id"
        ):
            if field_id in recent:
                n, lo, hi, both = recent[field_id]
                first = lo if first is None else min(first, lo)
                last = hi if last is None else max(last, hi)
                count += n - both
            if not count:
                continue
            key = (measurement, device, name)
            seen = totals.get(key)
            if seen is None:
                totals[key] = [count, first, last]
            else:
                seen[0] += count
                seen[1] = min(seen[1], first)
                seen[2] = max(seen[2], last)
    return [
        SeriesSummary(m, d, f, count, first, last)
        for (m, d, f), (count, first, last) in sorted(
            totals.items(), key=lambda item: (item[0][0], item[0][1] or "", item[0][2])
        )
    ]


@contextlib.contextmanager
def _reading(store_path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction (one consistent snapshot)."""
    db = _open_read_only(store_path)
    try:
        db.execute("BEGIN")
        yield db
    except sqlite3.Error as err:
        raise _read_error(store_path, "read", err) from err
    finally:
        db.close()


def _open_read_only(store_path: Path) -> sqlite3.Connection:
    if not store_path.exists():
        raise QueryError(
            f"no local store at {store_path} — is the local sink enabled? (sinks.local)"
        )
    if not os.access(store_path, os.R_OK):
        raise QueryError(
            f"cannot read local store {store_path}: permission denied "
            "(run the query as the gateway's user or root)"
        )
    uri = store_path.resolve().as_uri()
    wal = Path(f"{store_path}-wal")
    try:
        try:
            return _probe(sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None))
        except sqlite3.OperationalError:
            # A reader that may not create the -shm file (no write access to the
            # directory) cannot open a WAL database while the daemon is stopped. Then no
            # -wal holds unmerged changes and the file can be read as immutable.
            if wal.exists() and wal.stat().st_size > 0:
                raise
            return _probe(
                sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
            )
    except sqlite3.Error as err:
        raise _read_error(store_path, "open", err) from err


def _read_error(store_path: Path, verb: str, err: sqlite3.Error) -> QueryError:
    if "no such table" in str(err) or "not a database" in str(err):
        return QueryError(f"{store_path} is not a sensor-gateway local store ({err})")
    return QueryError(f"cannot {verb} local store {store_path}: {err}")


def _probe(db: sqlite3.Connection) -> sqlite3.Connection:
    """``db`` once a first read worked (SQLite opens files lazily)."""
    try:
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except BaseException:
        db.close()
        raise
    return db


def _columns(db: sqlite3.Connection, req: QueryRequest) -> list[_Column]:
    where: list[str] = []
    args: list[Any] = []
    if req.device is not None:
        where.append("s.device = ?")
        args.append(req.device)
    if req.measurement is not None:
        where.append("s.measurement = ?")
        args.append(req.measurement)
    if req.fields:
        where.append(f"f.name IN ({', '.join('?' * len(req.fields))})")
        args += req.fields
    sql = (
        "SELECT f.id, s.measurement, s.device, s.tags, f.name, f.type "
        "FROM field f JOIN series s ON s.id = f.series_id"
    )
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY s.measurement, s.device, s.tags, f.name"
    return [
        _Column(fid, m, d, json.loads(tags), name, kind)
        for fid, m, d, tags, name, kind in db.execute(sql, args)
    ]


def _has_recent(db: sqlite3.Connection) -> bool:
    """Whether the store has a ``recent`` table (a version 1 store not yet reopened has not)."""
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recent'")
    return found.fetchone() is not None


def _recent(
    db: sqlite3.Connection, field_ids: set[int], start: int, end: int
) -> dict[int, list[tuple[int, Any]]]:
    """The rows of ``recent`` in the range for ``field_ids``: field id → [(time, value)],
    newest first. ``recent`` is keyed by time, so this is one range scan of a small table."""
    found: dict[int, list[tuple[int, Any]]] = {}
    if not field_ids or not _has_recent(db):
        return found
    for time_ns, field_id, value in db.execute(
        "SELECT time_ns, field_id, value FROM recent WHERE time_ns >= ? AND time_ns < ? "
        "ORDER BY time_ns DESC",
        (start, end),
    ):
        if field_id in field_ids:
            found.setdefault(field_id, []).append((time_ns, value))
    return found


def _newest_first(
    db: sqlite3.Connection,
    rank: int,
    field_id: int,
    start: int,
    end: int,
    recent: list[tuple[int, Any]],
) -> Iterator[tuple[int, int, Any]]:
    """One column's values, newest first: ``sample`` merged with its ``recent`` rows
    (newest first too), the ``recent`` row winning where both have a time."""
    cursor = db.execute(
        "SELECT time_ns, value FROM sample WHERE field_id = ? AND time_ns >= ? AND time_ns < ? "
        "ORDER BY time_ns DESC",
        (field_id, start, end),
    )
    pending = iter(recent)
    ahead = next(pending, None)
    for time_ns, value in cursor:
        while ahead is not None and ahead[0] > time_ns:
            yield ahead[0], rank, ahead[1]
            ahead = next(pending, None)
        if ahead is not None and ahead[0] == time_ns:  # written again since: recent wins
            yield ahead[0], rank, ahead[1]
            ahead = next(pending, None)
        else:
            yield time_ns, rank, value
    while ahead is not None:
        yield ahead[0], rank, ahead[1]
        ahead = next(pending, None)


def _row(col: _Column, time_ns: int, value: Any) -> Row:
    if col.type == "boolean":
        value = bool(value)
    return Row(time_ns, col.measurement, col.device, col.tags, col.field, value)
