"""One gateway per state directory: an exclusive lock held for the process's lifetime.

Two gateways on one state directory would share a spool and a status file and, with the
same MQTT client id, kick each other off the broker in turn. The lock is ``flock`` on
``<state_dir>/gateway.lock``; the kernel releases it when the process ends, however it
ends, so a stale lock file after kill -9 never blocks the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from gateway.errors import GatewayError

LOCK_NAME = "gateway.lock"


class StateDirBusy(GatewayError):
    """Another gateway holds the state directory."""


class StateDirLock:
    """The held lock; its file also says where this gateway writes its status."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, info: dict[str, Any]) -> None:
        """Take the lock or raise :class:`StateDirBusy` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_lock_info(self.path.parent).get("pid", "?")
            os.close(fd)
            raise StateDirBusy(
                f"another sensor-gateway (pid {holder}) is using {self.path.parent}"
            ) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), **info}).encode())
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays; its content is only a hint)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


def read_lock_info(state_dir: Path) -> dict[str, Any]:
    """What the last gateway on ``state_dir`` wrote into its lock file ({} if nothing)."""
    try:
        info = json.loads((state_dir / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
