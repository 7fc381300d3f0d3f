"""Output of ``sensor-gateway query``: an aligned table, CSV, JSON lines, the summary."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import timedelta, tzinfo

from gateway.pipeline.reading import FieldValue
from gateway.query.backend import Row, SeriesSummary
from gateway.query.timespec import EPOCH, NS, rfc3339

__all__ = ["format_csv", "format_json", "format_summary", "format_table"]


def _local_ms(time_ns: int, tz: tzinfo | None) -> str:
    seconds, frac = divmod(time_ns, NS)
    moment = (EPOCH + timedelta(seconds=seconds)).astimezone(tz)
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
