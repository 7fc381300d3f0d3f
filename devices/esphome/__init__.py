"""The ``esphome`` driver: ESPHome nodes' MQTT state topics.

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.esphome._driver import EsphomeDriver, EsphomeOptions

__all__ = ["EsphomeDriver", "EsphomeOptions"]
