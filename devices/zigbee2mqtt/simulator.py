"""Simulated Zigbee2MQTT devices for tests and the demo: (topic, payload) pairs.

No broker code here: publish the pairs with aiomqtt or paho yourself. The shapes are
Zigbee2MQTT's own (tests/data/mqtt/payloads.jsonl): a climate sensor (battery,
voltage in mV, linkquality), a plug (state ON/OFF, power, energy, an ``update`` object),
availability and bridge messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from devices._climate import Climate

__all__ = ["PLUG", "SENSOR", "Zigbee2MqttPublisher"]

SENSOR = "living_room_sensor"
PLUG = "kitchen/plug"  # friendly names may hold slashes


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class Zigbee2MqttPublisher:
    """Produces the messages of a Zigbee2MQTT network with base topic ``base``."""

    def __init__(self, base: str = "zigbee2mqtt", *, seed: int | None = None) -> None:
        self.base = base
        self._climate = Climate(seed)
        self._energy = 3.41

    def options(self) -> dict[str, Any]:
        """``zigbee2mqtt`` driver options that decode these messages."""
        return {"base_topic": self.base, "topics": [f"{self.base}/#"]}

    def sensor(self) -> tuple[str, bytes]:
        """The climate sensor's next state."""
        v = self._climate.step()
        body = {"battery": 100, "humidity": v.humidity, "linkquality": 120,
                "pressure": v.pressure, "temperature": v.temperature, "voltage": 3005}  # fmt: skip
        return f"{self.base}/{SENSOR}", _json(body)

    def plug(self) -> tuple[str, bytes]:
        """The plug's next state."""
        self._energy = round(self._energy + 0.01, 2)
        body = {"current": 0.12, "energy": self._energy, "linkquality": 76, "power": 24,
                "state": "ON", "voltage": 230.4, "update": {"state": "idle"}}  # fmt: skip
        return f"{self.base}/{PLUG}", _json(body)

    def availability(self, name: str = PLUG, online: bool = True) -> tuple[str, bytes]:
        """``<name>/availability`` as Zigbee2MQTT 1.30+ sends it."""
        return f"{self.base}/{name}/availability", _json(
            {"state": "online" if online else "offline"}
        )

    def bridge(self) -> tuple[str, bytes]:
        """A bridge message, which carries no reading."""
        return f"{self.base}/bridge/state", _json({"state": "online"})

    def messages(self, rounds: int) -> Iterator[tuple[str, bytes]]:
        """``rounds`` times: the sensor, then the plug."""
        for _ in range(rounds):
            yield self.sensor()
            yield self.plug()
