"""An example third-party driver for sensor-gateway: a polled serial counter.

Installed, it registers as ``example_counter`` in the ``sensor_gateway.devices``
entry-point group (see ``pyproject.toml``).
"""

from sg_example_driver._driver import CounterDriver, CounterOptions

__all__ = ["CounterDriver", "CounterOptions"]
