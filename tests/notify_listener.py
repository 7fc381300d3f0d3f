"""A real ``AF_UNIX`` datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from servers import wait_until


@dataclass(frozen=True, slots=True)
class Notice:
    at: float
    """Monotonic time it arrived."""
    fields: dict[str, str]


class NotifyListener:
    """Binds a datagram socket (short path: AF_UNIX paths are limited to 107 bytes)."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
        self.path = self._dir / "notify"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.1)
        self.notices: list[Notice] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-listener", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._lock:
                self.notices.append(Notice(time.monotonic(), fields))

    def env(self, watchdog_s: float | None = None) -> dict[str, str]:
        env = {"NOTIFY_SOCKET": str(self.path)}
        if watchdog_s is not None:
            env["WATCHDOG_USEC"] = str(int(watchdog_s * 1e6))
        return env

    def with_key(self, key: str, since: float = 0.0) -> list[Notice]:
        with self._lock:
            return [n for n in self.notices if key in n.fields and n.at >= since]

    def wait_for(self, key: str, value: str | None = None, timeout: float = 15.0) -> Notice:
        found: list[Notice] = []

        def seen() -> bool:
            for n in self.with_key(key):
                if value is None or n.fields[key] == value:
                    found.append(n)
                    return True
            return False

        wait_until(seen, timeout=timeout, what=f"notification {key}={value}")
        return found[0]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        with contextlib.suppress(OSError):
            self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)
