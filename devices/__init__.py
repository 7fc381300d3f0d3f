"""The built-in device drivers, one folder each (code, ``sample.toml``, ``README.md``, simulator).

They register through the ``sensor_gateway.devices`` entry-point group like any
third-party driver; see ``docs/writing-a-driver.md``.
"""
