"""Field types pinned on first sight, per measurement.

InfluxDB fixes a field's type in a shard with the first point written; a later point
with another type is rejected (and in 2.x one bad line rejects a whole batch). The
gateway therefore pins each field's type the first time it sees it (remembered in the
spool across restarts) and coerces or rejects later values at the gateway, so one odd
payload can never poison a batch.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.pipeline.reading import FieldValue, Reading

_TYPE_NAMES = {float: "float", int: "int", bool: "bool", str: "string"}


class FieldTypes:
    """Pins and enforces field types. ``new`` collects pins not yet saved to disk."""

    def __init__(self, known: dict[tuple[str, str], str] | None = None) -> None:
        # measurement → field → type: no key tuple to build per field on the hot path.
        self._types: dict[str, dict[str, str]] = {}
        for (measurement, name), kind in (known or {}).items():
            self._types.setdefault(measurement, {})[name] = kind
        self.new: list[tuple[str, str, str]] = []

    def check(self, reading: Reading) -> tuple[Reading | None, list[tuple[str, str]]]:
        """The reading with coerced fields, and (field, message) for each field dropped."""
        measurement = reading.measurement
        types = self._types.get(measurement)
        if types is None:
            types = self._types[measurement] = {}
        changed: dict[str, FieldValue] | None = None
        problems: list[tuple[str, str]] = []
        for name, value in reading.fields.items():
            actual = _TYPE_NAMES[type(value)]
            pinned = types.get(name)
            if pinned is None:
                types[name] = actual
                self.new.append((measurement, name, actual))
                continue
            if pinned == actual:
                continue
            coerced = _coerce(value, pinned)
            if changed is None:
                changed = dict(reading.fields)
            if coerced is None:
                del changed[name]
                problems.append(
                    (
                        name,
                        f"field {name!r} of {measurement!r} is pinned as {pinned}; "
                        f"{actual} value {value!r} dropped",
                    )
                )
            else:
                changed[name] = coerced
        if changed is None:
            return reading, problems
        if not changed:
            return None, problems
        return replace(reading, fields=changed), problems

    def take_new(self) -> list[tuple[str, str, str]]:
        """Pins made since the last call (to persist)."""
        new, self.new = self.new, []
        return new

    def give_back(self, pins: list[tuple[str, str, str]]) -> None:
        """Pins from :meth:`take_new` that could not be saved: save them next time."""
        self.new = pins + self.new


def _coerce(value: FieldValue, pinned: str) -> FieldValue | None:
    if pinned == "float" and type(value) is int:
        return float(value)
    if pinned == "int" and type(value) is float and value.is_integer():
        return int(value)
    if pinned == "string" and type(value) is not str:
        return str(value).lower() if type(value) is bool else str(value)
    return None
