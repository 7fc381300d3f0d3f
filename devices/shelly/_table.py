"""Shelly components as data: component type → value path → (field name, unit sent).

Gen2+ (Plus, Pro, Gen3/Gen4) status objects per component type; the unit is what the
firmware sends, converted to the measurement scheme's unit where they differ (energy
counters in Wh → kWh). Components not listed (sys, wifi, cloud, mqtt, ble…) carry no
readings. Gen1 topics (``shellies/<id>/…``) in :data:`GEN1`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMPONENTS", "GEN1"]

_METER: Final[dict[str, tuple[str, str | None]]] = {
    "output": ("state", None),
    "apower": ("power", "W"),
    "voltage": ("voltage", "V"),
    "current": ("current", "A"),
    "freq": ("frequency", "Hz"),
    "pf": ("power_factor", None),
    "aenergy.total": ("energy", "Wh"),
    "ret_aenergy.total": ("energy_returned", "Wh"),
    "temperature.tC": ("device_temperature", "degC"),
}

COMPONENTS: Final[dict[str, dict[str, tuple[str, str | None]]]] = {
    "temperature": {"tC": ("temperature", "degC")},
    "humidity": {"rh": ("humidity", "%")},
    "illuminance": {"lux": ("illuminance", "lx")},
    "voltmeter": {"voltage": ("voltage", "V")},
    "devicepower": {"battery.percent": ("battery", "%"), "battery.V": ("battery_voltage", "V")},
    "input": {"state": ("state", None), "percent": ("percent", "%")},
    "switch": _METER,
    "pm1": _METER,
    "em1": {**_METER, "act_power": ("power", "W"), "aprt_power": ("apparent_power", "VA")},
    "cover": {**_METER, "current_pos": ("position", "%")},
    "light": {**_METER, "brightness": ("brightness", "%")},
}

# Gen1 topic tails (after shellies/<id>/) → (field name, unit sent). <n> is a channel.
GEN1: Final[dict[str, tuple[str, str | None]]] = {
    "sensor/temperature": ("temperature", "degC"),
    "sensor/humidity": ("humidity", "%"),
    "sensor/battery": ("battery", "%"),
    "sensor/lux": ("illuminance", "lx"),
    "relay/<n>": ("state", None),
    "relay/<n>/power": ("power", "W"),
    "relay/<n>/energy": ("energy", "Wmin"),
    "emeter/<n>/power": ("power", "W"),
    "emeter/<n>/voltage": ("voltage", "V"),
    "emeter/<n>/current": ("current", "A"),
    "emeter/<n>/total": ("energy", "Wh"),
    "temperature": ("device_temperature", "degC"),
}
