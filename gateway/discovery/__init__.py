"""Zero-config devices: Home Assistant MQTT discovery and Tasmota's own discovery.

Off by default; ``[brokers.<name>] discovery = ["homeassistant", "tasmota"]`` turns it
on for one broker (docs/discovery.md). Discovered sensors become ordinary pipeline
devices, added and removed while the gateway runs, and kept in the state directory.
"""
