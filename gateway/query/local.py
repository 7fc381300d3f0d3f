"""Reading stored readings back: ``sensor-gateway query`` over the local store.

:func:`run_query` answers a :class:`QueryRequest` with :class:`Row` values, which the
formatters turn into an aligned table, CSV or JSON lines; :func:`summary` lists what
is stored (``query --list``). The store is opened read-only, so queries run while the
daemon writes (SQLite WAL: readers see the last committed batch and never block it).

Times are nanoseconds since the epoch; a range is ``start_ns <= time < end_ns``.

Samples are in two tables (see ``gateway.sinks.local``): ``sample``, keyed by field, and
the small ``recent``, keyed by time, which holds what was written since the last fold.
Where both hold a point, the one in ``recent`` is the newer write and wins.
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import io
import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from decimal import Decimal
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

from gateway.errors import GatewayError
from gateway.pipeline.reading import FieldValue

__all__ = [
    "QueryError",
    "QueryRequest",
    "Row",
    "SeriesSummary",
    "format_csv",
    "format_json",
    "format_summary",
    "format_table",
    "parse_time",
    "rfc3339",
    "run_query",
    "summary",
]

_NS = 1_000_000_000
_MIN_NS = -(2**63)
_MAX_NS = 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class QueryError(GatewayError):
    """A query cannot be answered: no store, unreadable store, or a bad argument."""


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """What to read. Every filter is optional; ``fields`` None or empty means all fields."""

    device: str | None = None
    measurement: str | None = None
    fields: Sequence[str] | None = None
    start_ns: int | None = None
    """Inclusive lower bound."""
    end_ns: int | None = None
    """Exclusive upper bound."""
    limit: int | None = 1000
    """At most this many rows: the most recent ones, returned oldest first. ``None``: all."""
    latest: bool = False
    """Only the newest value of each series + field (within the range, if one is given)."""


class Row(NamedTuple):
    """One stored value."""

    time_ns: int
    measurement: str
    device: str | None
    tags: dict[str, str]
    """All tags of the series, ``device`` included."""
    field: str
    value: FieldValue


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """What is stored for one measurement + device + field (``query --list``)."""

    measurement: str
    device: str | None
    field: str
    count: int
    first_ns: int
    last_ns: int


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
    if req.limit is not None and req.limit < 1:
        raise QueryError(f"limit must be at least 1, got {req.limit}")
    start = _MIN_NS if req.start_ns is None else req.start_ns
    end = _MAX_NS if req.end_ns is None else req.end_ns
    if start >= end:
        raise QueryError(f"the start ({rfc3339(start)}) is not before the end ({rfc3339(end)})")
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
                    if req.limit is not None and len(rows) >= req.limit:
                        break
            return rows
        # Newest first from each column, merged: reads only about ``limit`` rows of
        # ``sample`` however much is stored. Ties in time are broken by column order, so
        # output is stable.
        streams = [
            _newest_first(db, rank, col.field_id, start, end, recent.get(col.field_id, []))
            for rank, col in enumerate(columns)
        ]
        merged = heapq.merge(*streams, reverse=True)
        picked = list(merged if req.limit is None else islice(merged, req.limit))
        picked.reverse()
        return [_row(columns[rank], time_ns, value) for time_ns, rank, value in picked]


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


# --- formatting --------------------------------------------------------------------


def rfc3339(time_ns: int) -> str:
    """``time_ns`` as RFC 3339 in UTC with all nine fraction digits: ``...T10:00:00.000000001Z``."""
    seconds, frac = divmod(time_ns, _NS)
    stamp = (_EPOCH + timedelta(seconds=seconds)).replace(tzinfo=None).isoformat()
    return f"{stamp}.{frac:09d}Z"


def _local_ms(time_ns: int, tz: tzinfo | None) -> str:
    seconds, frac = divmod(time_ns, _NS)
    moment = (_EPOCH + timedelta(seconds=seconds)).astimezone(tz)
    return moment.replace(microsecond=frac // 1000).isoformat(timespec="milliseconds")


def _text(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _other_tags(row: Row) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(row.tags.items()) if k != "device")


def _aligned(header: Sequence[str], lines: list[list[str]]) -> str:
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    out = []
    for cells in [header, *lines]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"


def format_table(rows: Sequence[Row], tz: tzinfo | None = None) -> str:
    """An aligned table: local time (ISO 8601, ms), device, measurement, field, value, tags.

    ``tz`` defaults to the system's time zone; "tags" are those besides ``device``.
    Returns ``""`` for no rows.
    """
    if not rows:
        return ""
    lines = [
        [
            _local_ms(row.time_ns, tz),
            row.device if row.device is not None else "-",
            row.measurement,
            row.field,
            _text(row.value),
            _other_tags(row),
        ]
        for row in rows
    ]
    return _aligned(("time", "device", "measurement", "field", "value", "tags"), lines)


def format_csv(rows: Sequence[Row]) -> str:
    """CSV with a header: time (RFC 3339 UTC, ns), measurement, device, field, value, tags."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("time", "measurement", "device", "field", "value", "tags"))
    for row in rows:
        writer.writerow(
            (
                rfc3339(row.time_ns),
                row.measurement,
                row.device or "",
                row.field,
                _text(row.value),
                _other_tags(row),
            )
        )
    return out.getvalue()


def format_json(rows: Sequence[Row]) -> str:
    """JSON lines, one object per row; ``value`` keeps its JSON type, ``tags`` omit device."""
    out = []
    for row in rows:
        obj = {
            "time": rfc3339(row.time_ns),
            "time_ns": row.time_ns,
            "measurement": row.measurement,
            "device": row.device,
            "field": row.field,
            "value": row.value,
            "tags": {k: v for k, v in sorted(row.tags.items()) if k != "device"},
        }
        out.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
    return "".join(out)


def format_summary(items: Sequence[SeriesSummary], tz: tzinfo | None = None) -> str:
    """An aligned table of :func:`summary`'s answer; ``""`` when the store is empty."""
    if not items:
        return ""
    lines = [
        [
            item.measurement,
            item.device if item.device is not None else "-",
            item.field,
            str(item.count),
            _local_ms(item.first_ns, tz),
            _local_ms(item.last_ns, tz),
        ]
        for item in items
    ]
    return _aligned(("measurement", "device", "field", "count", "first", "last"), lines)


# --- parsing times -----------------------------------------------------------------

_UNITS_NS = {
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
    "d": 86400 * _NS,
    "w": 7 * 86400 * _NS,
}
_RELATIVE_RE = re.compile(r"(?:now)?-((?:\d+(?:ms|s|m|h|d|w))+)")
_PART_RE = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_EPOCH_RE = re.compile(r"\d+(?:\.\d+)?")
_ISO_RE = re.compile(
    r"(\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:[.,](\d+))?\s*([Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
# Epoch seconds have 10 digits until the year 2286; more look like ms, µs or ns.
_MAX_EPOCH_DIGITS = 10
_FORMS = (
    'use RFC 3339 ("2024-05-01T12:00:00Z"), a date ("2024-05-01", local time), '
    'epoch seconds ("1714564800"), "now", or a time ago ("-30m", "-1h", "-2d", "-1h30m")'
)


def parse_time(text: str, now: int | None = None, tz: tzinfo | None = None) -> int:
    """Nanoseconds since the epoch for a time given on the command line.

    Args:
        text: RFC 3339 / ISO 8601 (without an offset: local time), a date (local
            midnight), epoch seconds, ``now``, or ``-<n><unit>[...]`` with units
            ms, s, m, h, d, w (also written ``now-1h``).
        now: the current time in ns (default: the clock).
        tz: the zone for times without an offset (default: the system's).

    Raises:
        QueryError: the text is none of these.
    """
    spec = text.strip()
    low = spec.lower()
    current = time.time_ns() if now is None else now
    if low == "now":
        return current
    if m := _RELATIVE_RE.fullmatch(low):
        ago = sum(int(n) * _UNITS_NS[unit] for n, unit in _PART_RE.findall(m.group(1)))
        return _in_range(text, current - ago)
    if _EPOCH_RE.fullmatch(spec):
        if len(spec.split(".")[0]) > _MAX_EPOCH_DIGITS:
            raise QueryError(
                f'invalid time "{text}": epoch times are in seconds; this looks like '
                "milliseconds or nanoseconds"
            )
        return _in_range(text, int(Decimal(spec) * _NS))
    if m := _ISO_RE.fullmatch(spec):
        date, clock, fraction, offset = m.groups()
        try:
            moment = datetime.fromisoformat(f"{date}T{clock or '00:00'}")
        except ValueError as err:
            raise QueryError(f'invalid time "{text}": {err}') from None
        if fraction is not None and len(fraction) > 9:
            raise QueryError(f'invalid time "{text}": more than nine fraction digits')
        if offset is None:
            zone = tz if tz is not None else moment.astimezone().tzinfo
            moment = moment.replace(tzinfo=zone)
        elif offset in ("Z", "z"):
            moment = moment.replace(tzinfo=UTC)
        else:
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:] or 0)
            if hours > 23 or minutes > 59:
                raise QueryError(f'invalid time "{text}": bad UTC offset "{offset}"')
            moment = moment.replace(tzinfo=timezone(sign * timedelta(hours=hours, minutes=minutes)))
        delta = moment - _EPOCH
        whole = (delta.days * 86400 + delta.seconds) * _NS
        frac = int((fraction or "").ljust(9, "0")) if fraction else 0
        return _in_range(text, whole + frac)
    raise QueryError(f'invalid time "{text}": {_FORMS}')


def _in_range(text: str, time_ns: int) -> int:
    if not _MIN_NS <= time_ns <= _MAX_NS:
        raise QueryError(f'invalid time "{text}": outside the years 1677–2262 that can be stored')
    return time_ns
