"""Several polled devices on one serial line (an RS-485 bus) share one open port.

Each device keeps its own runner, supervisor, counters and poll schedule; the first to
start opens the port, the last to stop closes it. Their polls take turns on the line
(:meth:`SerialPort.turn`: in order, ``bus_gap`` apart), so one device's request and
answer are never interleaved with another's. A port that fails ends every device on it;
each is reopened by its supervisor, and the first back opens the port again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from gateway.serial.transport import SerialPort

__all__ = ["shared_port"]


@dataclass
class _Shared:
    port: SerialPort
    users: int = 0


# Per event loop (tests run several gateways in one process), per port selector.
_PORTS: dict[tuple[int, str], _Shared] = {}
_OPENING: dict[tuple[int, str], asyncio.Lock] = {}


@contextlib.asynccontextmanager
async def shared_port(
    selector: str, open_port: Callable[[], Awaitable[SerialPort]]
) -> AsyncIterator[SerialPort]:
    """The open port for ``selector``, opened with ``open_port`` if nobody has it open."""
    key = (id(asyncio.get_running_loop()), selector)
    async with _OPENING.setdefault(key, asyncio.Lock()):
        shared = _PORTS.get(key)
        if shared is None or shared.port.closed:
            shared = _PORTS[key] = _Shared(await open_port())
        shared.users += 1
    try:
        yield shared.port
    finally:
        shared.users -= 1
        if shared.users == 0:
            if _PORTS.get(key) is shared:
                del _PORTS[key]
                _OPENING.pop(key, None)
            await shared.port.close()
