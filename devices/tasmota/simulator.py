"""Simulated Tasmota devices for tests and the demo: (topic, payload) pairs.

No broker code here: publish the pairs with aiomqtt or paho yourself::

    sim = TasmotaPublisher(prefix=unique_name, seed=1)
    options = sim.options()                # matching ``tasmota`` driver options
    for topic, payload in sim.messages(3):
        await client.publish(topic, payload, qos=1)

The shapes are Tasmota's own (tests/data/mqtt/payloads.jsonl): an AM2301 climate
sensor, a BLE bridge with an ATC thermometer and a DS18B20, a power plug's ENERGY, the
STATE report and the LWT. ``Time`` is whole seconds of local time in ``timezone``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from devices._climate import Climate

__all__ = ["TasmotaPublisher"]

NODES = ("bathroom", "ble_bridge", "plug")
"""The simulated devices' Tasmota topics."""


class TasmotaPublisher:
    """Produces the messages of three Tasmota devices (see :data:`NODES`).

    Args:
        prefix: the topic level(s) before ``tele``, e.g. a test's unique name.
        seed: makes values (not times) repeatable.
        timezone: the zone the devices' clocks are set to.
    """

    def __init__(self, prefix: str = "sim", *, seed: int | None = None, timezone: str = "UTC"):
        self.prefix = prefix
        self.timezone = timezone
        self._zone = ZoneInfo(timezone)
        self._climate = Climate(seed)
        self._total = 123.0

    def options(self) -> dict[str, Any]:
        """``tasmota`` driver options that decode these messages."""
        return {
            "topics": [
                f"{self.prefix}/tele/{{node}}/{kind}" for kind in ("SENSOR", "STATE", "LWT")
            ],
            "timezone": self.timezone,
        }

    def _time(self) -> str:
        return datetime.fromtimestamp(int(time.time()), self._zone).strftime("%Y-%m-%dT%H:%M:%S")

    def _msg(self, node: str, kind: str, body: dict[str, Any]) -> tuple[str, bytes]:
        payload = json.dumps({"Time": self._time(), **body}, separators=(",", ":")).encode()
        return f"{self.prefix}/tele/{node}/{kind}", payload

    def sensor(self, node: str) -> tuple[str, bytes]:
        """The next SENSOR message of ``node``."""
        v = self._climate.step()
        if node == "bathroom":
            return self._msg(
                node,
                "SENSOR",
                {
                    "AM2301": {"Temperature": v.temperature, "Humidity": v.humidity},
                    "TempUnit": "C",
                },
            )
        if node == "ble_bridge":
            atc = {"mac": "a4c13804b555", "Temperature": v.temperature, "Humidity": v.humidity}
            return self._msg(
                node,
                "SENSOR",
                {
                    "ATC04b555": {**atc, "Battery": 54, "RSSI": -43},
                    "DS18B20-1": {"Id": "3C01D0759E1A", "Temperature": round(v.temperature - 3, 1)},
                    "TempUnit": "C",
                },
            )
        self._total = round(self._total + 0.001, 3)
        energy = {"TotalStartTime": "2025-01-10T09:12:00", "Total": self._total, "Power": 57}
        return self._msg(node, "SENSOR", {"ENERGY": {**energy, "Voltage": 231, "Current": 0.26}})

    def state(self, node: str) -> tuple[str, bytes]:
        """A STATE report of ``node``."""
        wifi = {"AP": 1, "SSId": "home", "Channel": 6, "RSSI": 62, "Signal": -69}
        return self._msg(node, "STATE", {"UptimeSec": 766860, "Heap": 25, "Wifi": wifi})

    def lwt(self, node: str, online: bool = True) -> tuple[str, bytes]:
        """The last-will message of ``node``: ``Online`` or ``Offline``."""
        return f"{self.prefix}/tele/{node}/LWT", b"Online" if online else b"Offline"

    def messages(self, rounds: int) -> Iterator[tuple[str, bytes]]:
        """``rounds`` SENSOR messages of every node."""
        for _ in range(rounds):
            for node in NODES:
                yield self.sensor(node)
