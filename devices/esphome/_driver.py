"""The ``esphome`` driver: ESPHome's MQTT state topics, one value per message."""

from __future__ import annotations

import math
from typing import ClassVar, Final

from pydantic import Field, field_validator

from devices._parsing import decode_text, excerpt, parse_scalar
from devices._scheme import MEASUREMENT, QUANTITIES
from gateway.driver import MqttDriver, MqttOptions, RawSample, RejectedInput

__all__ = ["EsphomeDriver", "EsphomeOptions"]

# ESPHome's default topic prefix is the node name.
DEFAULT_TOPICS: Final = [
    "{node}/sensor/{sensor}/state",
    "{node}/binary_sensor/{sensor}/state",
    "{node}/switch/{sensor}/state",
    "{node}/status",
]
_ON_OFF: Final = {"ON": True, "OFF": False}
_STATUS: Final = {"online": True, "offline": False}
# Longest first, so "dew_point" wins over "point" and "device_temperature" over "temperature".
_SUFFIXES: Final = sorted(QUANTITIES, key=len, reverse=True)


def quantity(object_id: str) -> str:
    """The scheme's field name for an ESPHome sensor id: ``air_temperature`` → ``temperature``."""
    for name in _SUFFIXES:
        if object_id == name or object_id.endswith("_" + name):
            return name
    return object_id


class EsphomeOptions(MqttOptions):
    """Options of the ``esphome`` driver (see ``devices/esphome/sample.toml``)."""

    topics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TOPICS),
        min_length=1,
        description="Topic patterns with {node} and {sensor} levels.",
    )
    quantities: dict[str, str] = Field(
        default_factory=dict,
        description='Sensor id → field name where the id does not end in it ({"soil": "moisture"}).',
    )

    @field_validator("quantities")
    @classmethod
    def _names(cls, names: dict[str, str]) -> dict[str, str]:
        for sensor, field in names.items():
            if not sensor or not field:
                msg = f"quantities: sensor ids and field names must not be empty ({sensor!r})"
                raise ValueError(msg)
        return names


class EsphomeDriver(MqttDriver[EsphomeOptions]):
    """Decodes ESPHome's ``<node>/<component>/<id>/state`` values and ``<node>/status``.

    ``sensor``: a number; the field is the quantity the id ends in (``air_temperature`` →
    ``temperature``, tag ``sensor=air_temperature``), else the id. ``binary_sensor`` and
    ``switch``: ``ON``/``OFF`` → ``state``. ``status``: ``online = true/false``.

    Rejections: ``topic``, ``empty``, ``encoding``, ``no_value`` (``nan``: the sensor has
    no reading), ``malformed`` (not a number, not ON/OFF, not online/offline).
    """

    Options: ClassVar[type[EsphomeOptions]] = EsphomeOptions
    description: ClassVar[str] = "ESPHome nodes over MQTT: sensor, binary_sensor, status"
    units = QUANTITIES

    def decode(self, topic: str, payload: bytes) -> list[RawSample]:
        """Decode one message by its topic; ``[]`` for other components."""
        tags = self.topic_tags(topic)
        if tags is None:
            msg = f'topic "{topic}" matches none of {", ".join(self.options.topics)}'
            raise RejectedInput(msg, reason="topic")
        text = decode_text(payload).strip()
        if not text:
            raise RejectedInput("empty payload", reason="empty")
        levels = topic.split("/")
        if levels[-1] == "status":
            online = _STATUS.get(text)
            if online is None:
                msg = f"status must be online or offline, got {excerpt(text, 20)}"
                raise RejectedInput(msg, reason="malformed")
            node_tags = {k: v for k, v in tags.items() if k != "sensor"}
            return [RawSample({"online": online}, node_tags, None, MEASUREMENT)]
        if len(levels) < 3 or levels[-1] != "state":
            return []
        sensor = tags.get("sensor", levels[-2])
        sample_tags = {**tags, "sensor": sensor}
        component = levels[-3]
        if component in ("binary_sensor", "switch"):
            state = _ON_OFF.get(text)
            if state is None:
                msg = f"{component} state must be ON or OFF, got {excerpt(text, 20)}"
                raise RejectedInput(msg, reason="malformed")
            return [RawSample({"state": state}, sample_tags, None, MEASUREMENT)]
        if component != "sensor":
            return []  # text_sensor, light, climate…: no numeric reading
        value = parse_scalar(text)
        if isinstance(value, float) and math.isnan(value):
            msg = f"sensor {sensor} has no value (nan)"
            raise RejectedInput(msg, reason="no_value")
        if isinstance(value, bool | str):
            msg = f"sensor {sensor} must be a number, got {excerpt(text, 20)}"
            raise RejectedInput(msg, reason="malformed")
        field = self.options.quantities.get(sensor) or quantity(sensor)
        return [RawSample({field: value}, sample_tags, None, MEASUREMENT)]
