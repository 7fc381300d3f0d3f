"""Tasmota's JSON keys as data: key → (clean field name, the unit Tasmota sends it in).

A unit of ``"TempUnit"`` or ``"PressureUnit"`` means the payload's own ``TempUnit`` /
``PressureUnit`` says it (Tasmota's SetOption8 and SetOption24). Keys not listed are
named by :func:`snake_case` and passed as they come; string values not listed are
skipped, except the identifiers in :data:`ID_KEYS`, which become the ``id`` tag.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ID_KEYS", "META_KEYS", "SENSOR_KEYS", "STATE_KEYS"]

SENSOR_KEYS: Final[dict[str, tuple[str, str | None]]] = {
    "Temperature": ("temperature", "TempUnit"),
    "DewPoint": ("dew_point", "TempUnit"),
    "Humidity": ("humidity", None),
    "Pressure": ("pressure", "PressureUnit"),
    "SeaPressure": ("sea_pressure", "PressureUnit"),
    "Illuminance": ("illuminance", None),
    "CarbonDioxide": ("co2", None),
    "eCO2": ("co2", None),
    "TVOC": ("tvoc", None),
    "Battery": ("battery", None),
    "RSSI": ("rssi", None),
    "Btn": ("button", None),
    # ENERGY (power monitoring plugs): Tasmota reports kWh, W, VA, var, V, A.
    "Total": ("energy", "kWh"),
    "Today": ("energy_today", "kWh"),
    "Yesterday": ("energy_yesterday", "kWh"),
    "Period": ("energy_period", "Wh"),
    "Power": ("power", "W"),
    "ApparentPower": ("apparent_power", None),
    "ReactivePower": ("reactive_power", None),
    "Factor": ("power_factor", None),
    "Voltage": ("voltage", None),
    "Current": ("current", None),
    "Frequency": ("frequency", None),
}

# STATE report (tele/<topic>/STATE, every TelePeriod): path → field name.
STATE_KEYS: Final[dict[tuple[str, ...], str]] = {
    ("UptimeSec",): "uptime",
    ("Heap",): "heap_kb",
    ("LoadAvg",): "load_avg",
    ("Wifi", "RSSI"): "wifi_quality",
    ("Wifi", "Signal"): "wifi_rssi",
}

ID_KEYS: Final = frozenset({"Id", "mac", "MAC", "Address"})
"""Sensor identifiers (DS18B20 ``Id``, BLE ``mac``): a tag, never a field."""

META_KEYS: Final = frozenset({"Time", "TempUnit", "PressureUnit", "SpeedUnit", "Epoch"})
"""Top-level keys of a SENSOR payload that are not sensors."""
