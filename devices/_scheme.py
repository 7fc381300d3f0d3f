"""The measurement naming scheme shared by the firmware drivers (docs/measurement-scheme.md).

Every firmware driver (``tasmota``, ``shelly``, …) suggests the measurement
:data:`MEASUREMENT`, tags the firmware's device name ``node`` and a sensor inside it
``sensor``, and names each quantity as in :data:`QUANTITIES`, in that quantity's unit.
So a Tasmota and a Zigbee2MQTT thermometer land side by side as ``temperature`` in °C.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from gateway.pipeline.units import converter

__all__ = ["MEASUREMENT", "QUANTITIES", "to_scheme_unit"]

MEASUREMENT: Final = "sensors"
"""The measurement every firmware driver suggests (a device's ``measurement`` wins)."""

# Field name → the unit it is stored in. Names not listed are dimensionless or counts.
QUANTITIES: Final[dict[str, str]] = {
    "temperature": "degC",
    "device_temperature": "degC",
    "dew_point": "degC",
    "humidity": "%",
    "pressure": "hPa",
    "sea_pressure": "hPa",
    "illuminance": "lx",
    "co2": "ppm",
    "battery": "%",
    "power": "W",
    "apparent_power": "VA",
    "reactive_power": "var",
    "energy": "kWh",
    "energy_today": "kWh",
    "energy_yesterday": "kWh",
    "energy_period": "Wh",
    "energy_returned": "kWh",
    "voltage": "V",
    "current": "A",
    "frequency": "Hz",
    "rssi": "dBm",
    "uptime": "s",
}

_CACHE: dict[tuple[str, str], Callable[[float], float]] = {}


def to_scheme_unit(value: float, unit: str, to_unit: str) -> float:
    """``value`` in ``unit`` converted to ``to_unit`` (ValueError for unknown units)."""
    if unit == to_unit:
        return value
    if unit == "Wmin":  # Shelly Gen1 energy counters: watt-minutes
        value, unit = value / 60, "Wh"
    convert = _CACHE.get((unit, to_unit))
    if convert is None:
        convert = _CACHE[unit, to_unit] = converter(unit, to_unit)
    return convert(value)
