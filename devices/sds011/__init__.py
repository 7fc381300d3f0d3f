"""The ``sds011`` driver: the Nova Fitness SDS011 dust sensor (PM2.5, PM10).

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.sds011._driver import Sds011Driver, Sds011Options

__all__ = ["Sds011Driver", "Sds011Options"]
