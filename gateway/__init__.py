"""sensor-gateway: serial and MQTT sensors → normalized readings → durable spool → InfluxDB."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sensor-gateway")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
