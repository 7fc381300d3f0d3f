"""The ``nmea`` driver: GNSS receivers speaking NMEA 0183 (GGA, RMC, GLL, VTG, GSA, ZDA).

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.nmea._driver import NmeaDriver, NmeaOptions

__all__ = ["NmeaDriver", "NmeaOptions"]
