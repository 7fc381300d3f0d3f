"""Zigbee2MQTT payload keys as data.

Zigbee2MQTT already names values in snake_case in the units of the measurement scheme
(°C, %, hPa, W, kWh, V, A, lx, ppm); only these differ or carry no reading.
"""

from __future__ import annotations

from typing import Final

__all__ = ["RENAME", "SKIP", "SUFFIX_IGNORED"]

RENAME: Final[dict[str, str]] = {
    "illuminance_lux": "illuminance",
    "pm25": "pm2_5",
}

SKIP: Final = frozenset({"update", "update_available", "last_seen", "device", "elapsed"})
"""Keys that are housekeeping, not readings (OTA state, device info, timing)."""

SUFFIX_IGNORED: Final = frozenset({"set", "get"})
"""``<name>/set``, ``<name>/get`` (and below): commands to the device, not readings."""
