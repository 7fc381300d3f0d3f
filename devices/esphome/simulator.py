"""A simulated ESPHome node for tests and the demo: (topic, payload) pairs.

No broker code here: publish the pairs with aiomqtt or paho yourself. The shapes are
ESPHome's own (tests/data/mqtt/payloads.jsonl): one bare value per
``<node>/sensor/<id>/state`` (``nan`` while a sensor has no reading), ``ON``/``OFF``
binary sensors and ``<node>/status``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from devices._climate import Climate

__all__ = ["EsphomePublisher"]


class EsphomePublisher:
    """Produces the messages of one ESPHome node called ``node`` under ``prefix``."""

    def __init__(self, prefix: str = "sim", node: str = "greenhouse", *, seed: int | None = None):
        self.prefix = prefix
        self.node = node
        self._climate = Climate(seed)

    def options(self) -> dict[str, Any]:
        """``esphome`` driver options that decode these messages."""
        p = self.prefix
        return {
            "topics": [
                f"{p}/{{node}}/sensor/{{sensor}}/state",
                f"{p}/{{node}}/binary_sensor/{{sensor}}/state",
                f"{p}/{{node}}/status",
            ]
        }

    def _topic(self, rest: str) -> str:
        return f"{self.prefix}/{self.node}/{rest}"

    def status(self, online: bool = True) -> tuple[str, bytes]:
        """``<node>/status``: ``online`` or ``offline``."""
        return self._topic("status"), b"online" if online else b"offline"

    def nan(self) -> tuple[str, bytes]:
        """A sensor without a reading, as ESPHome publishes it."""
        return self._topic("sensor/air_temperature/state"), b"nan"

    def messages(self, rounds: int) -> Iterator[tuple[str, bytes]]:
        """``rounds`` times: air temperature, air humidity, soil moisture, the door."""
        for i in range(rounds):
            v = self._climate.step()
            yield self._topic("sensor/air_temperature/state"), f"{v.temperature:.2f}".encode()
            yield self._topic("sensor/air_humidity/state"), f"{v.humidity:.1f}".encode()
            yield self._topic("sensor/soil_moisture/state"), b"41.7"
            yield self._topic("binary_sensor/door/state"), b"ON" if i % 2 else b"OFF"
