"""The ``tasmota`` driver: Tasmota telemetry (SENSOR, STATE, LWT) from MQTT.

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.tasmota._driver import TasmotaDriver, TasmotaOptions

__all__ = ["TasmotaDriver", "TasmotaOptions"]
