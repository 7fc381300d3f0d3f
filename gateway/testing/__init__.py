"""The driver test kit: virtual serial ports, scripted devices, captures, real servers.

Public and stable for driver authors (see ``docs/writing-a-driver.md``, "Testing"):

* :class:`SerialPty` (alias :data:`VirtualPort`) — a pseudo-terminal the gateway opens
  like ``/dev/ttyUSB0``; :class:`PluggableSerialPty` (alias :data:`PluggablePort`) — one
  behind a stable symlink that can be unplugged and plugged in again;
* :class:`ScriptedDevice` — a device conversation: expect request → send response,
  stream frames at a rate, answer late, replay a :class:`Capture`;
* :func:`run_serial_driver` — a driver run through the gateway's own serial runner,
  returning the readings it produced and its counters;
* :class:`Mosquitto`, :class:`VictoriaMetrics` — the real servers as subprocesses;
* pytest fixtures in :mod:`gateway.testing.fixtures`
  (``pytest_plugins = ["gateway.testing.fixtures"]``).

Importing this package needs no pytest; only the fixtures module does.
"""

from gateway.testing.capture import HEADER, Capture, CaptureEvent
from gateway.testing.device import ScriptedDevice
from gateway.testing.harness import SerialRun, run_serial_driver
from gateway.testing.pty import PluggableSerialPty, SerialPty
from gateway.testing.servers import (
    Mosquitto,
    ServerProcess,
    ServerStartError,
    VictoriaMetrics,
    free_port,
    http_request,
    wait_until,
)

VirtualPort = SerialPty
PluggablePort = PluggableSerialPty

__all__ = [
    "HEADER",
    "Capture",
    "CaptureEvent",
    "Mosquitto",
    "PluggablePort",
    "PluggableSerialPty",
    "ScriptedDevice",
    "SerialPty",
    "SerialRun",
    "ServerProcess",
    "ServerStartError",
    "VictoriaMetrics",
    "VirtualPort",
    "free_port",
    "http_request",
    "run_serial_driver",
    "wait_until",
]
