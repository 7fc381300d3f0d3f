"""Normalization: turn a driver's RawSample into a Reading. Pure: no I/O, no asyncio.

Each field configured in ``fields`` goes through, in this order: calibration
(``value * scale + offset``), unit conversion, range check, rounding, cast. The
calibration and the conversion are folded into one multiply-add when the
Normalizer is built, so ``apply`` does no per-field set-up work.

Defaults keep InfluxDB's field types stable: any int or float becomes a float (a
JSON ``21`` followed by ``21.5`` must not cause a type conflict), bools stay bools,
strings stay strings. A value that cannot be normalized drops that field only, with
a reason code; the reading survives while any field remains.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Final, Literal, NamedTuple, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.pipeline.reading import FieldValue, RawSample, Reading
from gateway.pipeline.units import dimension, scale_offset

__all__ = [
    "DropReason",
    "FieldRule",
    "NormalizeConfig",
    "NormalizeResult",
    "Normalizer",
    "field_units",
]

DropReason = Literal["out_of_range", "not_numeric", "nan", "type", "duplicate"]
"""Why a field was dropped: ``out_of_range`` (outside min/max, drop mode),
``not_numeric`` (a string where a number is needed), ``nan`` (NaN or ±Inf),
``type`` (nested value, bool where a number is needed, non-integral value for an
``int`` field…), ``duplicate`` (an unlisted field named like a configured field's
output)."""

_MODEL_CONFIG: Final = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class FieldRule(BaseModel):
    """How to normalize one field, keyed in NormalizeConfig by the driver's field name.

    Attributes:
        name: the field name to write instead of the source name.
        scale: raw calibration factor, applied first: ``value * scale + offset``.
        offset: raw calibration offset.
        unit: the unit the device reports. Alone it only labels the field (shown by
            ``query``, kept in the state dir's unit catalog); with ``to_unit`` the
            value is converted.
        to_unit: the unit to store; needs ``unit``.
        min: lowest valid value, checked after conversion.
        max: highest valid value, checked after conversion.
        round: decimal places, applied last (after the range check).
        type: the stored type; ``None`` means numbers become floats and bools and
            strings stay as they are. Any numeric option (scale, offset, unit, min,
            max, round) makes the field numeric: numeric strings like ``"21.5"`` are
            parsed and others dropped as ``not_numeric``. ``int`` drops a value that
            is not integral (after rounding) as ``type``.
    """

    model_config = _MODEL_CONFIG

    name: str | None = Field(default=None, min_length=1)
    scale: float = 1.0
    offset: float = 0.0
    # to_unit first: unit's check depends on it (a label may be any unit, a unit to
    # convert from must be known).
    to_unit: str | None = None
    unit: str | None = Field(default=None, min_length=1)
    min: float | None = None
    max: float | None = None
    round: int | None = None
    type: Literal["float", "int", "bool", "string"] | None = None

    @field_validator("to_unit")
    @classmethod
    def _known_to_unit(cls, to_unit: str | None) -> str | None:
        if to_unit is not None:
            dimension(to_unit)  # raises UnitError, a ValueError, naming the unit
        return to_unit

    @field_validator("unit")
    @classmethod
    def _convertible(cls, unit: str | None, info: ValidationInfo) -> str | None:
        to_unit = info.data.get("to_unit")  # absent when it failed its own validation
        if unit is not None and to_unit is not None:
            scale_offset(unit, to_unit)  # unknown unit, or a different dimension
        elif unit is not None and "to_unit" not in info.data:
            dimension(unit)
        return unit

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.to_unit is not None and self.unit is None:
            msg = "to_unit needs unit: the unit the device reports, to convert from"
            raise ValueError(msg)
        if self.scale == 0:
            msg = "scale must not be 0"
            raise ValueError(msg)
        if self.min is not None and self.max is not None and self.min > self.max:
            msg = f"min ({self.min}) is greater than max ({self.max})"
            raise ValueError(msg)
        if self.type in ("bool", "string") and self.numeric:
            msg = (
                f'type "{self.type}" cannot be combined with scale, offset, unit, min, max or round'
            )
            raise ValueError(msg)
        return self

    @property
    def numeric(self) -> bool:
        """Whether the rule treats the field as a number (see ``type``)."""
        return (
            self.type in ("float", "int")
            or self.scale != 1.0
            or self.offset != 0.0
            or self.unit is not None
            or self.min is not None
            or self.max is not None
            or self.round is not None
        )


class NormalizeConfig(BaseModel):
    """A device's normalization settings.

    Attributes:
        measurement: the measurement to write; unset falls back to the driver's
            suggestion, then to the device name.
        tags: static tags. They win over tags the driver derives (e.g. from an MQTT
            topic): the configuration is the operator's explicit word.
        fields: rules keyed by the source field name, as the driver reports it.
        keep_unlisted_fields: pass fields without a rule through with the default
            treatment; False keeps only the fields listed in ``fields``.
        exclude_fields: source fields to leave out (silently, not counted as drops).
        out_of_range: ``drop`` removes an out-of-range field and counts it;
            ``flag`` keeps it and adds the boolean field ``<name>_out_of_range =
            true`` to that reading (absent when in range, so the common case costs
            no extra field).
        max_clock_skew_s: a device timestamp further than this from the gateway's
            clock is replaced by the arrival time and counted as clock skew.
        device_tag: the tag key carrying the device name; None adds no device tag.
            It wins over a driver tag of the same key; a static tag of the same key
            is a configuration error.
    """

    model_config = _MODEL_CONFIG

    measurement: str | None = Field(default=None, min_length=1)
    tags: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, FieldRule] = Field(default_factory=dict)
    keep_unlisted_fields: bool = True
    exclude_fields: list[str] = Field(default_factory=list)
    out_of_range: Literal["drop", "flag"] = "drop"
    max_clock_skew_s: float = Field(default=300.0, gt=0)
    device_tag: str | None = Field(default="device", min_length=1)

    @field_validator("tags")
    @classmethod
    def _no_empty_tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            if not key or not value:
                msg = f"tag keys and values must not be empty (got {key!r} = {value!r})"
                raise ValueError(msg)
        return tags

    @model_validator(mode="after")
    def _no_conflicts(self) -> Self:
        if self.device_tag is not None and self.device_tag in self.tags:
            msg = (
                f'tags["{self.device_tag}"] clashes with device_tag = "{self.device_tag}"; '
                "set device_tag to another key, or to null to use the static tag"
            )
            raise ValueError(msg)
        if both := sorted(set(self.exclude_fields) & self.fields.keys()):
            msg = f"fields both configured and excluded: {', '.join(both)}"
            raise ValueError(msg)
        writers: dict[str, str] = {}
        for source, rule in self.fields.items():
            outputs = [rule.name or source]
            if self.out_of_range == "flag" and (rule.min is not None or rule.max is not None):
                outputs.append(f"{outputs[0]}_out_of_range")
            for out in outputs:
                if out in writers:
                    msg = f'fields "{writers[out]}" and "{source}" would both write field "{out}"'
                    raise ValueError(msg)
                writers[out] = source
        return self


class NormalizeResult(NamedTuple):
    """What ``Normalizer.apply`` made of one sample (a tuple: one per reading, built
    in a third of a frozen dataclass's time).

    Attributes:
        reading: the reading, or None when no field survived.
        dropped: ``(source field, reason)`` per dropped field, for the drop counters.
        clock_skew: the device timestamp was replaced by the arrival time.
        flagged: source fields kept despite being out of range (``flag`` mode).
        clock_offset_ns: with ``clock_skew``, how far the device's time was from the
            arrival time (device minus arrival; +3600 s for a device an hour ahead).
    """

    reading: Reading | None
    dropped: tuple[tuple[str, DropReason], ...] = ()
    clock_skew: bool = False
    flagged: tuple[str, ...] = ()
    clock_offset_ns: int = 0


class _Special:
    __slots__ = ()


class _Drop(_Special):
    __slots__ = ("reason",)

    def __init__(self, reason: DropReason) -> None:
        self.reason: DropReason = reason


class _Flagged(_Special):
    __slots__ = ("value",)

    def __init__(self, value: FieldValue) -> None:
        self.value = value


_Step = Callable[[object], FieldValue | _Special]

_NAN: Final = _Drop("nan")
_TYPE: Final = _Drop("type")
_NOT_NUMERIC: Final = _Drop("not_numeric")
_OUT_OF_RANGE: Final = _Drop("out_of_range")

_BOOL_WORDS: Final = {
    "true": True, "on": True, "yes": True, "1": True,
    "false": False, "off": False, "no": False, "0": False,
}  # fmt: skip


def _passthrough(raw: object) -> FieldValue | _Special:
    """The default: numbers become finite floats, bools and strings stay."""
    # Exact type checks first: the common cases, and cheaper than isinstance chains.
    if type(raw) is float:
        return raw if math.isfinite(raw) else _NAN
    if type(raw) is int:
        return float(raw)
    if type(raw) is str or type(raw) is bool:
        return raw
    if isinstance(raw, str):
        return str(raw)
    if isinstance(raw, numbers.Real):
        value = float(raw)
        return value if math.isfinite(value) else _NAN
    return _TYPE


def _to_bool(raw: object) -> FieldValue | _Special:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = _BOOL_WORDS.get(raw.strip().lower())
        return _TYPE if word is None else word
    if isinstance(raw, numbers.Real):
        if raw == 1 or raw == 0:
            return raw == 1
        return _NAN if not math.isfinite(raw) else _TYPE
    return _TYPE


def _to_string(raw: object) -> FieldValue | _Special:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):
        return str(raw)
    if isinstance(raw, numbers.Real):
        return str(raw) if math.isfinite(raw) else _NAN
    return _TYPE


def _to_number(raw: object, as_int: bool) -> float | int | _Drop:
    """The slow path of a numeric step: strings and number-like objects."""
    if isinstance(raw, bool):
        return _TYPE
    if isinstance(raw, str):
        if as_int:
            try:
                return int(raw)
            except ValueError:
                pass
        try:
            return float(raw)
        except ValueError:
            return _NOT_NUMERIC
    if isinstance(raw, int):
        return int(raw)
    if isinstance(raw, numbers.Real):
        return float(raw)
    return _TYPE


def _numeric_step(rule: FieldRule, flag: bool) -> _Step:
    scale, offset = rule.scale, rule.offset
    if rule.unit is not None and rule.to_unit is not None:
        conv_scale, conv_offset = scale_offset(rule.unit, rule.to_unit)
        scale, offset = scale * conv_scale, offset * conv_scale + conv_offset
    identity = scale == 1.0 and offset == 0.0
    lo = -math.inf if rule.min is None else rule.min
    hi = math.inf if rule.max is None else rule.max
    ndigits = rule.round
    as_int = rule.type == "int"
    isfinite = math.isfinite

    def step(raw: object) -> FieldValue | _Special:
        x: float | int
        if type(raw) is float or type(raw) is int:
            x = raw
        else:
            parsed = _to_number(raw, as_int)
            if isinstance(parsed, _Drop):
                return parsed
            x = parsed
        y: float | int
        if not identity:
            y = x * scale + offset
        elif as_int and type(x) is int:
            y = x  # an int field keeps ints exact (counters beyond 2**53)
        else:
            y = float(x)
        if type(y) is float and not isfinite(y):
            return _NAN
        out_of_range = not lo <= y <= hi
        if out_of_range and not flag:
            return _OUT_OF_RANGE
        if ndigits is not None:
            y = round(y, ndigits)
        if as_int and type(y) is float:
            if not y.is_integer():
                return _TYPE
            y = int(y)
        return _Flagged(y) if out_of_range else y

    return step


def _compile(rule: FieldRule, flag: bool) -> _Step:
    if rule.type == "bool":
        return _to_bool
    if rule.type == "string":
        return _to_string
    if rule.numeric:
        return _numeric_step(rule, flag)
    return _passthrough


def field_units(config: NormalizeConfig, driver_units: Mapping[str, str]) -> dict[str, str]:
    """Stored field name → unit for a device: what its driver declares (under the
    config's renames), then the config's ``unit`` (a label) or ``to_unit`` (converted)."""
    units: dict[str, str] = {}
    for source, unit in driver_units.items():
        rule = config.fields.get(source)
        units[(rule.name if rule else None) or source] = unit
    for source, rule in config.fields.items():
        label = rule.to_unit or rule.unit
        if label is not None:
            units[rule.name or source] = label
    return units


class Normalizer:
    """Normalizes one device's samples; build once per device, then call ``apply``.

    Raises:
        ValueError: the device name is empty.
    """

    __slots__ = (
        "_keep_unlisted",
        "_measurement",
        "_rules",
        "_shadowed",
        "_skew_ns",
        "_skip",
        "_tags",
        "config",
        "device",
        "units",
    )

    def __init__(
        self, device: str, config: NormalizeConfig, driver_units: Mapping[str, str] | None = None
    ) -> None:
        if not device:
            msg = "the device name must not be empty"
            raise ValueError(msg)
        self.device = device
        self.config = config
        flag = config.out_of_range == "flag"
        self._rules: dict[str, tuple[str, _Step, str]] = {}
        written: set[str] = set()
        for source, rule in config.fields.items():
            out = rule.name or source
            flag_name = f"{out}_out_of_range"
            self._rules[source] = (out, _compile(rule, flag), flag_name)
            written.add(out)
            if flag and (rule.min is not None or rule.max is not None):
                written.add(flag_name)
        self._keep_unlisted = config.keep_unlisted_fields
        self._skip = frozenset(config.exclude_fields)
        # An unlisted field must not overwrite what a configured field writes.
        self._shadowed = frozenset(written)
        tags = dict(config.tags)
        if config.device_tag is not None:
            tags[config.device_tag] = device
        self._tags = tags
        self._measurement = config.measurement
        self._skew_ns = round(config.max_clock_skew_s * 1e9)
        self.units: Mapping[str, str] = field_units(config, driver_units or {})
        """Stored field name → unit: the driver's, overridden by the config's."""

    def apply(self, sample: RawSample, now_ns: int, check_skew: bool = True) -> NormalizeResult:
        """Normalize one sample that arrived at ``now_ns`` (ns since the epoch).

        The reading's time is the device's timestamp when it has one within
        ``max_clock_skew_s`` of ``now_ns`` (either way), else ``now_ns``: the time is
        fixed here, never later. ``check_skew=False`` keeps any device timestamp (the
        gateway's own clock is not synchronized, so it cannot judge the device's).
        ``None`` values are skipped silently.
        """
        fields: dict[str, FieldValue] = {}
        dropped: list[tuple[str, DropReason]] | None = None
        flagged: list[str] | None = None
        rules = self._rules
        keep_unlisted = self._keep_unlisted
        for source, raw in sample.fields.items():
            if raw is None:
                continue
            rule = rules.get(source)
            if rule is not None:
                out, step, flag_name = rule
            elif not keep_unlisted or source in self._skip:
                continue
            elif source in self._shadowed:
                dropped = dropped or []
                dropped.append((source, "duplicate"))
                continue
            elif type(raw) is float and raw - raw == 0.0:
                # _passthrough's common case inline (finite: inf - inf and nan are nan).
                fields[source] = raw
                continue
            else:
                out, step, flag_name = source, _passthrough, ""
            try:
                value = step(raw)
            except (ArithmeticError, TypeError, ValueError):
                # Overflow and exotic number-like objects: a bad value, never a crash.
                value = _TYPE
            if isinstance(value, _Special):  # one check on the common path
                if isinstance(value, _Drop):
                    dropped = dropped or []
                    dropped.append((source, value.reason))
                elif isinstance(value, _Flagged):
                    fields[out] = value.value
                    fields[flag_name] = True
                    flagged = flagged or []
                    flagged.append(source)
                continue
            fields[out] = value

        time_ns = sample.time_ns
        offset = 0
        if time_ns is None:
            time_ns = now_ns
        elif check_skew and abs(time_ns - now_ns) > self._skew_ns:
            offset = time_ns - now_ns
            time_ns = now_ns

        reading = None
        if fields:
            # Static and device tags win over driver tags; a fresh dict per reading
            # keeps readings independent of each other.
            tags = {**sample.tags, **self._tags} if sample.tags else self._tags.copy()
            measurement = self._measurement or sample.measurement or self.device
            reading = Reading(measurement, tags, fields, time_ns, self.units)
        return NormalizeResult(
            reading,
            tuple(dropped) if dropped else (),
            offset != 0,
            tuple(flagged) if flagged else (),
            offset,
        )
