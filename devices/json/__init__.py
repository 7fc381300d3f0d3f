"""The ``json`` driver: JSON payloads (or bare values) from MQTT topics.

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.json._driver import JsonDriver, JsonOptions

__all__ = ["JsonDriver", "JsonOptions"]
