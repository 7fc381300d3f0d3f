"""The InfluxDB 3 backend: InfluxQL over ``/api/v3/query_influxql`` (``api = "v3"``).

The statements are :mod:`gateway.query.influxql`'s (the same builder, the same quoting);
what differs is the transport and the answer:

* One statement per request (Core refuses more), ``db``, ``q`` and ``format=json``; the
  token as ``Authorization: Bearer``.
* The answer is a JSON array of rows (``iox::measurement``, ``time`` without a zone, one
  key per non-null tag or field), turned here into the series of a ``/query`` answer so
  the InfluxQL backend's merging applies unchanged. Which columns are tags comes from
  ``SHOW TAG KEYS``.
* InfluxDB 3 Core bounds what one query may scan (its query file limit, about 72 h of
  data by default). A longer range is read as consecutive pieces of at most
  :data:`MAX_RANGE_NS`, newest first, stopping once ``--limit`` readings are found;
  with ``--every`` the pieces end on window boundaries, so no window is cut in two.
  Without ``--since`` the last :data:`LOOKBACK_NS` are read (and stderr says so).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from gateway.query.backend import (
    QueryArgumentError,
    QueryAuthError,
    QueryDatabaseMissing,
    QueryError,
    QueryRequest,
    Row,
    checked_range,
)
from gateway.query.influxql import InfluxQLBackend
from gateway.query.readings import newest_readings, reading_key
from gateway.query.timespec import MAX_NS, MIN_NS, NS, parse_time

__all__ = ["LOOKBACK_NS", "MAX_RANGE_NS", "InfluxDB3Backend", "split_range"]

MAX_RANGE_NS = 72 * 3600 * NS
"""The longest range one query asks InfluxDB 3 Core for: its default query file limit
(432 Parquet files of 10 minutes) covers 72 h."""
LOOKBACK_NS = 7 * 86400 * NS
"""How far back a query without ``--since`` reads from InfluxDB 3."""

_MEASUREMENT = "iox::measurement"


def split_range(start: int, end: int, span: int, every: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` as consecutive pieces of at most ``span`` ns, oldest first; with
    ``every``, each piece but the last ends on a multiple of ``every`` (a window boundary).

    Raises:
        QueryArgumentError: ``every`` is longer than ``span``.
    """
    if every is not None and every > span:
        raise QueryArgumentError(
            f"--every: InfluxDB 3 answers at most {span // (3600 * NS)} h per query, so its "
            "windows cannot be longer; use a shorter window or --source local"
        )
    pieces = []
    a = start
    while a < end:
        b = a + span
        if every is not None:
            b -= b % every
        b = min(b, end)
        pieces.append((a, b))
        a = b
    return pieces


class InfluxDB3Backend(InfluxQLBackend):
    """InfluxDB 3 (Core) at ``url``, database ``database``, read with ``token``."""

    def __init__(
        self,
        url: str,
        database: str,
        *,
        token: str,
        timeout: float = 10.0,
        verify_tls: bool = True,
        max_range_ns: int = MAX_RANGE_NS,
        lookback_ns: int = LOOKBACK_NS,
    ) -> None:
        super().__init__(url, database, timeout=timeout, verify_tls=verify_tls)
        self._headers["Authorization"] = f"Bearer {token}"
        self.max_range_ns = max_range_ns
        self.lookback_ns = lookback_ns
        self.notes: list[str] = []
        """What the user should know about how the answer was read (stderr)."""
        self._tags: dict[str, set[str]] | None = None
        self._keys: dict[str | None, dict[str, list[tuple[str, str]]]] = {}

    @property
    def description(self) -> str:
        return f'InfluxDB 3 {self.url} (database "{self.database}", /api/v3/query_influxql)'

    def rows(self, req: QueryRequest) -> list[Row]:
        start, end = checked_range(req)
        if end == MAX_NS:
            end = time.time_ns()
        if start == MIN_NS:
            start = end - self.lookback_ns
            self.notes.append(
                f"InfluxDB 3 answers at most {self.max_range_ns // (3600 * NS)} h per query: "
                f"reading the last {self.lookback_ns // (86400 * NS)} days (--since for more)"
            )
        pieces = split_range(start, end, self.max_range_ns, req.every_ns)
        found: list[list[Row]] = []  # per piece, newest piece first
        readings: set[Any] = set()
        for a, b in reversed(pieces):
            part = super().rows(replace(req, start_ns=a, end_ns=b))
            found.append(part)
            readings.update(reading_key(r) for r in part)
            if not req.latest and req.limit is not None and len(readings) >= req.limit:
                break
        if req.latest:
            # The newest piece that has a series + field holds its latest value.
            seen: set[tuple[Any, ...]] = set()
            latest = []
            for part in found:
                for row in part:
                    key = (row.measurement, tuple(sorted(row.tags.items())), row.field)
                    if key not in seen:
                        seen.add(key)
                        latest.append(row)
            return newest_readings(sorted(latest, key=lambda r: r.time_ns), req.limit)
        return newest_readings([row for part in reversed(found) for row in part], req.limit)

    def _field_keys(self, req: QueryRequest) -> dict[str, list[tuple[str, str]]]:
        if req.measurement not in self._keys:
            self._keys[req.measurement] = super()._field_keys(req)
        return self._keys[req.measurement]

    def query_all(self, statements: list[str]) -> dict[str, Any]:
        """One request per statement (InfluxDB 3 takes one at a time)."""
        results = []
        for index, statement in enumerate(statements):
            result = self.query(statement)["results"][0]
            results.append({**result, "statement_id": index})
        return {"results": results}

    def query(self, q: str) -> dict[str, Any]:
        """Run one InfluxQL statement; the answer in the shape of ``/query``'s, times in ns.

        Raises:
            QueryConnectError, QueryAuthError, QueryDatabaseMissing, QueryError.
        """
        params = {"db": self.database, "q": q, "format": "json"}
        body = self._get("/api/v3/query_influxql", params, timeout=self.timeout)
        try:
            rows = json.loads(body) if body.strip() else []
        except ValueError:
            raise QueryError(f"InfluxDB 3 {self.url} answered something that is not JSON") from None
        if not isinstance(rows, list):
            raise QueryError(
                f"InfluxDB 3 {self.url} did not answer like /api/v3/query_influxql "
                "(a JSON array of rows); is it InfluxDB 3?"
            )
        if q.startswith("SHOW "):
            series = _show_series(rows)
        else:
            series = _select_series(rows, self._tag_keys())
        return {"results": [{"statement_id": 0, "series": series}]}

    def _tag_keys(self) -> dict[str, set[str]]:
        """Per measurement, its tag keys (``SHOW TAG KEYS``, asked once)."""
        if self._tags is None:
            answer = self.query("SHOW TAG KEYS FROM /.*/")
            self._tags = {}
            for series in answer["results"][0]["series"]:
                keys = self._tags.setdefault(series["name"], set())
                keys.update(str(values[0]) for values in series["values"])
        return self._tags

    def _answer_error(self, status: int, text: str) -> QueryError:
        low = text.lower()
        if status in (401, 403) or "unauthenticated" in low or "unauthorized" in low:
            return QueryAuthError(
                f"InfluxDB 3 {self.url} refused the token (HTTP {status}: {text}); check "
                "token / token_file in [sinks.influxdb] (a token that may read the database)"
            )
        if "database not found" in low or ("database" in low and "does not exist" in low):
            return QueryDatabaseMissing(
                f'InfluxDB 3 {self.url} has no database "{self.database}" ({text}); '
                "check database in [sinks.influxdb]"
            )
        return QueryError(f"InfluxDB 3 {self.url} answered HTTP {status}: {text}")


def _time_ns(value: Any) -> int:
    """A v3 ``time``: RFC 3339 without a zone (UTC), or ns."""
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith(("Z", "z")) and "+" not in text[10:] and "-" not in text[10:]:
        text += "Z"
    return parse_time(text)


def _show_series(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``SHOW ...`` rows → one series per measurement, columns in the answer's order."""
    series: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = str(row.get(_MEASUREMENT, ""))
        columns = [k for k in row if k != _MEASUREMENT]
        found = series.setdefault(name, {"name": name, "columns": columns, "values": []})
        found["values"].append([row.get(c) for c in found["columns"]])
    return list(series.values())


def _select_series(
    rows: list[dict[str, Any]], tag_keys: dict[str, set[str]]
) -> list[dict[str, Any]]:
    """``SELECT`` rows → one series per measurement + tag set (``time``, then the fields
    in the order first seen), values newest first as ``ORDER BY time DESC`` gives them."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    for row in rows:
        name = str(row[_MEASUREMENT])
        tags_of = tag_keys.get(name, set())
        tags = {k: str(v) for k, v in row.items() if k in tags_of}
        key = (name, tuple(sorted(tags.items())))
        found = series.setdefault(key, {"name": name, "tags": tags, "rows": []})
        found["rows"].append(row)
    out = []
    for found in series.values():
        fields: list[str] = []
        tags = found["tags"]
        for row in found["rows"]:
            fields += [
                k
                for k in row
                if k not in (_MEASUREMENT, "time") and k not in tags and k not in fields
            ]
        values = [[_time_ns(row["time"]), *(row.get(f) for f in fields)] for row in found["rows"]]
        values.sort(key=lambda v: v[0], reverse=True)
        out.append(
            {"name": found["name"], "tags": tags, "columns": ["time", *fields], "values": values}
        )
    return out
