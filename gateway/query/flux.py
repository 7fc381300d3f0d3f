"""The InfluxDB 2.x backend: Flux through influxdb-client's query API (``api = "v2"``).

Flux is built from quoted parts only: every name and value is a Flux string literal
(:func:`flux_string`: ``\\``, ``"``, ``${`` and control characters escaped), tags are
read as ``r["key"]``, so a device name is always a value, never Flux. InfluxDB 2.x OSS
has no parameterized queries (only InfluxDB Cloud has), hence the escaping.

influxdb-client is imported inside the calls: the daemon never imports this module, and
``query`` pays the import only when it asks InfluxDB 2.x. The calls block (the sync
client): this serves a CLI command, not the daemon.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

from gateway.pipeline.reading import FieldValue
from gateway.query.backend import (
    QueryArgumentError,
    QueryAuthError,
    QueryConnectError,
    QueryDatabaseMissing,
    QueryError,
    QueryRequest,
    Row,
    SeriesSummary,
    checked_range,
)
from gateway.query.readings import newest_readings, take_readings
from gateway.query.timespec import MAX_NS, MIN_NS, parse_time, rfc3339

__all__ = ["FluxBackend", "build_flux", "build_summary", "flux_string"]

DEVICE_TAG = "device"
_PING_TIMEOUT_S = 2.0
# Columns of a Flux answer that are not tags.
_NOT_TAGS = frozenset(
    {"result", "table", "_start", "_stop", "_time", "_value", "_field", "_measurement"}
)
# Aggregates that take numbers only: Flux fails on a string or boolean column where
# InfluxQL leaves it out, so those are filtered out first (types.isNumeric).
_NUMERIC_AGGS = frozenset({"mean", "sum", "min", "max"})
_EPOCH = "1970-01-01T00:00:00Z"
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def flux_string(value: str) -> str:
    """``value`` as a Flux string literal: ``"..."`` with ``\\``, ``"``, ``${`` (string
    interpolation) and line breaks/tabs escaped."""
    out = "".join(_ESCAPES.get(ch, ch) for ch in value)
    return '"' + out.replace("${", "\\${") + '"'


def _time(time_ns: int) -> str:
    """A Flux time literal (RFC 3339 with ns)."""
    return rfc3339(time_ns)


def build_flux(req: QueryRequest, bucket: str) -> str:
    """The Flux script that answers ``req`` from ``bucket``: one table per series and
    field, each its newest ``req.limit`` values (or windows), or its newest value
    (``latest``). The backend merges the tables and keeps the newest ``req.limit``
    readings overall."""
    start, end = checked_range(req)
    numeric = req.agg in _NUMERIC_AGGS
    lines = ['import "types"', ""] if numeric else []
    bounds = f"start: {_time(start) if start != MIN_NS else _EPOCH}"
    if end != MAX_NS:
        bounds += f", stop: {_time(end)}"
    lines += [f"from(bucket: {flux_string(bucket)})", f"  |> range({bounds})"]
    if req.measurement is not None:
        lines.append(f"  |> filter(fn: (r) => r._measurement == {flux_string(req.measurement)})")
    if req.device is not None:
        tag = f"r[{flux_string(DEVICE_TAG)}]"
        lines.append(f"  |> filter(fn: (r) => {tag} == {flux_string(req.device)})")
    if req.fields:
        wanted = " or ".join(f"r._field == {flux_string(f)}" for f in req.fields)
        lines.append(f"  |> filter(fn: (r) => {wanted})")
    if req.every_ns is not None and req.agg is not None:
        if numeric:
            lines.append("  |> filter(fn: (r) => types.isNumeric(v: r._value))")
        lines.append(
            f"  |> aggregateWindow(every: {req.every_ns}ns, fn: {req.agg}, "
            'createEmpty: false, timeSrc: "_start")'
        )
    if req.latest:
        lines.append("  |> last()")
    elif req.limit is not None:
        lines.append(f"  |> tail(n: {req.limit})")
    return "\n".join(lines) + "\n"


def build_summary(bucket: str) -> str:
    """The Flux script behind ``--list``: per series and field its count, first and last
    time (three results, named ``count``, ``first`` and ``last``)."""
    return (
        f"data = from(bucket: {flux_string(bucket)})\n"
        f"  |> range(start: {_EPOCH})\n"
        'data |> count() |> yield(name: "count")\n'
        'data |> first() |> yield(name: "first")\n'
        'data |> last() |> yield(name: "last")\n'
    )


class FluxBackend:
    """An InfluxDB 2.x answering Flux at ``url`` (``/api/v2/query``): ``org``, ``bucket``,
    ``token`` (sent as ``Authorization: Token``, never part of a message)."""

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str,
        *,
        timeout: float = 10.0,
        verify_tls: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self.timeout = timeout
        self.verify_tls = verify_tls
        self._token = token

    @property
    def description(self) -> str:
        return f'InfluxDB {self.url} (bucket "{self.bucket}", Flux)'

    def reachable(self) -> str | None:
        """``None`` when the server answers ``/ping``, else why not (for the user)."""
        request = urllib.request.Request(f"{self.url}/ping")
        context = None
        if self.url.startswith("https:") and not self.verify_tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        try:
            with urllib.request.urlopen(request, timeout=_PING_TIMEOUT_S, context=context):
                pass
        except urllib.error.HTTPError:
            return None  # it answered, if not with 204
        except (urllib.error.URLError, OSError) as err:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            if isinstance(reason, TimeoutError):
                reason = f"no answer within {_PING_TIMEOUT_S:g} s"
            return f"cannot connect to InfluxDB at {self.url}: {reason}"
        return None

    def rows(self, req: QueryRequest) -> list[Row]:
        records = self.records(build_flux(req, self.bucket))
        rows = [_row(values) for values in records if values.get("_value") is not None]
        if req.every_ns is not None:
            # The first window of a range that starts mid-window is timed at the range's
            # start: put it at its window's start, as InfluxQL and the local store do.
            every = req.every_ns
            rows = [r._replace(time_ns=r.time_ns - r.time_ns % every) for r in rows]
        rows.sort(key=_order)
        if req.latest:
            return newest_readings(rows, req.limit)
        picked = list(take_readings(reversed(rows), req.limit))
        picked.reverse()
        return picked

    def summary(self) -> list[SeriesSummary]:
        counts: dict[tuple[str, str | None, str], list[int]] = {}
        for values in self.records(build_summary(self.bucket)):
            row_key = (values["_measurement"], values.get(DEVICE_TAG) or None, values["_field"])
            found = counts.setdefault(row_key, [0, MAX_NS, MIN_NS])
            if values["result"] == "count":
                found[0] += int(values["_value"])
            elif values["result"] == "first":
                found[1] = min(found[1], values["_time"])
            else:
                found[2] = max(found[2], values["_time"])
        return [
            SeriesSummary(m, d, f, n, first, last)
            for (m, d, f), (n, first, last) in sorted(
                counts.items(), key=lambda item: (item[0][0], item[0][1] or "", item[0][2])
            )
            if n
        ]

    def records(self, flux: str) -> list[dict[str, Any]]:
        """Run ``flux``; every record's columns (``_time`` in ns).

        Raises:
            QueryConnectError, QueryAuthError, QueryDatabaseMissing, QueryError.
        """
        if not self.org:
            raise QueryArgumentError(
                '[sinks.influxdb]: org is needed to query InfluxDB 2.x (api = "v2") with Flux'
            )
        try:
            from influxdb_client.client.flux_csv_parser import FluxQueryException
            from influxdb_client.client.influxdb_client import InfluxDBClient
            from influxdb_client.rest import ApiException
        except ImportError:
            raise QueryArgumentError(
                '--source influxdb: querying InfluxDB 2.x (api = "v2") needs the '
                "influxdb-client package: pip install 'influxdb-client>=1.40'"
            ) from None
        client = InfluxDBClient(
            url=self.url,
            token=self._token,
            org=self.org,
            timeout=int(self.timeout * 1000),
            verify_ssl=self.verify_tls,
        )
        try:
            with _nanosecond_times():
                tables = client.query_api().query(flux, org=self.org)
                return [record.values for table in tables for record in table.records]
        except ApiException as err:
            raise self._answer_error(err.status or 0, _message(err)) from None
        except FluxQueryException as err:
            raise QueryError(f"InfluxDB {self.url} failed the Flux query: {err.message}") from None
        except Exception as err:  # urllib3's connection errors and OSError
            if _is_connect_error(err):
                raise QueryConnectError(
                    f"cannot connect to InfluxDB at {self.url}: {_reason(err, self.timeout)}"
                ) from None
            raise
        finally:
            client.close()  # type: ignore[no-untyped-call]

    def _answer_error(self, status: int, text: str) -> QueryError:
        low = text.lower()
        if status in (401, 403) or "unauthorized" in low:
            return QueryAuthError(
                f"InfluxDB {self.url} refused the credentials (HTTP {status}: {text}); check "
                "token / token_file (a token that may read the bucket) in [sinks.influxdb]"
            )
        if status == 404 or "not found" in low:
            return QueryDatabaseMissing(
                f'InfluxDB {self.url} has no bucket "{self.bucket}" in the organization '
                f'"{self.org}" ({text}); check bucket and org in [sinks.influxdb]'
            )
        if status == 400:
            return QueryError(f"InfluxDB {self.url} rejected the Flux query (HTTP 400: {text})")
        return QueryError(f"InfluxDB {self.url} answered HTTP {status}: {text}")


def _order(row: Row) -> tuple[int, str, str, list[tuple[str, str]], str]:
    """Oldest first; ties in series order (measurement, device, tags), then field."""
    return row.time_ns, row.measurement, row.device or "", sorted(row.tags.items()), row.field


def _row(values: dict[str, Any]) -> Row:
    tags = {
        k: str(v) for k, v in values.items() if k not in _NOT_TAGS and v is not None and v != ""
    }
    value: FieldValue = values["_value"]
    return Row(
        values["_time"], values["_measurement"], tags.get(DEVICE_TAG), tags, values["_field"], value
    )


def _message(err: Any) -> str:
    """What the server said: the ``message`` of its JSON answer, else the reason."""
    body = getattr(err, "body", None)
    if body:
        text = body.decode(errors="replace") if isinstance(body, bytes) else str(body)
        with contextlib.suppress(ValueError, AttributeError):
            return str(json.loads(text).get("message") or text).strip()
        return text.strip()
    return str(getattr(err, "message", None) or err.reason or "no message")


def _is_connect_error(err: Exception) -> bool:
    import urllib3.exceptions

    return isinstance(err, urllib3.exceptions.HTTPError | OSError)


def _reason(err: Exception, timeout: float) -> str:
    import urllib3.exceptions

    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        err = err.reason
    if isinstance(err, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError too
        return str(err).rpartition(": ")[2]  # "[Errno 111] Connection refused"
    if isinstance(err, urllib3.exceptions.TimeoutError | TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(err)


@contextlib.contextmanager
def _nanosecond_times() -> Iterator[None]:
    """While a query's answer is parsed, its times are read as ns since the epoch:
    influxdb-client would make them ``datetime`` values, which keep only µs. Its date
    helper is the documented place to change that (``influxdb_client.client.util.
    date_utils``); the previous one is put back afterwards."""
    from influxdb_client.client.util import date_utils

    class NanosecondDates(date_utils.DateHelper):
        def parse_date(self, date_string: str) -> Any:
            return parse_time(date_string)

    previous = date_utils.get_date_helper()
    date_utils.date_helper = NanosecondDates()  # type: ignore[assignment]
    try:
        yield
    finally:
        date_utils.date_helper = previous  # type: ignore[assignment]
