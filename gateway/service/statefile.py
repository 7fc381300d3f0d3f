"""Small state files (status, unit catalog, discovered devices, client id): written
whole, atomically, off the event loop.

A reader (``status``, ``query``, the next start) sees the old file or the new one,
never half of one: the data goes to a temporary file beside it that replaces it in one
``rename``. No fsync: these files are rewritten often and an SD card pays for every
sync; after a power cut the previous version is as good.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Protocol

__all__ = ["Snapshotting", "save_snapshot", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step (blocking: run it off the event loop).

    The temporary name carries the thread, so two writers never share it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Snapshotting(Protocol):
    """A state kept in memory and saved as a file when it changed."""

    changed: bool

    @property
    def path(self) -> Path | None: ...

    def snapshot(self) -> bytes | None:
        """The file's new content if it changed since the last snapshot, else None."""
        ...


async def save_snapshot(state: Snapshotting) -> None:
    """Write ``state``'s snapshot when it changed; on failure it stays changed, so the
    next call tries again."""
    data = state.snapshot()
    if data is None or state.path is None:
        return
    try:
        await asyncio.to_thread(write_atomic, state.path, data)
    except BaseException:
        state.changed = True
        raise
