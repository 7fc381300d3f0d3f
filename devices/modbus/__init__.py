"""The ``modbus`` driver: registers of Modbus RTU slaves (several on one bus).

See ``README.md`` beside this file; ``sample.toml`` is its configuration reference.
"""

from devices.modbus._driver import ModbusDriver, ModbusOptions, Register

__all__ = ["ModbusDriver", "ModbusOptions", "Register"]
