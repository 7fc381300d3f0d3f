"""The open client connections of one of the gateway's small servers (the status
socket, the HTTP endpoint), ended together when the server stops.

A handler still waiting on its client when the loop shuts down would be cancelled with
it, which Python 3.11 logs as an error with a traceback; aborting the connections first
lets every handler return on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

__all__ = ["Connections"]


class Connections:
    """Tracks the writers of the connections being served."""

    def __init__(self) -> None:
        self._writers: set[asyncio.StreamWriter] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return len(self._writers)

    @contextlib.contextmanager
    def serving(self, writer: asyncio.StreamWriter) -> Iterator[None]:
        """Count ``writer``'s connection as open while the block runs."""
        self._writers.add(writer)
        self._idle.clear()
        try:
            yield
        finally:
            self._writers.discard(writer)
            if not self._writers:
                self._idle.set()

    async def end_all(self, within: float) -> None:
        """Abort every open connection and wait (at most ``within`` s) for the handlers."""
        for writer in self._writers:
            writer.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()
