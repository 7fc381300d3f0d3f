"""Rows (one per field value) gathered into readings (one per time + series), the unit
that ``--limit`` counts and that the wide output prints one line for."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from gateway.pipeline.reading import FieldValue
from gateway.query.backend import Row

__all__ = ["Reading", "newest_readings", "reading_key", "readings", "take_readings"]

ReadingKey = tuple[int, str, tuple[tuple[str, str], ...]]


def reading_key(row: Row) -> ReadingKey:
    """What makes rows one reading: time, measurement and every tag."""
    return row.time_ns, row.measurement, tuple(sorted(row.tags.items()))


@dataclass(slots=True)
class Reading:
    """One time + series, with its fields."""

    time_ns: int
    measurement: str
    device: str | None
    tags: dict[str, str]
    fields: dict[str, FieldValue] = field(default_factory=dict)


def readings(rows: Iterable[Row]) -> list[Reading]:
    """``rows`` (oldest first) gathered into readings, oldest first (ties: first seen)."""
    found: dict[ReadingKey, Reading] = {}
    for row in rows:
        key = reading_key(row)
        reading = found.get(key)
        if reading is None:
            reading = found[key] = Reading(row.time_ns, row.measurement, row.device, row.tags)
        reading.fields[row.field] = row.value
    return sorted(found.values(), key=lambda r: r.time_ns)


def take_readings(newest_first: Iterable[Row], limit: int | None) -> Iterator[Row]:
    """The rows of the newest ``limit`` readings of ``newest_first`` (all when ``None``);
    stops reading its input once past them."""
    seen: set[ReadingKey] = set()
    for row in newest_first:
        key = reading_key(row)
        if key not in seen:
            if limit is not None and len(seen) >= limit:
                return
            seen.add(key)
        yield row


def newest_readings(rows: Sequence[Row], limit: int | None) -> list[Row]:
    """The rows (oldest first) of the newest ``limit`` readings among ``rows``."""
    picked = list(take_readings(reversed(rows), limit))
    picked.reverse()
    return picked
