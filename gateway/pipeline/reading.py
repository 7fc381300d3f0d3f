"""The values that flow through the gateway: what drivers emit and what the core stores.

Both are small frozen, slotted dataclasses: cheap to build on the hot path and
impossible to change by accident once created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

FieldValue = float | int | bool | str
"""The field types InfluxDB knows: float, integer, boolean and string."""

NO_UNITS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(
        self,
        fields: Mapping[str, object],
        tags: Mapping[str, str] | None = None,
        time_ns: int | None = None,
        measurement: str | None = None,
    ) -> None:
        # What the generated __init__ of a frozen dataclass does, in half the time (one
        # is built per reading): object.__setattr__ per field is the slow part.
        _raw_fields(self, fields)
        _raw_tags(self, {} if tags is None else tags)
        _raw_time(self, time_ns)
        _raw_measurement(self, measurement)


@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(
        self,
        measurement: str,
        tags: Mapping[str, str],
        fields: Mapping[str, FieldValue],
        time_ns: int,
        units: Mapping[str, str] | None = None,
    ) -> None:
        _measurement(self, measurement)
        _tags(self, tags)
        _fields(self, fields)
        _time(self, time_ns)
        _units(self, {} if units is None else units)


def _setter(cls: type, name: str) -> Callable[[object, object], None]:
    """The slot descriptor's own setter: what RawSample and Reading set fields with."""
    setter: Callable[[object, object], None] = vars(cls)[name].__set__
    return setter


_raw_fields = _setter(RawSample, "fields")
_raw_tags = _setter(RawSample, "tags")
_raw_time = _setter(RawSample, "time_ns")
_raw_measurement = _setter(RawSample, "measurement")
_measurement = _setter(Reading, "measurement")
_tags = _setter(Reading, "tags")
_fields = _setter(Reading, "fields")
_time = _setter(Reading, "time_ns")
_units = _setter(Reading, "units")
