"""Reading stored readings back: the local store backend, output formats, time parsing."""

from gateway.query.local import (
    QueryError,
    QueryRequest,
    Row,
    SeriesSummary,
    format_csv,
    format_json,
    format_summary,
    format_table,
    parse_time,
    rfc3339,
    run_query,
    summary,
)

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
