"""Reading stored readings back: backends (the local store, InfluxDB over InfluxQL),
output formats, time parsing."""

from gateway.query.backend import (
    Backend,
    QueryArgumentError,
    QueryError,
    QueryRequest,
    Row,
    SeriesSummary,
)
from gateway.query.formats import format_csv, format_json, format_summary, format_table
from gateway.query.local import LocalBackend, run_query, summary
from gateway.query.timespec import parse_every, parse_time, rfc3339

__all__ = [
    "Backend",
    "LocalBackend",
    "QueryArgumentError",
    "QueryError",
    "QueryRequest",
    "Row",
    "SeriesSummary",
    "format_csv",
    "format_json",
    "format_summary",
    "format_table",
    "parse_every",
    "parse_time",
    "rfc3339",
    "run_query",
    "summary",
]
