"""The InfluxDB backend: InfluxQL over HTTP ``/query``.

Works with InfluxDB 1.x (database + retention policy, user + password), 2.x (the
bucket through its DBRP mapping, a token) and 3.x (the database, a token). Queries are
built from quoted parts only: identifiers in ``"..."`` and strings in ``'...'`` with
``\\``, the quote and newlines escaped (:func:`quote_ident`, :func:`quote_string`), so a
device name is always a value, never InfluxQL.

The HTTP calls are blocking (``urllib``): this is used by a CLI command, not the daemon.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from gateway.pipeline.reading import FieldValue
from gateway.query.backend import (
    QueryAuthError,
    QueryConnectError,
    QueryDatabaseMissing,
    QueryError,
    QueryRequest,
    Row,
    SeriesSummary,
    checked_range,
)
from gateway.query.readings import take_readings
from gateway.query.timespec import MAX_NS, MIN_NS

__all__ = ["InfluxQLBackend", "build_select", "quote_ident", "quote_string"]

DEVICE_TAG = "device"
_PING_TIMEOUT_S = 2.0


def _escape(text: str, quote: str) -> str:
    return text.replace("\\", "\\\\").replace(quote, "\\" + quote).replace("\n", "\\n")


def quote_ident(name: str) -> str:
    """``name`` as an InfluxQL identifier: ``"..."`` with ``\\``, ``"`` and newlines escaped."""
    return '"' + _escape(name, '"') + '"'


def quote_string(value: str) -> str:
    """``value`` as an InfluxQL string literal: ``'...'`` with ``\\``, ``'`` and newlines escaped."""
    return "'" + _escape(value, "'") + "'"


def build_select(req: QueryRequest, retention_policy: str = "") -> str:
    """The one InfluxQL ``SELECT`` statement that answers ``req``.

    Series are grouped by every tag (``GROUP BY *``), so each answer series is one
    measurement + tag set, with one column per field. ``LIMIT`` applies per series; the
    backend merges the series and keeps the newest ``req.limit`` overall.
    """
    start, end = checked_range(req)
    fields = list(req.fields or ())
    if req.agg is not None:
        if fields:
            what = ", ".join(f"{req.agg}({quote_ident(f)}) AS {quote_ident(f)}" for f in fields)
        else:
            what = f"{req.agg}(*)"
    else:
        what = ", ".join(quote_ident(f) for f in fields) if fields else "*"
    source = quote_ident(req.measurement) if req.measurement is not None else "/.*/"
    if retention_policy:
        source = f"{quote_ident(retention_policy)}.{source}"
    where = []
    if req.device is not None:
        where.append(f"{quote_ident(DEVICE_TAG)} = {quote_string(req.device)}")
    if start != MIN_NS:
        where.append(f"time >= {start}")
    if end != MAX_NS:
        where.append(f"time < {end}")
    sql = f"SELECT {what} FROM {source}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if req.every_ns is not None:
        sql += f" GROUP BY time({req.every_ns}ns), * fill(none)"
    else:
        sql += " GROUP BY *"
    sql += " ORDER BY time DESC"
    if req.latest:
        sql += " LIMIT 1"
    elif req.limit is not None:
        sql += f" LIMIT {req.limit}"
    return sql


class InfluxQLBackend:
    """An InfluxDB server answering InfluxQL at ``url + /query``, database ``database``.

    Credentials: ``token`` (2.x, 3.x: ``Authorization: Token``) or ``username`` +
    ``password`` (1.x: HTTP basic auth). Neither is ever part of a message.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str = "",
        token: str = "",
        username: str = "",
        password: str = "",
        timeout: float = 10.0,
        verify_tls: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.timeout = timeout
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        elif username:
            pair = f"{username}:{password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._ssl: ssl.SSLContext | None = None
        if self.url.startswith("https:") and not verify_tls:
            self._ssl = ssl.create_default_context()
            self._ssl.check_hostname = False
            self._ssl.verify_mode = ssl.CERT_NONE

    @property
    def description(self) -> str:
        return f'InfluxDB {self.url} (database "{self.database}")'

    def reachable(self) -> str | None:
        """``None`` when the server answers ``/ping``, else why not (for the user)."""
        try:
            self._get("/ping", {}, timeout=_PING_TIMEOUT_S)
        except QueryConnectError as err:
            return str(err)
        except QueryError:
            return None  # it answered, if not with 204
        return None

    def rows(self, req: QueryRequest) -> list[Row]:
        try:
            return self._rows(req)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise self._not_influxql(err) from None

    def summary(self) -> list[SeriesSummary]:
        try:
            return self._summary()
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as err:
            raise self._not_influxql(err) from None

    def _not_influxql(self, err: Exception) -> QueryError:
        return QueryError(
            f"{self.url} did not answer like InfluxDB's /query ({type(err).__name__}: {err}); "
            "is it InfluxDB? (VictoriaMetrics, for one, does not answer InfluxQL: use "
            "--source local)"
        )

    def _rows(self, req: QueryRequest) -> list[Row]:
        keys = self._field_keys(req)
        floats = {
            m: {f for f, kind in fields if kind == "float" or req.agg == "mean"}
            for m, fields in keys.items()
        }
        if req.latest:
            # One statement per measurement + field: selecting a single field skips the
            # points without it, so each field's newest value comes with its own time.
            wanted = set(req.fields or ())
            statements = [
                build_select(
                    replace(req, measurement=m, fields=[f], limit=1), self.retention_policy
                )
                for m, fields in sorted(keys.items())
                for f, _ in fields
                if not wanted or f in wanted
            ]
            if not statements:
                return []
        else:
            statements = [build_select(req, self.retention_policy)]
        answer = self.query_all(statements)
        streams = [
            _series_rows(rank, series, req.agg, floats.get(series["name"], set()))
            for rank, series in enumerate(_sorted_series(answer))
        ]
        merged = (row for *_, row in heapq.merge(*streams, reverse=True))
        picked = list(take_readings(merged, req.limit))
        picked.reverse()
        return picked

    def _field_keys(self, req: QueryRequest) -> dict[str, list[tuple[str, str]]]:
        """Per measurement (of ``req``'s), its fields and their types (``SHOW FIELD KEYS``):
        InfluxDB's JSON writes the float 20.0 as ``20``, and ``mean`` is always a float."""
        source = quote_ident(req.measurement) if req.measurement is not None else "/.*/"
        if self.retention_policy:
            source = f"{quote_ident(self.retention_policy)}.{source}"
        answer = self.query(f"SHOW FIELD KEYS FROM {source}")
        return {
            series["name"]: [(str(key), str(kind)) for key, kind in series.get("values", [])]
            for series in _series(answer)
        }

    def _summary(self) -> list[SeriesSummary]:
        counts = self.query('SELECT count(*) FROM /.*/ GROUP BY "device"')
        keys = self._field_keys(QueryRequest())
        # First and last time per field: one single-field statement each (selecting one
        # field skips the points without it).
        ends: dict[tuple[str, str | None, str], list[int]] = {}
        for order in ("ASC", "DESC"):
            statements = [
                f"SELECT {quote_ident(f)} FROM {self._from(m)} GROUP BY {quote_ident(DEVICE_TAG)} "
                f"ORDER BY time {order} LIMIT 1"
                for m, fields in sorted(keys.items())
                for f, _ in fields
            ]
            for series in _series(self.query_all(statements)) if statements else ():
                field = series["columns"][1]
                key = (series["name"], _device(series), field)
                ends.setdefault(key, []).append(int(series["values"][0][0]))
        out = []
        for series in _series(counts):
            for column, count in zip(series["columns"][1:], series["values"][0][1:], strict=True):
                key = (series["name"], _device(series), column.removeprefix("count_"))
                if count and key in ends:
                    out.append(SeriesSummary(*key, count, min(ends[key]), max(ends[key])))
        return sorted(out, key=lambda s: (s.measurement, s.device or "", s.field))

    def _from(self, measurement: str) -> str:
        source = quote_ident(measurement)
        if self.retention_policy:
            source = f"{quote_ident(self.retention_policy)}.{source}"
        return source

    def query_all(self, statements: list[str]) -> dict[str, Any]:
        """Run several statements (in one request: ``;``-separated); one answer with a
        result per statement."""
        return self.query(";".join(statements))

    def query(self, q: str) -> dict[str, Any]:
        """Run one InfluxQL statement; the decoded answer, times in ns.

        Raises:
            QueryConnectError, QueryAuthError, QueryDatabaseMissing, QueryError.
        """
        params = {"q": q, "db": self.database, "epoch": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        body = self._get("/query", params, timeout=self.timeout)
        try:
            answer: dict[str, Any] = json.loads(body)
        except ValueError:
            raise QueryError(f"InfluxDB {self.url} answered something that is not JSON") from None
        errors = [answer["error"]] if "error" in answer else []
        errors += [r["error"] for r in answer.get("results", []) if "error" in r]
        if errors:
            raise self._answer_error(200, "; ".join(map(str, errors)))
        return answer

    def _get(self, path: str, params: Mapping[str, str], timeout: float) -> bytes:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self._ssl) as resp:
                data: bytes = resp.read()
                return data
        except urllib.error.HTTPError as err:
            text = err.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):
                decoded = json.loads(text)
                text = str(decoded.get("error") or decoded.get("message") or text)
            raise self._answer_error(err.code, text.strip()) from None
        except (urllib.error.URLError, OSError) as err:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            if isinstance(reason, socket.timeout | TimeoutError):
                reason = f"no answer within {timeout:g} s"
            raise QueryConnectError(f"cannot connect to InfluxDB at {self.url}: {reason}") from None

    def _answer_error(self, status: int, text: str) -> QueryError:
        low = text.lower()
        if status in (401, 403) or "authorization failed" in low or "unauthorized" in low:
            return QueryAuthError(
                f"InfluxDB {self.url} refused the credentials (HTTP {status}: {text}); check "
                "username + password / password_file, or token / token_file in [sinks.influxdb]"
            )
        if "database not found" in low or ("bucket" in low and "not found" in low):
            return QueryDatabaseMissing(
                f'InfluxDB {self.url} has no database "{self.database}" ({text}); for 2.x '
                "the bucket needs a DBRP mapping (influx v1 dbrp create)"
            )
        return QueryError(f"InfluxDB {self.url} answered HTTP {status}: {text}")


def _device(series: Mapping[str, Any]) -> str | None:
    return (series.get("tags") or {}).get(DEVICE_TAG) or None


def _series(answer: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    for result in answer.get("results", []):
        yield from result.get("series", [])


def _sorted_series(answer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The answer's series in a stable order: measurement, then device, then tags."""

    def key(series: dict[str, Any]) -> tuple[str, str, list[tuple[str, str]]]:
        tags = {k: v for k, v in (series.get("tags") or {}).items() if v != ""}
        return series["name"], tags.get(DEVICE_TAG, ""), sorted(tags.items())

    return sorted(_series(answer), key=key)


def _series_rows(
    rank: int, series: dict[str, Any], agg: str | None, floats: set[str]
) -> Iterator[tuple[int, int, int, Row]]:
    """One series' values as rows, newest first (the answer is ``ORDER BY time DESC``),
    each keyed ``(time, series rank, -column)`` for a stable merge."""
    # An empty tag value is how InfluxQL says "this series has not that tag".
    tags = {k: v for k, v in (series.get("tags") or {}).items() if v != ""}
    device = tags.get(DEVICE_TAG)
    columns = series["columns"]
    prefix = f"{agg}_" if agg else ""
    names = [c.removeprefix(prefix) for c in columns]
    order = sorted(range(1, len(columns)), key=lambda i: names[i], reverse=True)
    for values in series.get("values", []):
        time_ns = int(values[0])
        for i in order:
            value: FieldValue | None = values[i]
            if value is None:
                continue
            if agg != "count" and names[i] in floats and type(value) is int:
                value = float(value)
            yield time_ns, rank, -i, Row(time_ns, series["name"], device, tags, names[i], value)
