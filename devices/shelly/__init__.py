"""The ``shelly`` driver: Shelly Gen2+ and Gen1 devices over MQTT.

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.shelly._driver import ShellyDriver, ShellyOptions

__all__ = ["ShellyDriver", "ShellyOptions"]
