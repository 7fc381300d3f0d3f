"""The ``zigbee2mqtt`` driver: Zigbee2MQTT device messages and availability.

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.zigbee2mqtt._driver import Zigbee2MqttDriver, Zigbee2MqttOptions

__all__ = ["Zigbee2MqttDriver", "Zigbee2MqttOptions"]
