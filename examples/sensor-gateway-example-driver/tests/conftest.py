"""The gateway's driver test kit: virtual ports, scripted devices, real servers."""

pytest_plugins = ["gateway.testing.fixtures"]
