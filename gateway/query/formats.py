"""Output of ``sensor-gateway query``: an aligned table, CSV, JSON lines, the summary.

Units (device → field → unit, from the unit catalog) label the table's field columns,
``temperature (degC)``, when every device in the table with that field has the same
unit (a column shared by a °C and a °F device, or by one without a known unit, stays
bare rather than wrong). JSON lines carry the reading's own units in a ``units`` object
when any is known. CSV keeps the bare field names, so a script's columns never change
when units become known.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import timedelta, tzinfo

from gateway.pipeline.reading import FieldValue
from gateway.query.backend import Row, SeriesSummary
from gateway.query.readings import Reading, readings
from gateway.query.timespec import EPOCH, NS, rfc3339

__all__ = [
    "Units",
    "column_units",
    "columns",
    "fit_table",
    "format_csv",
    "format_json",
    "format_summary",
    "format_table",
]

Units = Mapping[str, Mapping[str, str]]
"""Device → field → unit (:func:`gateway.pipeline.unitcatalog.read_units`)."""


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


def _aligned(header: Sequence[str], lines: list[list[str]]) -> str:
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    out = []
    for cells in [header, *lines]:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip())
    return "\n".join(out) + "\n"


_ELLIPSIS = "…"
_MIN_WIDTH = 6
_GAP = 2


def columns(items: Sequence[Reading]) -> tuple[list[str], list[str], list[str]]:
    """The wide output's columns: ``(header, tag keys, field names)``.

    ``time``, ``measurement``, ``device``, then the other tags, then the fields, each
    sorted by name. A field named like a column before it is shown as ``NAME_field``.
    """
    tag_keys = sorted({k for r in items for k in r.tags if k != "device"})
    fields = sorted({f for r in items for f in r.fields})
    taken = {"time", "measurement", "device", *tag_keys}
    shown = [f"{f}_field" if f in taken else f for f in fields]
    return ["time", "measurement", "device", *tag_keys, *shown], tag_keys, fields


def column_units(items: Sequence[Reading], units: Units | None) -> dict[str, str]:
    """Field → unit for the fields whose readings all agree on one known unit."""
    if not units:
        return {}
    found: dict[str, set[str | None]] = {}
    for item in items:
        known = units.get(item.device or "", {})
        for name in item.fields:
            found.setdefault(name, set()).add(known.get(name))
    return {
        name: unit
        for name, seen in found.items()
        if len(seen) == 1 and (unit := next(iter(seen))) is not None
    }


def _cells(item: Reading, tag_keys: list[str], fields: list[str]) -> list[FieldValue | None]:
    return [
        item.measurement,
        item.device,
        *(item.tags.get(k) for k in tag_keys),
        *(item.fields.get(f) for f in fields),
    ]


def fit_table(
    rows: Sequence[Row],
    tz: tzinfo | None = None,
    width: int | None = None,
    units: Units | None = None,
) -> tuple[str, list[str]]:
    """:func:`format_table` and the columns left out because ``width`` was too narrow.

    Too wide a table first has its values cut (``…``), down to their column name's width
    (at least 6; the time never), then loses columns from the right.
    """
    items = readings(rows)
    if not items:
        return "", []
    header, tag_keys, fields = columns(items)
    labels = column_units(items, units)
    first = len(header) - len(fields)
    for i, name in enumerate(fields, start=first):
        if name in labels:
            header[i] = f"{header[i]} ({labels[name]})"
    lines = [
        [_local_ms(item.time_ns, tz), *("" if v is None else _text(v) for v in cells)]
        for item in items
        for cells in [_cells(item, tag_keys, fields)]
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    hidden: list[str] = []
    if width is not None:
        floor = [min(w, max(_MIN_WIDTH, len(name))) for w, name in zip(widths, header, strict=True)]
        floor[0] = widths[0]  # the time is never cut
        keep = len(widths)
        while keep > 2 and sum(floor[:keep]) + _GAP * (keep - 1) > width:
            keep -= 1
        hidden, widths = header[keep:], widths[:keep]
        while sum(widths) + _GAP * (keep - 1) > width:
            widest = max(range(1, keep), key=lambda i: (widths[i] - floor[i], i))
            if widths[widest] <= floor[widest]:
                break
            widths[widest] -= 1
    out = []
    for cells in [header, *lines]:
        shown = [_cut(cell, w).ljust(w) for cell, w in zip(cells, widths, strict=False)]
        out.append((" " * _GAP).join(shown).rstrip())
    return "\n".join(out) + "\n", hidden


def _cut(cell: str, width: int) -> str:
    return cell if len(cell) <= width else cell[: width - 1] + _ELLIPSIS


def format_table(
    rows: Sequence[Row],
    tz: tzinfo | None = None,
    width: int | None = None,
    units: Units | None = None,
) -> str:
    """A wide aligned table: one line per reading (newest last), one column per field,
    labelled with its unit where ``units`` says one for all its readings.

    Times are local (``tz``, default the system's zone; ISO 8601 with ms); missing values
    are blank. ``width``: fit in that many columns (see :func:`fit_table`). ``""`` for no rows.
    """
    return fit_table(rows, tz, width, units)[0]


def format_csv(rows: Sequence[Row]) -> str:
    """CSV with the table's columns; times RFC 3339 in UTC with ns; missing values empty.

    No rows: ``""`` (there are no columns to name)."""
    items = readings(rows)
    if not items:
        return ""
    header, tag_keys, fields = columns(items)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for item in items:
        cells = _cells(item, tag_keys, fields)
        writer.writerow([rfc3339(item.time_ns), *("" if v is None else _text(v) for v in cells)])
    return out.getvalue()


def format_json(rows: Sequence[Row], units: Units | None = None) -> str:
    """JSON lines, one object per reading with the table's columns as keys: ``time``
    (RFC 3339, UTC, ns), ``measurement``, ``device``, tags, fields (their JSON types;
    ``null`` where a reading has not that tag or field); then, when ``units`` knows any
    of the reading's fields, ``units``: field → unit (``_units`` if a column is named so).
    """
    items = readings(rows)
    header, tag_keys, fields = columns(items)
    units_key = "_units" if "units" in header else "units"
    shown = dict(zip(fields, header[len(header) - len(fields) :], strict=True))
    out = []
    for item in items:
        values = [rfc3339(item.time_ns), *_cells(item, tag_keys, fields)]
        obj: dict[str, object] = dict(zip(header, values, strict=True))
        known = (units or {}).get(item.device or "", {})
        if found := {shown[f]: known[f] for f in sorted(item.fields) if f in known}:
            obj[units_key] = found
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
