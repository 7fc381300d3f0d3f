"""The driver of a device found by Home Assistant discovery, and how its fields are named.

Field names follow the measurement scheme (``devices/_scheme.py``), so a discovered
thermometer and a configured one land side by side as ``temperature`` in °C:

1. the JSON key the value template reads, or the entity's object id, when it is (or,
   like ESPHome's ``air_temperature``, ends in) a scheme quantity;
2. else the entity's ``device_class`` when it names one (``carbon_dioxide`` → ``co2``,
   ``signal_strength`` → ``rssi``, ``atmospheric_pressure`` → ``pressure``);
3. else the JSON key or the object id, in snake case. A ``binary_sensor`` is ``state``
   unless its template reads a JSON key (Zigbee2MQTT's ``contact``, ``occupancy``).

A scheme name is used only when the entity's unit converts to the scheme's unit (°F →
°C, Pa → hPa); the value is converted. Otherwise the field keeps rule 3's name and the
entity's own unit as its label, with the unit appended where that name is a scheme
quantity (``voltage`` in mV → ``voltage_mv``), so a scheme name always means its unit.

Tags: ``node`` is the device's name; an entity whose topic carries one plain value
(ESPHome) also gets ``sensor`` = its object id, as the ``esphome`` driver does, while
entities reading keys of one JSON payload (Zigbee2MQTT) share one reading.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from devices._parsing import decode_text, excerpt, loads_json
from devices._scheme import MEASUREMENT, QUANTITIES, to_scheme_unit
from devices.esphome._driver import quantity
from gateway.discovery.homeassistant import Availability, Entity
from gateway.discovery.template import TemplateValueError
from gateway.driver import MqttDriver, MqttOptions, RawSample, RejectedInput

__all__ = ["DEVICE_CLASSES", "DiscoveredDriver", "FieldPlan", "plan_field", "snake"]

DEVICE_CLASSES: Final[dict[str, str]] = {
    "temperature": "temperature",
    "humidity": "humidity",
    "pressure": "pressure",
    "atmospheric_pressure": "pressure",
    "illuminance": "illuminance",
    "carbon_dioxide": "co2",
    "battery": "battery",
    "power": "power",
    "apparent_power": "apparent_power",
    "reactive_power": "reactive_power",
    "energy": "energy",
    "voltage": "voltage",
    "current": "current",
    "frequency": "frequency",
    "signal_strength": "rssi",
}
"""Home Assistant sensor device classes that name a scheme quantity."""

_NOT_NAME: Final = re.compile(r"[^a-z0-9]+")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# HA's words for "no value right now".
_NO_VALUE: Final = frozenset({"", "unknown", "unavailable", "none", "null", "nan"})
_NO_JSON: Final = object()


def snake(text: str) -> str:
    """``Air Temperature`` / ``airTemperature`` → ``air_temperature``."""
    return _NOT_NAME.sub("_", _CAMEL.sub("_", text).lower()).strip("_") or "value"


@dataclass(frozen=True, slots=True)
class FieldPlan:
    """How one entity becomes one field of a reading."""

    entity: Entity
    field: str
    unit: str | None
    """The unit stored (the scheme's when converted, else the entity's label)."""
    convert_from: str | None
    """The entity's unit when its value is converted to ``unit``."""
    tags: Mapping[str, str]


def _converts(unit: str, target: str) -> bool:
    try:
        to_scheme_unit(1.0, unit, target)
    except ValueError:
        return False
    return True


def plan_field(entity: Entity, node: str) -> FieldPlan:
    """The field, unit and tags ``entity``'s values are stored under (see the module)."""
    key = entity.template.key if entity.template.uses_json else None
    own = snake(key) if key else snake(entity.object_id)
    tags = {"node": node}
    if not entity.template.uses_json:
        tags["sensor"] = entity.object_id
    if entity.component == "binary_sensor":
        return FieldPlan(entity, snake(key) if key else "state", None, None, tags)
    candidates = [own] if own in QUANTITIES else []
    suffix = quantity(own)
    if suffix in QUANTITIES and suffix not in candidates:
        candidates.append(suffix)
    by_class = DEVICE_CLASSES.get(entity.device_class or "")
    if by_class is not None and by_class not in candidates:
        candidates.append(by_class)
    unit = entity.unit
    for name in candidates:
        target = QUANTITIES[name]
        if unit is None or unit == target:
            return FieldPlan(entity, name, unit, None, tags)
        if _converts(unit, target):
            return FieldPlan(entity, name, target, unit, tags)
    if own in QUANTITIES and unit is not None:
        own = f"{own}_{_NOT_NAME.sub('_', unit.lower()).strip('_')}"  # never a scheme name in another unit (voltage_mv)
    return FieldPlan(entity, own, unit, None, tags)


class DiscoveredDriver(MqttDriver[MqttOptions]):
    """Reads the state and availability topics of one discovered device.

    Each message is evaluated by every entity whose state topic it came on; their
    fields make one reading per tag set. A key a template reads that is missing from
    the payload leaves that field out (Zigbee2MQTT sends partial updates); a message
    giving no field at all is rejected with each entity's reason (``template``),
    a value that is no number ``not_number``, HA's ``unknown``/``unavailable``
    ``no_value``. Availability messages become ``online = true/false``.
    """

    Options: ClassVar[type[MqttOptions]] = MqttOptions
    description: ClassVar[str] = "a device found by MQTT discovery (not configurable)"

    def __init__(
        self,
        device: str,
        options: MqttOptions,
        plans: list[FieldPlan],
        availability: list[Availability],
        node: str,
    ) -> None:
        super().__init__(device, options)
        self.plans = plans
        self.node = node
        self._by_topic: dict[str, list[FieldPlan]] = {}
        for plan in plans:
            self._by_topic.setdefault(plan.entity.state_topic, []).append(plan)
        self._availability: dict[str, list[Availability]] = {}
        for avail in availability:
            self._availability.setdefault(avail.topic, []).append(avail)
        self.units = {p.field: p.unit for p in plans if p.unit}

    @staticmethod
    def topics_of(plans: list[FieldPlan], availability: list[Availability]) -> list[str]:
        """Every topic the device reads, once each, in order."""
        seen = dict.fromkeys(
            [p.entity.state_topic for p in plans] + [a.topic for a in availability]
        )
        return list(seen)

    def decode(self, topic: str, payload: bytes) -> list[RawSample]:
        """One message of a state or availability topic."""
        text = decode_text(payload).strip()
        value_json: Any = _NO_JSON
        plans = self._by_topic.get(topic, [])
        avails = self._availability.get(topic, [])
        if any(p.entity.template.uses_json for p in plans) or any(
            a.template.uses_json for a in avails
        ):
            try:
                value_json = loads_json(text)
            except RejectedInput:
                value_json = _NO_JSON
        samples: list[RawSample] = []
        for avail in avails:
            samples.append(self._online(avail, text, value_json))
        fields: dict[tuple[tuple[str, str], ...], dict[str, object]] = {}
        problems: list[RejectedInput] = []
        for plan in plans:
            try:
                value = self._value(plan, text, value_json)
            except RejectedInput as err:
                problems.append(err)
                continue
            if value is not None:
                fields.setdefault(tuple(plan.tags.items()), {})[plan.field] = value
        for tags, values in fields.items():
            samples.append(RawSample(values, dict(tags), None, MEASUREMENT))
        if not samples and problems:
            reasons = {p.reason for p in problems}
            reason = reasons.pop() if len(reasons) == 1 else "template"
            raise RejectedInput("; ".join(str(p) for p in problems[:4]), reason=reason)
        return samples

    def _render(self, plan: FieldPlan, text: str, value_json: object) -> object:
        try:
            if value_json is _NO_JSON:
                return plan.entity.template.render(text)
            return plan.entity.template.render(text, value_json)
        except TemplateValueError as err:
            msg = f"{plan.entity.object_id}: {err}"
            raise RejectedInput(msg, reason="template") from None

    def _value(self, plan: FieldPlan, text: str, value_json: object) -> object:
        """The field's value; None when the template's key is not in this payload."""
        entity = plan.entity
        if entity.template.uses_json and isinstance(value_json, dict):
            key = entity.template.path[0] if entity.template.path else None
            if isinstance(key, str) and key not in value_json and not entity.template.filters:
                return None  # a partial update without this key
        value = self._render(plan, text, value_json)
        if entity.component == "binary_sensor":
            return self._binary(entity, value)
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            number: float | int = value
        elif value is None or (isinstance(value, str) and value.strip().lower() in _NO_VALUE):
            msg = f"{entity.object_id}: no value ({excerpt(str(value), 20)})"
            raise RejectedInput(msg, reason="no_value")
        else:
            try:
                number = float(str(value))
            except ValueError:
                msg = f"{entity.object_id}: not a number: {excerpt(str(value), 30)}"
                raise RejectedInput(msg, reason="not_number") from None
            if isinstance(value, str) and re.fullmatch(r"[+-]?\d{1,18}", value.strip()):
                number = int(value)
        if plan.convert_from is not None and plan.unit is not None and math.isfinite(number):
            return to_scheme_unit(float(number), plan.convert_from, plan.unit)
        return number

    @staticmethod
    def _binary(entity: Entity, value: object) -> bool:
        for wanted, state in ((entity.payload_on, True), (entity.payload_off, False)):
            if value == wanted or str(value) == str(wanted):
                return state
        msg = (
            f"{entity.object_id}: {excerpt(str(value), 20)} is neither payload_on "
            f"{excerpt(str(entity.payload_on), 10)} nor payload_off "
            f"{excerpt(str(entity.payload_off), 10)}"
        )
        raise RejectedInput(msg, reason="malformed")

    def _online(self, avail: Availability, text: str, value_json: object) -> RawSample:
        try:
            if avail.template.uses_json and value_json is not _NO_JSON:
                state = avail.template.render(text, value_json)
            else:
                state = avail.template.render(text)
        except TemplateValueError as err:
            raise RejectedInput(f"availability: {err}", reason="template") from None
        if str(state) == avail.online:
            online = True
        elif str(state) == avail.offline:
            online = False
        else:
            msg = (
                f"availability must be {excerpt(avail.online, 20)} or "
                f"{excerpt(avail.offline, 20)}, got {excerpt(str(state), 20)}"
            )
            raise RejectedInput(msg, reason="malformed")
        return RawSample({"online": online}, {"node": self.node}, None, MEASUREMENT)
