"""Simulated MQTT sensors for tests, benchmarks and the demo: (topic, payload) pairs.

No broker code here: publish the pairs with aiomqtt or paho yourself::

    pub = JsonPublisher(devices=3, prefix=unique_name, shape="tasmota", seed=1)
    options = pub.options()                # matching ``json`` driver options
    for topic, payload in pub.messages(30):
        await client.publish(topic, payload, qos=1)

Every reading carries ``seq``, counting per device from ``start``, so a test can check
that nothing was lost or duplicated end to end.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from devices._climate import Climate

__all__ = ["HOSTILE_PAYLOADS", "JsonPublisher", "Shape"]

Shape = Literal["flat", "tasmota", "zigbee2mqtt"]
"""``flat``: ``<prefix>/<device>/state`` with a flat object and an epoch-µs ``ts``.
``tasmota``: ``<prefix>/tele/<device>/SENSOR`` with nested ``AM2301``/``BMP280`` objects
and a UTC ``Time`` with µs (real Tasmota sends whole seconds in local time); the
device's ``LWT`` comes from :meth:`JsonPublisher.lwt`.
``zigbee2mqtt``: ``<prefix>/<device>`` with a flat object, no time."""

HOSTILE_PAYLOADS: Final[dict[str, bytes]] = {
    "nan_literal": b'{"seq": 1, "temperature": NaN}',
    "infinity_literal": b'{"seq": 1, "temperature": -Infinity}',
    "overflow_to_inf": b'{"seq": 1, "temperature": 1e999}',
    "deep_nesting": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "invalid_utf8": b'{"temperature": "\xff\xfe"}',
    "plain_text": b"hello, world",
    "huge_int": b'{"seq": ' + b"9" * 5000 + b"}",
    "not_object": b"[1, 2, 3]",
    "empty": b"",
}
"""Payloads a broken or hostile publisher might send, by name (for rejection tests)."""


class JsonPublisher:
    """Produces MQTT messages for ``devices`` simulated climate sensors.

    Args:
        devices: how many sensors; they are named ``sensor-0``, ``sensor-1``…
        prefix: the first topic level(s), e.g. a test's unique name.
        shape: the payload style (see :data:`Shape`).
        seed: makes values (not times) repeatable.
        start: the first ``seq`` of every device.
    """

    def __init__(
        self,
        devices: int = 1,
        prefix: str = "sim",
        shape: Shape = "flat",
        *,
        seed: int | None = None,
        start: int = 0,
    ) -> None:
        if devices < 1:
            msg = f"devices must be at least 1, got {devices}"
            raise ValueError(msg)
        if shape not in get_args(Shape):
            msg = f"shape must be one of {', '.join(get_args(Shape))}, got {shape!r}"
            raise ValueError(msg)
        self.prefix = prefix
        self.shape: Shape = shape
        self.names = [f"sensor-{i}" for i in range(devices)]
        self.seq = dict.fromkeys(self.names, start)
        """The ``seq`` of each device's next message."""
        self._last_us = dict.fromkeys(self.names, 0)
        self._climate = {
            name: Climate(None if seed is None else seed + i) for i, name in enumerate(self.names)
        }

    def topic(self, device: str) -> str:
        """The topic ``device`` publishes its readings on."""
        if self.shape == "tasmota":
            return f"{self.prefix}/tele/{device}/SENSOR"
        if self.shape == "zigbee2mqtt":
            return f"{self.prefix}/{device}"
        return f"{self.prefix}/{device}/state"

    def options(self) -> dict[str, Any]:
        """``json`` driver options that decode these messages (device name → ``sensor`` tag)."""
        if self.shape == "tasmota":
            return {
                "topics": [f"{self.prefix}/tele/{{sensor}}/+"],
                "ignore_topics": [f"{self.prefix}/tele/+/LWT"],
                "time_field": "Time",
            }
        if self.shape == "zigbee2mqtt":
            return {"topics": [f"{self.prefix}/{{sensor}}"]}
        return {"topics": [f"{self.prefix}/{{sensor}}/state"], "time_field": "ts"}

    def message(self, device: str) -> tuple[str, bytes]:
        """The next message of ``device``; advances its ``seq``."""
        seq = self.seq[device]
        self.seq[device] = seq + 1
        v = self._climate[device].step()
        # Strictly increasing per device, so two readings never share a point identity.
        now_us = self._last_us[device] = max(time.time_ns() // 1000, self._last_us[device] + 1)
        body: dict[str, Any]
        if self.shape == "tasmota":
            stamp = datetime.fromtimestamp(now_us / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
            body = {
                "Time": stamp,
                "AM2301": {"Temperature": v.temperature, "Humidity": v.humidity},
                "BMP280": {"Pressure": v.pressure},
                "seq": seq,
                "TempUnit": "C",
            }
        elif self.shape == "zigbee2mqtt":
            body = {
                "seq": seq,
                "temperature": v.temperature,
                "humidity": v.humidity,
                "pressure": v.pressure,
                "battery": 100,
                "linkquality": 120,
            }
        else:
            body = {
                "seq": seq,
                "temperature": v.temperature,
                "humidity": v.humidity,
                "pressure": v.pressure,
                "ts": now_us,
            }
        return self.topic(device), json.dumps(body, separators=(",", ":")).encode()

    def messages(self, n: int) -> Iterator[tuple[str, bytes]]:
        """``n`` messages, round-robin over the devices."""
        for i in range(n):
            yield self.message(self.names[i % len(self.names)])

    def lwt(self, device: str, online: bool = True) -> tuple[str, bytes]:
        """A Tasmota-style last-will message (``Online``/``Offline``), which carries no reading."""
        state = b"Online" if online else b"Offline"
        return f"{self.prefix}/tele/{device}/LWT", state
