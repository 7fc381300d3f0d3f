"""Tasmota's own discovery: ``tasmota/discovery/<MAC>/config`` and ``…/sensors``.

Tasmota (SetOption19 0, the default since 9.2) publishes both retained. ``config`` says
where the device publishes: its topic ``t``, full topic ``ft`` (``%prefix%/%topic%/``),
the prefixes ``tp`` (cmnd, stat, tele), host name ``hn``, ``mac``, device name ``dn``,
model ``md`` and firmware ``sw``; ``sensors`` is ``{"sn": <a SENSOR payload>, "ver": 1}``
and lists the sensors it has. A discovered Tasmota is read by the ``tasmota`` driver on
``<tele topic>SENSOR``, ``STATE`` and ``LWT``, tagged ``node`` = its topic like a
configured one.

The ``hatasmota`` library parses the same messages for Home Assistant; it is not used
(docs/discovery.md says why): the six keys read here need no schema library.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from devices._parsing import excerpt
from gateway.discovery.homeassistant import DiscoveryError

__all__ = ["TASMOTA_PREFIX", "TasmotaDevice", "parse_tasmota_config", "parse_tasmota_sensors"]

TASMOTA_PREFIX: Final = "tasmota/discovery"
_MAC: Final = re.compile(r"[0-9A-Fa-f]{12}")
_TELE: Final = 2  # index of the tele prefix in "tp"


@dataclass(frozen=True, slots=True)
class TasmotaDevice:
    """What a Tasmota's discovery config says about where it publishes."""

    mac: str
    topic: str
    tele: str
    """The telemetry topic prefix, ending in ``/`` (``tele/bathroom/``)."""
    device_name: str
    model: str
    firmware: str

    @property
    def topics(self) -> list[str]:
        """The topics the ``tasmota`` driver reads."""
        return [self.tele + kind for kind in ("SENSOR", "STATE", "LWT")]


def mac_of(topic: str) -> tuple[str, str] | None:
    """``(MAC, "config" | "sensors")`` for a Tasmota discovery topic, else None."""
    levels = topic[len(TASMOTA_PREFIX) + 1 :].split("/")
    if len(levels) != 2 or levels[1] not in ("config", "sensors") or not _MAC.fullmatch(levels[0]):
        return None
    return levels[0].upper(), levels[1]


def _string(doc: dict[str, object], key: str, required: bool = True) -> str:
    value = doc.get(key)
    if isinstance(value, str) and (value or not required):
        return value
    if not required and value is None:
        return ""
    raise DiscoveryError(f'"{key}" must be a non-empty string', "malformed")


def parse_tasmota_config(mac: str, doc: object) -> TasmotaDevice:
    """A ``config`` message's payload, parsed; DiscoveryError when it is not usable."""
    if not isinstance(doc, dict):
        raise DiscoveryError("expected a JSON object", "malformed")
    payload_mac = _string(doc, "mac").replace(":", "").upper()
    if payload_mac != mac:
        msg = f"the payload's mac {excerpt(payload_mac, 20)} is not the topic's {mac}"
        raise DiscoveryError(msg, "malformed")
    topic = _string(doc, "t")
    full = _string(doc, "ft")
    prefixes = doc.get("tp")
    if not isinstance(prefixes, list) or len(prefixes) < 3 or not isinstance(prefixes[_TELE], str):
        raise DiscoveryError('"tp" must list the cmnd, stat and tele prefixes', "malformed")
    tele = (
        full.replace("%prefix%", prefixes[_TELE])
        .replace("%topic%", topic)
        .replace("%hostname%", _string(doc, "hn", required=False))
        .replace("%id%", mac[-6:])
    )
    if not tele.endswith("/"):
        tele += "/"
    if any(c in tele for c in "+#{}%\0") or tele.startswith("/") or "//" in tele:
        msg = f"telemetry topic {excerpt(tele, 60)} is not a topic a device publishes to"
        raise DiscoveryError(msg, "bad_topic")
    return TasmotaDevice(
        mac=mac,
        topic=topic,
        tele=tele,
        device_name=_string(doc, "dn", required=False) or topic,
        model=_string(doc, "md", required=False),
        firmware=_string(doc, "sw", required=False),
    )


def parse_tasmota_sensors(doc: object) -> list[str]:
    """The sensor names in a ``sensors`` message (``AM2301``, ``ENERGY``…)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("sn"), dict):
        raise DiscoveryError('expected {"sn": {…}} listing the sensors', "malformed")
    sensors = doc["sn"]
    assert isinstance(sensors, dict)
    return [str(name) for name, body in sensors.items() if isinstance(body, dict)][:64]
