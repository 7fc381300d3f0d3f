"""The ``dsmr`` driver: smart meters' P1 port (DSMR 2.2-5, Belgian e-MUCS, Luxembourg Smarty).

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.dsmr._driver import DsmrDriver, DsmrOptions

__all__ = ["DsmrDriver", "DsmrOptions"]
