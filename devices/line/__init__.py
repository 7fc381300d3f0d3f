"""The ``line`` driver: text lines from a serial port (key=value, JSON, CSV or regex).

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.line._driver import LineDriver, LineOptions

__all__ = ["LineDriver", "LineOptions"]
