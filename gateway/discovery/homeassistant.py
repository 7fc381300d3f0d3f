"""Home Assistant MQTT discovery configs → the entities the gateway can read.

Topics: ``<prefix>/<component>/[<node_id>/]<object_id>/config`` (one entity) and
``<prefix>/device/<id>/config`` (one device, its entities under ``cmps``). Payloads use
long or abbreviated keys (``stat_t`` = ``state_topic``, HA's
``components/mqtt/abbreviations.py``; only the keys read here are expanded) and ``~``
for a base topic at the start or end of any ``…topic`` value. An empty payload removes
what the topic configured.

Only ``sensor`` and ``binary_sensor`` are read; other components are counted as ignored.
Parsing is pure: no I/O, and every refusal is a :class:`DiscoveryError` with a reason
(the counter key) and a message fit for the log.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from devices._parsing import decode_text, excerpt, loads_json
from gateway.discovery.template import Template, UnsupportedTemplate, compile_template
from gateway.errors import RejectedInput

__all__ = [
    "COMPONENTS",
    "Availability",
    "DiscoveryError",
    "Entity",
    "Ignored",
    "Removed",
    "parse_config",
]

COMPONENTS: Final = ("sensor", "binary_sensor")
# HA's own rule for node and object ids in discovery topics.
_ID: Final = re.compile(r"[A-Za-z0-9_-]+")

# The abbreviations of the keys read here (HA's abbreviations.py has ~250, all for keys
# of other components or of no use to a reader of values).
ABBREVIATIONS: Final[dict[str, str]] = {
    "avty": "availability",
    "avty_mode": "availability_mode",
    "avty_t": "availability_topic",
    "avty_tpl": "availability_template",
    "dev": "device",
    "dev_cla": "device_class",
    "e": "encoding",
    "en": "enabled_by_default",
    "ent_cat": "entity_category",
    "exp_aft": "expire_after",
    "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template",
    "name": "name",
    "o": "origin",
    "obj_id": "object_id",
    "p": "platform",
    "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available",
    "pl_off": "payload_off",
    "pl_on": "payload_on",
    "stat_cla": "state_class",
    "stat_t": "state_topic",
    "t": "topic",
    "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement",
    "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS: Final[dict[str, str]] = {
    "cns": "connections",
    "cu": "configuration_url",
    "hw": "hw_version",
    "ids": "identifiers",
    "mdl": "model",
    "mf": "manufacturer",
    "sa": "suggested_area",
    "sn": "serial_number",
    "sw": "sw_version",
}
# Sensors whose state is a date or a word, never a number.
_NOT_NUMERIC_CLASSES: Final = frozenset({"timestamp", "date", "enum"})
_MAX_TOPIC_CHARS: Final = 1024


class DiscoveryError(ValueError):
    """A discovery config the gateway refuses; ``reason`` is its counter key."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Availability:
    """One availability topic: its payloads for online and offline."""

    topic: str
    template: Template
    online: str = "online"
    offline: str = "offline"


@dataclass(frozen=True, slots=True)
class Entity:
    """One discovered ``sensor`` or ``binary_sensor``, as read from its config."""

    key: str
    """Unique per config topic (``<topic>`` or ``<topic>#<component id>``)."""
    config_topic: str
    component: str
    object_id: str
    state_topic: str
    template: Template
    group: str
    """What groups entities into one gateway device (the HA device's first identifier)."""
    device_name: str
    unique_id: str | None = None
    name: str | None = None
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    expire_after: float | None = None
    payload_on: object = "ON"
    payload_off: object = "OFF"
    availability: tuple[Availability, ...] = ()
    model: str | None = None
    manufacturer: str | None = None


@dataclass(frozen=True, slots=True)
class Removed:
    """An empty payload: what ``topic`` configured is gone."""

    topic: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A config of a component the gateway does not read (counted per component)."""

    components: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one config topic configures: entities to read, components ignored."""

    topic: str
    entities: tuple[Entity, ...]
    ignored: tuple[str, ...] = ()
    refused: tuple[DiscoveryError, ...] = field(default=())


def parse_config(prefix: str, topic: str, payload: bytes) -> Parsed | Removed | Ignored | None:
    """Read one message under ``<prefix>/``; None for topics that are not a config
    (HA's own ``<prefix>/status``, for instance).

    Raises:
        DiscoveryError: the config is malformed (the whole topic is refused).
    """
    levels = topic[len(prefix) + 1 :].split("/")
    if len(levels) not in (3, 4) or levels[-1] != "config":
        return None
    component, ids = levels[0], levels[1:-1]
    if not all(_ID.fullmatch(i) for i in ids):
        msg = "node and object ids in a discovery topic may hold only A-Z a-z 0-9 _ -"
        raise DiscoveryError(msg, "bad_topic")
    if not payload.strip():
        return Removed(topic)
    if component == "device":
        if len(ids) != 1:
            raise DiscoveryError(
                "a device config topic is <prefix>/device/<id>/config", "bad_topic"
            )
        doc = _load(payload)
        return _device_config(topic, ids[0], doc)
    if component not in COMPONENTS:
        return Ignored((component,))
    doc = _load(payload)
    node_id = ids[0] if len(ids) == 2 else None
    entity = _entity(topic, topic, component, ids[-1], node_id, doc)
    return Parsed(topic, (entity,))


def _load(payload: bytes) -> dict[str, object]:
    try:
        doc = loads_json(decode_text(payload))
    except RejectedInput as err:
        raise DiscoveryError(str(err), "malformed") from None
    if not isinstance(doc, dict):
        msg = f"expected a JSON object, got {excerpt(payload.decode('utf-8', 'replace'), 40)}"
        raise DiscoveryError(msg, "malformed")
    return doc


def _expand(doc: Mapping[str, object], table: Mapping[str, str]) -> dict[str, object]:
    return {table.get(k, k): v for k, v in doc.items()}


def _device_config(topic: str, device_id: str, doc: dict[str, object]) -> Parsed:
    shared = _expand(doc, ABBREVIATIONS)
    components = shared.pop("cmps", shared.pop("components", None))
    if not isinstance(components, dict) or not components:
        raise DiscoveryError('a device config needs "cmps" (its components)', "malformed")
    shared.pop("origin", None)
    entities: list[Entity] = []
    ignored: list[str] = []
    refused: list[DiscoveryError] = []
    for cmp_id, body in components.items():
        if not isinstance(body, dict):
            refused.append(DiscoveryError(f"component {cmp_id!r} is not an object", "malformed"))
            continue
        own = _expand(body, ABBREVIATIONS)
        platform = own.get("platform")
        if len(own) == 1 and "platform" in own:
            continue  # HA's way of removing one component from a device
        if platform not in COMPONENTS:
            ignored.append(str(platform))
            continue
        merged = {**shared, **own}
        try:
            entities.append(
                _entity(f"{topic}#{cmp_id}", topic, str(platform), str(cmp_id), device_id, merged)
            )
        except DiscoveryError as err:
            refused.append(DiscoveryError(f"component {cmp_id!r}: {err}", err.reason))
    return Parsed(topic, tuple(entities), tuple(ignored), tuple(refused))


def _text(doc: Mapping[str, object], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise DiscoveryError(f"{key} must be a string, got {excerpt(repr(value), 30)}", "malformed")
    return str(value)


def _topic(doc: dict[str, object], key: str, base: str | None) -> str | None:
    value = _text(doc, key)
    if value is None:
        return None
    if base is not None and value:
        if value.startswith("~"):
            value = base + value[1:]
        if value.endswith("~"):
            value = value[:-1] + base
    if not value or len(value) > _MAX_TOPIC_CHARS or any(c in value for c in "+#{}\0"):
        msg = f"{key} {excerpt(value, 60)} is not a topic a device publishes to"
        raise DiscoveryError(msg, "bad_topic")
    return value


def _template(doc: Mapping[str, object], key: str) -> Template:
    try:
        return compile_template(_text(doc, key))
    except UnsupportedTemplate as err:
        msg = f"{key} {excerpt(str(doc.get(key)), 60)}: {err}"
        raise DiscoveryError(msg, "unsupported_template") from None


def _first_identifier(device: Mapping[str, object]) -> str | None:
    ids = device.get("identifiers")
    if isinstance(ids, list) and ids and isinstance(ids[0], str | int):
        return str(ids[0])
    if isinstance(ids, str | int) and not isinstance(ids, bool) and str(ids):
        return str(ids)
    connections = device.get("connections")
    if isinstance(connections, list) and connections and isinstance(connections[0], list):
        return ":".join(str(c) for c in connections[0])
    return None


def _availability(doc: dict[str, object], base: str | None) -> tuple[Availability, ...]:
    online = _text(doc, "payload_available") or "online"
    offline = _text(doc, "payload_not_available") or "offline"
    found: list[Availability] = []
    single = _topic(doc, "availability_topic", base)
    if single is not None:
        found.append(Availability(single, _template(doc, "availability_template"), online, offline))
    listed = doc.get("availability")
    if listed is not None:
        if not isinstance(listed, list):
            raise DiscoveryError("availability must be a list", "malformed")
        for item in listed[:8]:
            if not isinstance(item, dict):
                raise DiscoveryError("availability entries must be objects", "malformed")
            entry = _expand(item, ABBREVIATIONS)
            where = _topic(entry, "topic", base)
            if where is None:
                raise DiscoveryError("an availability entry needs a topic", "malformed")
            found.append(
                Availability(
                    where,
                    _template(entry, "value_template"),
                    _text(entry, "payload_available") or online,
                    _text(entry, "payload_not_available") or offline,
                )
            )
    return tuple(found)


def _entity(
    key: str,
    config_topic: str,
    component: str,
    object_id: str,
    node_id: str | None,
    raw: dict[str, object],
) -> Entity:
    doc = _expand(raw, ABBREVIATIONS)
    base = _text(doc, "~")
    state_topic = _topic(doc, "state_topic", base)
    if state_topic is None:
        raise DiscoveryError("no state_topic: nothing to read", "no_state_topic")
    device_class = _text(doc, "device_class")
    if component == "sensor" and device_class in _NOT_NUMERIC_CLASSES:
        raise DiscoveryError(f"device_class {device_class} is not a number", "not_numeric")
    device_raw = doc.get("device")
    device = _expand(device_raw, DEVICE_ABBREVIATIONS) if isinstance(device_raw, dict) else {}
    obj = _text(doc, "object_id") or object_id
    unique_id = _text(doc, "unique_id")
    group = _first_identifier(device)
    group = f"id:{group}" if group else f"node:{node_id}" if node_id else f"entity:{key}"
    device_name = _text(device, "name") or node_id or obj
    expire = doc.get("expire_after")
    expire_after: float | None = None
    if expire is not None:
        if isinstance(expire, bool) or not isinstance(expire, int | float) or expire < 0:
            raise DiscoveryError("expire_after must be a number of seconds", "malformed")
        expire_after = float(expire) if expire and math.isfinite(expire) else None
    return Entity(
        key=key,
        config_topic=config_topic,
        component=component,
        object_id=obj,
        state_topic=state_topic,
        template=_template(doc, "value_template"),
        group=group,
        device_name=device_name,
        unique_id=unique_id,
        name=_text(doc, "name"),
        unit=_text(doc, "unit_of_measurement") or None,
        device_class=device_class,
        state_class=_text(doc, "state_class"),
        expire_after=expire_after,
        payload_on=doc.get("payload_on", "ON"),
        payload_off=doc.get("payload_off", "OFF"),
        availability=_availability(doc, base),
        model=_text(device, "model"),
        manufacturer=_text(device, "manufacturer"),
    )
