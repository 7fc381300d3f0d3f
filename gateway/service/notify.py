"""systemd's notification protocol (``sd_notify``): one datagram to ``$NOTIFY_SOCKET``.

``Type=notify`` units learn from us when we are ready (``READY=1``), what we are doing
(``STATUS=``), that we are alive (``WATCHDOG=1``, expected every ``$WATCHDOG_USEC``;
we send at half of it) and that we are reloading or stopping. Without
``$NOTIFY_SOCKET`` (run by hand, in tests) every call does nothing.

The protocol is small enough to speak directly: ``KEY=value`` lines in one
``AF_UNIX``/``SOCK_DGRAM`` datagram; an address starting with ``@`` is in the abstract
namespace. Sending never blocks the loop: the socket is non-blocking and a full queue
only loses that one message (the next one says the same).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger("gateway.notify")


class Notifier:
    """Sends state changes to systemd when started under a ``Type=notify`` unit."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_s = _watchdog_seconds(env)
        self._sock: socket.socket | None = None
        self._failed = False
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens."""
        return self._sock is not None

    def send(self, **fields: str) -> bool:
        """Send ``KEY=value`` lines (keyword names are upper-cased); False if not sent."""
        if self._sock is None:
            return False
        text = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(text.encode(), self.address)
        except OSError as err:
            # Say it once: a missing socket stays missing, and the watchdog would repeat
            # this twice per interval.
            if not self._failed:
                self._failed = True
                log.warning(
                    "could not notify systemd", socket=self.address.lstrip("\0"), error=str(err)
                )
            return False
        self._failed = False
        return True

    def ready(self, status: str) -> bool:
        """Startup finished: config loaded, spool open, device tasks started."""
        return self.send(ready="1", status=status)

    def status(self, text: str) -> bool:
        """A one-line summary shown by ``systemctl status``."""
        return self.send(status=text)

    def watchdog(self) -> bool:
        """The event loop is alive."""
        return self.send(watchdog="1")

    def reloading(self) -> bool:
        """Reloading the configuration; :meth:`ready` ends it."""
        # MONOTONIC_USEC lets systemd ≥ 253 tell this reload from an earlier one.
        return self.send(reloading="1", monotonic_usec=str(time.monotonic_ns() // 1000))

    def stopping(self) -> bool:
        """Shutting down."""
        return self.send(stopping="1", status="stopping")

    def close(self) -> None:
        """Close the socket; later calls do nothing."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """``$WATCHDOG_USEC`` in seconds when it is meant for this process, else None."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None
