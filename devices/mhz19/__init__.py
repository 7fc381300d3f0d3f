"""The ``mhz19`` driver: the Winsen MH-Z19 CO2 sensor (polled with command 0x86).

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.mhz19._driver import Mhz19Driver, Mhz19Options

__all__ = ["Mhz19Driver", "Mhz19Options"]
