"""The ``shelly`` driver: Shelly Gen2+ RPC notifications and status topics, Gen1 topics."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final

from pydantic import Field

from devices._parsing import MISSING, decode_text, excerpt, loads_json, lookup, parse_scalar
from devices._scheme import MEASUREMENT, QUANTITIES, to_scheme_unit
from devices.shelly._table import COMPONENTS, GEN1
from gateway.driver import MqttDriver, MqttOptions, RawSample, RejectedInput

__all__ = ["ShellyDriver", "ShellyOptions"]

# Gen2+ publish under their id (the default MQTT prefix), Gen1 under shellies/<id>/.
DEFAULT_TOPICS: Final = [
    "{node}/events/rpc",
    "{node}/status/+",
    "{node}/online",
    "shellies/{node}/#",
]
# A device clock before 2001 is a clock that was never set (seconds since boot).
_EARLIEST_TS: Final = 978_307_200
_COMPONENT: Final = re.compile(r"([a-z0-9]+)(?::(\d{1,4}))?")
_GEN1_TAIL: Final = re.compile(r"/shellies/[^/]+/(.+)$")
_CHANNEL: Final = re.compile(r"/(\d{1,3})(?=/|$)")
_ONLINE: Final = {"true": True, "false": False}
_ON_OFF: Final = {"on": True, "off": False}


class ShellyOptions(MqttOptions):
    """Options of the ``shelly`` driver (see ``devices/shelly/sample.toml``)."""

    topics: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TOPICS),
        min_length=1,
        description="Topic patterns; {node} names the device (its id or MQTT prefix).",
    )


class ShellyDriver(MqttDriver[ShellyOptions]):
    """Decodes Shelly messages into one reading per component.

    Gen2+: ``<id>/events/rpc`` NotifyStatus/NotifyFullStatus (stamped with ``params.ts``)
    and ``<id>/status/<component>:<n>`` (stamped on arrival); Gen1: ``shellies/<id>/…``
    bare values. Each reading is tagged ``node`` and ``sensor`` (``temperature:0``,
    ``relay/0``), with the scheme's field names and units (energy Wh → kWh).
    ``<id>/online`` is a reading ``online = true/false``. Components and topics without
    readings (sys, wifi, announce, NotifyEvent…) are ignored.

    Rejections: ``topic``, ``empty``, ``encoding``, ``malformed`` (not JSON, a value
    that is not a number, on/off or true/false), ``not_object``, ``bad_time``,
    ``no_fields`` (a known component without any known value).
    """

    Options: ClassVar[type[ShellyOptions]] = ShellyOptions
    description: ClassVar[str] = "Shelly Gen2+/Gen1 over MQTT: one reading per component"
    units = QUANTITIES

    def decode(self, topic: str, payload: bytes) -> list[RawSample]:
        """Decode one message by the shape of its topic; ``[]`` for other messages."""
        tags = self.topic_tags(topic)
        if tags is None:
            msg = f'topic "{topic}" matches none of {", ".join(self.options.topics)}'
            raise RejectedInput(msg, reason="topic")
        levels = topic.split("/")
        if levels[-1] == "online":
            return [self._online(payload, tags)]
        if gen1 := _GEN1_TAIL.search("/" + topic):
            return self._gen1(gen1.group(1), payload, tags)
        if levels[-2:] == ["events", "rpc"]:
            return self._rpc(self._object(payload), tags)
        if len(levels) >= 2 and levels[-2] == "status":
            sample = self._component(levels[-1], self._object(payload), tags, None)
            return [] if sample is None else [sample]
        return []

    @staticmethod
    def _object(payload: bytes) -> dict[str, object]:
        text = decode_text(payload).strip()
        if not text:
            raise RejectedInput("empty payload", reason="empty")
        doc = loads_json(text)
        if not isinstance(doc, dict):
            msg = f"expected a JSON object, got {excerpt(text, 40)}"
            raise RejectedInput(msg, reason="not_object")
        return doc

    @staticmethod
    def _online(payload: bytes, tags: Mapping[str, str]) -> RawSample:
        text = decode_text(payload).strip()
        online = _ONLINE.get(text.lower())
        if online is None:
            msg = f"online must be true or false, got {excerpt(text, 20)}"
            raise RejectedInput(msg, reason="malformed")
        return RawSample({"online": online}, dict(tags), None, MEASUREMENT)

    def _rpc(self, doc: dict[str, object], tags: Mapping[str, str]) -> list[RawSample]:
        if doc.get("method") not in ("NotifyStatus", "NotifyFullStatus"):
            return []  # NotifyEvent, RPC answers
        params = doc.get("params")
        if not isinstance(params, dict):
            raise RejectedInput(f"{doc.get('method')} without params", reason="malformed")
        time_ns = _time_ns(params.get("ts"))
        samples = []
        for key, body in params.items():
            if isinstance(body, dict):
                sample = self._component(key, body, tags, time_ns, delta=True)
                if sample is not None:
                    samples.append(sample)
        return samples

    @staticmethod
    def _component(
        key: str,
        body: dict[str, object],
        tags: Mapping[str, str],
        time_ns: int | None,
        *,
        delta: bool = False,
    ) -> RawSample | None:
        """One component's reading; ``delta``: a NotifyStatus change, which may hold none."""
        match = _COMPONENT.fullmatch(key)
        table = None if match is None else COMPONENTS.get(match.group(1))
        if table is None:
            return None  # sys, wifi, cloud, mqtt, ble… carry no readings
        fields: dict[str, object] = {}
        for path, (name, unit) in table.items():
            value = lookup(body, path.split("."))
            if value is MISSING or value is None:
                continue
            fields[name] = _convert(name, value, unit)
        if not fields:
            if delta:
                return None
            msg = f"{key} has none of {', '.join(table)}"
            raise RejectedInput(msg, reason="no_fields")
        return RawSample(fields, {**tags, "sensor": key}, time_ns, MEASUREMENT)

    @staticmethod
    def _gen1(tail: str, payload: bytes, tags: Mapping[str, str]) -> list[RawSample]:
        channel = _CHANNEL.search("/" + tail)
        spec = GEN1.get(_CHANNEL.sub("/<n>", "/" + tail)[1:])
        if spec is None:
            return []  # announce, info, input_event, relay/0/command…
        text = decode_text(payload).strip()
        if not text:
            raise RejectedInput("empty payload", reason="empty")
        name, unit = spec
        value = _ON_OFF.get(text.lower()) if name == "state" else parse_scalar(text)
        if value is None or isinstance(value, str):
            msg = f"{tail} must be {'on or off' if name == 'state' else 'a number'}, "
            raise RejectedInput(msg + f"got {excerpt(text, 20)}", reason="malformed")
        # relay/0/power → "relay/0"; sensor/temperature → "sensor"
        parts = tail.split("/")
        sensor = "/".join(parts[:2]) if channel is not None else parts[0]
        sample_tags = {**tags, "sensor": sensor}
        return [RawSample({name: _convert(name, value, unit)}, sample_tags, None, MEASUREMENT)]


def _convert(name: str, value: object, unit: str | None) -> object:
    target = QUANTITIES.get(name)
    if unit is None or target is None or isinstance(value, bool):
        return value
    if not isinstance(value, int | float):
        msg = f"{name}: expected a number, got {excerpt(str(value), 20)}"
        raise RejectedInput(msg, reason="malformed")
    return to_scheme_unit(value, unit, target)


def _time_ns(ts: object) -> int | None:
    """``params.ts`` (epoch seconds, a float) in ns; None when the device has no clock."""
    if ts is None:
        return None
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts != ts or abs(ts) > 1e11:
        raise RejectedInput(f"ts must be epoch seconds, got {excerpt(str(ts), 30)}", "bad_time")
    if ts < _EARLIEST_TS:
        return None
    return round(ts * 1000) * 1_000_000
