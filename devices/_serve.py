"""Serving a simulated binary device on a pseudo-terminal master, for the simulators.

The device model is pure protocol: it frames requests, answers them and may send
frames of its own on a schedule (a sensor in active mode). :func:`serve_blocking`
does the I/O in a thread until ``stop`` is set.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from collections.abc import Iterator
from typing import Protocol

from devices._sink import write_all
from gateway.driver import Framer

__all__ = ["SimulatedDevice", "serve_blocking", "serving"]

# How long to wait before reading again while no one has the slave side open (EIO).
_HANGUP_RETRY_S = 0.05
# A device does not wait for a reader; a write nobody takes within this is dropped.
_WRITE_TIMEOUT_S = 0.5


class SimulatedDevice(Protocol):
    """What :func:`serve_blocking` needs from a device model."""

    def request_framer(self) -> Framer:
        """Cuts the host's requests out of the bytes it writes."""
        ...

    def answer(self, request: bytes) -> bytes | None:
        """The reply to one request frame (None: no reply)."""
        ...

    def due(self, now: float) -> bytes | None:
        """Bytes the device sends unasked at monotonic time ``now`` (None: nothing)."""
        ...


def serve_blocking(
    fd: int, device: SimulatedDevice, stop: threading.Event, tick_s: float = 0.01
) -> None:
    """Answer requests on ``fd`` (a pty master) and send due frames until ``stop`` is set."""
    os.set_blocking(fd, False)
    framer = device.request_framer()
    while not stop.is_set():
        if (unasked := device.due(time.monotonic())) is not None:
            _send(fd, unasked)
        if not select.select([fd], [], [], tick_s)[0]:
            continue
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            continue
        except OSError as err:
            if err.errno != errno.EIO:  # Linux: EIO while the slave side is closed
                raise
            stop.wait(_HANGUP_RETRY_S)
            continue
        for request in framer.feed(data):
            if (reply := device.answer(request)) is not None:
                _send(fd, reply)


@contextlib.contextmanager
def serving(fd: int, device: SimulatedDevice) -> Iterator[SimulatedDevice]:
    """Serve ``device`` on ``fd`` in a thread for the duration of a ``with`` block."""
    stop = threading.Event()
    thread = threading.Thread(
        target=serve_blocking, args=(fd, device, stop), name="simulated-device", daemon=True
    )
    thread.start()
    try:
        yield device
    finally:
        stop.set()
        thread.join(5)


def _send(fd: int, data: bytes) -> None:
    # Nobody reads (the port is closed): a real device's bytes are lost too.
    with contextlib.suppress(TimeoutError, OSError):
        write_all(fd, data, timeout=_WRITE_TIMEOUT_S)
