"""Where a simulator writes its bytes: a file descriptor (e.g. a pty master) or a file object."""

from __future__ import annotations

import asyncio
import os
import select
import time
from typing import Protocol

__all__ = ["ByteSink", "Target", "write_all", "write_all_async"]


class ByteSink(Protocol):
    """Anything with ``write(bytes)``: a file opened ``"wb"``, ``io.BytesIO``, a pyserial port."""

    def write(self, data: bytes, /) -> object: ...


Target = int | ByteSink
"""A file descriptor, or a binary file-like object."""


def write_all(target: Target, data: bytes, timeout: float = 5.0) -> None:
    """Write all of ``data``; a non-blocking fd waits until writable.

    Raises:
        TimeoutError: the reader did not take the bytes within ``timeout`` seconds.
    """
    if not isinstance(target, int):
        target.write(data)
        flush = getattr(target, "flush", None)
        if callable(flush):
            flush()
        return
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    while view:
        try:
            view = view[os.write(target, view) :]
            continue
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            msg = f"fd {target}: {len(view)} bytes not taken by the reader in {timeout} s"
            raise TimeoutError(msg)
        select.select([], [target], [], min(left, 0.05))


async def write_all_async(target: Target, data: bytes) -> None:
    """Write all of ``data`` without blocking the event loop (fds are switched to non-blocking)."""
    if not isinstance(target, int):
        write_all(target, data)
        return
    os.set_blocking(target, False)
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(target, view) :]
            continue
        except BlockingIOError:
            pass
        ready: asyncio.Future[None] = loop.create_future()

        def wake(fut: asyncio.Future[None] = ready) -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_writer(target, wake)
        try:
            await ready
        finally:
            loop.remove_writer(target)
