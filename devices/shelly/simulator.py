"""Simulated Shelly devices for tests and the demo: (topic, payload) pairs.

No broker code here: publish the pairs with aiomqtt or paho yourself::

    sim = ShellyPublisher(prefix=unique_name, seed=1)
    options = sim.options()                # matching ``shelly`` driver options
    for topic, payload in sim.messages(3):
        await client.publish(topic, payload, qos=1)

The shapes are the firmware's own (tests/data/mqtt/payloads.jsonl): a Plus H&T
(``temperature:0``, ``humidity:0``) and a Plus 1PM (``switch:0``), as NotifyStatus on
``<id>/events/rpc`` and as ``<id>/status/<component>``; a Gen1 H&T's
``shellies/<id>/sensor/…`` values; the ``online`` topics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from devices._climate import Climate

__all__ = ["GEN1_HT", "HT", "PM", "ShellyPublisher"]

HT = "shellyplusht-c049ef8b3a44"
PM = "shellyplus1pm-a8032ab12345"
GEN1_HT = "shellyht-6A1B2C"


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class ShellyPublisher:
    """Produces the messages of a Plus H&T, a Plus 1PM and a Gen1 H&T.

    Args:
        prefix: a level put before every topic (Gen2+ MQTT prefix ``<prefix>/<id>``),
            e.g. a test's unique name.
        seed: makes values (not times) repeatable.
    """

    def __init__(self, prefix: str = "sim", *, seed: int | None = None) -> None:
        self.prefix = prefix
        self._climate = Climate(seed)
        self._energy_wh = 1234.5

    def options(self) -> dict[str, Any]:
        """``shelly`` driver options that decode these messages."""
        p = self.prefix
        return {
            "topics": [
                f"{p}/{{node}}/events/rpc",
                f"{p}/{{node}}/status/+",
                f"{p}/{{node}}/online",
                f"{p}/shellies/{{node}}/#",
            ]
        }

    def notify(self, ts: float | None = None) -> tuple[str, bytes]:
        """A NotifyStatus of the Plus H&T stamped ``ts`` (now by default)."""
        v = self._climate.step()
        params = {
            "ts": round(time.time() if ts is None else ts, 2),
            "temperature:0": {
                "id": 0,
                "tC": v.temperature,
                "tF": round(v.temperature * 1.8 + 32, 1),
            },
            "humidity:0": {"id": 0, "rh": v.humidity},
        }
        body = {"src": HT, "dst": f"{HT}/events", "method": "NotifyStatus", "params": params}
        return f"{self.prefix}/{HT}/events/rpc", _json(body)

    def switch_status(self) -> tuple[str, bytes]:
        """The Plus 1PM's ``status/switch:0``: power, voltage, current, energy in Wh."""
        self._energy_wh = round(self._energy_wh + 1.5, 3)
        body = {
            "id": 0,
            "source": "HTTP",
            "output": True,
            "apower": 112.3,
            "voltage": 229.8,
            "current": 0.512,
            "aenergy": {"total": self._energy_wh, "by_minute": [1.1, 1.2, 1.3]},
            "temperature": {"tC": 41.2, "tF": 106.2},
        }
        return f"{self.prefix}/{PM}/status/switch:0", _json(body)

    def gen1(self) -> list[tuple[str, bytes]]:
        """A Gen1 H&T's temperature and humidity (bare values)."""
        v = self._climate.step()
        base = f"{self.prefix}/shellies/{GEN1_HT}/sensor"
        return [(f"{base}/temperature", str(v.temperature).encode()),
                (f"{base}/humidity", str(v.humidity).encode())]  # fmt: skip

    def online(self, device: str = PM, online: bool = True) -> tuple[str, bytes]:
        """The Gen2+ ``<id>/online`` message."""
        return f"{self.prefix}/{device}/online", b"true" if online else b"false"

    def messages(self, rounds: int) -> Iterator[tuple[str, bytes]]:
        """``rounds`` times: a NotifyStatus, a switch status and the Gen1 values."""
        for _ in range(rounds):
            yield self.notify()
            yield self.switch_status()
            yield from self.gen1()
