"""The ``tasmota`` driver: Tasmota's tele/<topic>/SENSOR, STATE and LWT messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from devices._parsing import decode_text, excerpt, loads_json
from devices._scheme import MEASUREMENT, QUANTITIES, to_scheme_unit
from devices.tasmota._table import ID_KEYS, META_KEYS, SENSOR_KEYS, STATE_KEYS
from gateway.driver import MqttDriver, MqttOptions, RawSample, RejectedInput

__all__ = ["TasmotaDriver", "TasmotaOptions"]

# Tasmota's default FullTopic is "%prefix%/%topic%/" with the prefix "tele".
DEFAULT_TOPICS: Final = ["tele/{node}/SENSOR", "tele/{node}/STATE", "tele/{node}/LWT"]
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_NOT_NAME: Final = re.compile(r"[^a-z0-9]+")
_LWT: Final = {"online": True, "offline": False}
_SWITCH: Final = {"ON": True, "OFF": False}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def snake_case(key: str) -> str:
    """``ApparentPower`` → ``apparent_power``, ``PM2.5`` → ``pm2_5``."""
    return _NOT_NAME.sub("_", _CAMEL.sub("_", key).lower()).strip("_") or "value"


def _zone(name: str | None) -> ZoneInfo | None:
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        msg = f'unknown time zone "{name}" (an IANA name such as "Europe/Berlin" or "UTC")'
        raise ValueError(msg) from None


class TasmotaOptions(MqttOptions):
    """Options of the ``tasmota`` driver (see ``devices/tasmota/sample.toml``)."""

    topics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TOPICS),
        min_length=1,
        description="Topic patterns; the last level (SENSOR, STATE, LWT) picks the decoding.",
    )
    timezone: str | None = Field(
        default=None,
        description="IANA zone of the devices' Time (Tasmota sends local time); unset: local.",
    )
    state: bool = Field(
        default=False, description="Store the STATE report (uptime, heap, Wi-Fi signal)."
    )

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, name: str | None) -> str | None:
        _zone(name)
        return name


class TasmotaDriver(MqttDriver[TasmotaOptions]):
    """Decodes Tasmota telemetry into one reading per sensor object.

    ``SENSOR``: each object (``AM2301``, ``DS18B20-1``, ``ATC04b555``, ``ENERGY``…) becomes
    a reading tagged ``sensor`` (and ``id`` from its ``Id``/``mac``), with clean field
    names from ``_table.py`` in the units of the naming scheme. ``STATE``: uptime, heap
    and Wi-Fi signal, when ``state = true``. ``LWT``: a reading ``online = true/false``.
    Other topics (INFO1, RESULT…) are ignored.

    Rejections: ``topic``, ``empty``, ``encoding``, ``malformed`` (not JSON, or an LWT
    that is neither Online nor Offline), ``not_object``, ``bad_time``, ``unit`` (an
    unknown TempUnit/PressureUnit), ``no_fields`` (no sensor object with a value).
    """

    Options: ClassVar[type[TasmotaOptions]] = TasmotaOptions
    description: ClassVar[str] = "Tasmota telemetry over MQTT: one reading per sensor"
    units = QUANTITIES

    def __init__(self, device: str, options: TasmotaOptions) -> None:
        super().__init__(device, options)
        self._zone = _zone(options.timezone)

    def decode(self, topic: str, payload: bytes) -> list[RawSample]:
        """Decode one message by its last topic level; ``[]`` for other messages."""
        tags = self.topic_tags(topic)
        if tags is None:
            msg = f'topic "{topic}" matches none of {", ".join(self.options.topics)}'
            raise RejectedInput(msg, reason="topic")
        kind = topic.rpartition("/")[2]
        if kind not in ("SENSOR", "STATE", "LWT") or (kind == "STATE" and not self.options.state):
            return []
        text = decode_text(payload).strip()
        if not text:
            raise RejectedInput("empty payload", reason="empty")
        if kind == "LWT":
            online = _LWT.get(text.lower())
            if online is None:
                msg = f"LWT must be Online or Offline, got {excerpt(text, 20)}"
                raise RejectedInput(msg, reason="malformed")
            return [RawSample({"online": online}, dict(tags), None, MEASUREMENT)]
        doc = loads_json(text)
        if not isinstance(doc, dict):
            msg = f"expected a JSON object, got {excerpt(text, 40)}"
            raise RejectedInput(msg, reason="not_object")
        time_ns = self._time_ns(doc.get("Time"))
        if kind == "STATE":
            return [self._state(doc, dict(tags), time_ns)]
        return self._sensors(doc, tags, time_ns)

    def _time_ns(self, stamp: object) -> int | None:
        if stamp is None:
            return None
        try:
            if not isinstance(stamp, str):
                raise ValueError
            when = datetime.fromisoformat(stamp)
        except ValueError:
            msg = f"Time must be like 2026-11-20T13:44:23, got {excerpt(str(stamp), 40)}"
            raise RejectedInput(msg, reason="bad_time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self._zone) if self._zone else when.astimezone()
        return (when - _EPOCH) // _MICROSECOND * 1000

    def _state(
        self, doc: dict[str, object], tags: dict[str, str], time_ns: int | None
    ) -> RawSample:
        fields: dict[str, object] = {}
        for path, name in STATE_KEYS.items():
            value: object = doc
            for key in path:
                value = value.get(key) if isinstance(value, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                fields[name] = value
        if not fields:
            msg = "STATE has none of UptimeSec, Heap, LoadAvg, Wifi"
            raise RejectedInput(msg, reason="no_fields")
        return RawSample(fields, tags, time_ns, MEASUREMENT)

    def _sensors(
        self, doc: dict[str, object], tags: Mapping[str, str], time_ns: int | None
    ) -> list[RawSample]:
        units = {
            "TempUnit": doc.get("TempUnit", "C"),
            "PressureUnit": doc.get("PressureUnit", "hPa"),
        }
        samples = []
        for name, body in doc.items():
            if isinstance(body, str) and body in _SWITCH:  # "Switch1": "ON"
                samples.append(
                    RawSample(
                        {"state": _SWITCH[body]}, {**tags, "sensor": name}, time_ns, MEASUREMENT
                    )
                )
                continue
            if name in META_KEYS or not isinstance(body, dict):
                continue
            sensor_tags = {**tags, "sensor": name}
            fields: dict[str, object] = {}
            for key, value in body.items():
                if key in ID_KEYS and isinstance(value, str | int) and value != "":
                    sensor_tags["id"] = str(value)
                elif isinstance(value, str) and value in _SWITCH:
                    fields[snake_case(key)] = _SWITCH[value]
                elif isinstance(value, int | float):
                    field, value = self._field(key, value, units)
                    fields[field] = value
            if fields:
                samples.append(RawSample(fields, sensor_tags, time_ns, MEASUREMENT))
        if not samples:
            msg = f"no sensor object with a value in {excerpt(str(list(doc)), 60)}"
            raise RejectedInput(msg, reason="no_fields")
        return samples

    @staticmethod
    def _field(key: str, value: float, units: dict[str, object]) -> tuple[str, float]:
        if isinstance(value, bool):
            return snake_case(key), value
        name, unit = SENSOR_KEYS.get(key, (snake_case(key), None))
        target = QUANTITIES.get(name)
        if unit is None or target is None:
            return name, value
        source = units.get(unit, unit)
        try:
            return name, to_scheme_unit(value, str(source), target)
        except ValueError:
            msg = f"{unit} {excerpt(str(source), 10)} is not a {name} unit"
            raise RejectedInput(msg, reason="unit") from None
