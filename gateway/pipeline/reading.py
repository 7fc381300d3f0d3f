"""The values that flow through the gateway: what drivers emit and what the core stores.

Both are small frozen, slotted dataclasses: cheap to build on the hot path and
impossible to change by accident once created.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

FieldValue = float | int | bool | str
"""The field types InfluxDB knows: float, integer, boolean and string."""

NO_UNITS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class RawSample:
    """What a driver decoded from one frame or payload, before normalization.

    Attributes:
        fields: field name → value as the device reported it.
        tags: extra tags the driver derived (e.g. from an MQTT topic segment).
        time_ns: the device's own timestamp in ns since the epoch, when it has one;
            ``None`` lets the gateway stamp the reading on arrival.
        measurement: a measurement name the driver suggests; the device config wins.
    """

    fields: Mapping[str, object]
    tags: Mapping[str, str] = field(default_factory=dict)
    time_ns: int | None = None
    measurement: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """A normalized reading: one InfluxDB point.

    Its identity is ``measurement + tags + time_ns``; that is what makes replays
    idempotent, so ``time_ns`` is fixed once, before the spool, and never changes.

    ``units`` (field name → unit) is metadata: it is not written to InfluxDB (line
    protocol has no place for it) but kept in the unit catalog and shown by ``query``.
    One mapping per device, shared by its readings.
    """

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time_ns: int
    units: Mapping[str, str] = field(default_factory=dict)
