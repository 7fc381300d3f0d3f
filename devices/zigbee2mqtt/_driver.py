"""The ``zigbee2mqtt`` driver: Zigbee2MQTT device messages and availability."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Final

from pydantic import Field, field_validator

from devices._parsing import decode_text, excerpt, loads_json
from devices._scheme import MEASUREMENT, QUANTITIES
from devices.zigbee2mqtt._table import RENAME, SKIP, SUFFIX_IGNORED
from gateway.driver import MqttDriver, MqttOptions, RawSample, RejectedInput

__all__ = ["Zigbee2MqttDriver", "Zigbee2MqttOptions"]

DEFAULT_BASE: Final = "zigbee2mqtt"
_ON_OFF: Final = {"ON": True, "OFF": False}
_AVAILABLE: Final = {"online": True, "offline": False}
# Nested objects deeper than this are not flattened (Zigbee2MQTT nests one level).
_MAX_DEPTH: Final = 2


class Zigbee2MqttOptions(MqttOptions):
    """Options of the ``zigbee2mqtt`` driver (see ``devices/zigbee2mqtt/sample.toml``)."""

    base_topic: str = Field(
        default=DEFAULT_BASE, min_length=1, description="Zigbee2MQTT's mqtt.base_topic."
    )
    topics: list[str] = Field(
        default_factory=lambda: [f"{DEFAULT_BASE}/#"],
        min_length=1,
        description="Topic patterns, under base_topic; the rest of a topic is the device.",
    )
    linkquality: bool = Field(default=False, description="Store linkquality (0-255) too.")

    @field_validator("base_topic")
    @classmethod
    def _base(cls, base: str) -> str:
        if any(c in base for c in "+#{}") or base.startswith("/") or base.endswith("/"):
            msg = f'base_topic "{base}" must be a plain topic such as "zigbee2mqtt"'
            raise ValueError(msg)
        return base


class Zigbee2MqttDriver(MqttDriver[Zigbee2MqttOptions]):
    """Decodes ``<base>/<friendly_name>`` JSON objects into one reading tagged ``node``.

    Numbers and booleans are fields, ``ON``/``OFF`` strings booleans, nested objects
    flattened with ``_`` (``color_x``), other strings skipped; a battery device's
    ``voltage`` (mV) is ``battery_voltage`` in V. ``<base>/<name>/availability`` →
    ``online``. ``bridge/…``, ``…/set``, ``…/get`` are ignored.

    Rejections: ``topic``, ``empty``, ``encoding``, ``malformed`` (not JSON; an
    availability other than online/offline), ``not_object``, ``no_fields``.
    """

    Options: ClassVar[type[Zigbee2MqttOptions]] = Zigbee2MqttOptions
    description: ClassVar[str] = "Zigbee2MQTT devices: one reading per message, availability"
    units = QUANTITIES

    def __init__(self, device: str, options: Zigbee2MqttOptions) -> None:
        super().__init__(device, options)
        self._prefix = options.base_topic + "/"

    def decode(self, topic: str, payload: bytes) -> list[RawSample]:
        """Decode one message; ``[]`` for bridge, command and other non-reading topics."""
        tags = self.topic_tags(topic)
        if tags is None or not topic.startswith(self._prefix):
            msg = f'topic "{topic}" is not under base_topic "{self.options.base_topic}"'
            raise RejectedInput(msg, reason="topic")
        name = topic[len(self._prefix) :]
        levels = name.split("/")
        if levels[0] == "bridge" or SUFFIX_IGNORED & set(levels[1:]):
            return []
        text = decode_text(payload).strip()
        if not text:
            raise RejectedInput("empty payload", reason="empty")
        if levels[-1] == "availability" and len(levels) > 1:
            node = name.rpartition("/")[0]
            return [self._availability(text, {**tags, "node": node})]
        doc = loads_json(text)
        if not isinstance(doc, dict):
            msg = f"expected a JSON object, got {excerpt(text, 40)}"
            raise RejectedInput(msg, reason="not_object")
        fields = self._fields(doc)
        if not fields:
            msg = f"no number or boolean among {excerpt(str(list(doc)), 60)}"
            raise RejectedInput(msg, reason="no_fields")
        return [RawSample(fields, {**tags, "node": name}, None, MEASUREMENT)]

    @staticmethod
    def _availability(text: str, tags: Mapping[str, str]) -> RawSample:
        state: object = text
        if text.startswith("{"):
            doc = loads_json(text)
            state = doc.get("state") if isinstance(doc, dict) else None
        online = _AVAILABLE.get(state) if isinstance(state, str) else None
        if online is None:
            msg = f"availability must be online or offline, got {excerpt(text, 30)}"
            raise RejectedInput(msg, reason="malformed")
        return RawSample({"online": online}, dict(tags), None, MEASUREMENT)

    def _fields(
        self, doc: Mapping[str, object], prefix: str = "", depth: int = 1
    ) -> dict[str, object]:
        fields: dict[str, object] = {}
        for key, value in doc.items():
            if key in SKIP or (key == "linkquality" and not self.options.linkquality):
                continue
            name = prefix + RENAME.get(key, key)
            if key == "illuminance" and "illuminance_lux" in doc:
                name = prefix + "illuminance_raw"  # older converters: raw value beside lux
            if isinstance(value, dict):
                if depth < _MAX_DEPTH:
                    fields.update(self._fields(value, f"{name}_", depth + 1))
            elif isinstance(value, str):
                if value in _ON_OFF:
                    fields[name] = _ON_OFF[value]
            elif isinstance(value, bool | int | float):
                fields[name] = value
        voltage = fields.get("voltage")
        if not prefix and "battery" in doc and isinstance(voltage, int | float):
            del fields["voltage"]  # a battery device's voltage is its battery's, in mV
            fields["battery_voltage"] = voltage / 1000
        return fields
