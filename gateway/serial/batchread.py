"""Stream ports read together: one wake-up of the event loop per read window, not per line.

When every port has a reader of its own, each line of each sensor wakes the event loop:
50 sensors at 10 Hz, unsynchronized, are 500 wake-ups a second, and on a small host a
wake-up costs more CPU than parsing the line it brings. A :class:`ReadBatcher` keeps
the stream ports' descriptors in an epoll set of its own, which the loop watches as one
descriptor:

* After a quiet window (no read for ``window`` seconds), bytes are read as they come
  for :data:`GATHER_S`: a lone line, or a burst of devices sending together.
* Bytes still coming after that are steady traffic: the batcher stops watching and
  reads every port with bytes waiting at the next multiple of the window on the loop's
  clock (:mod:`gateway.clockgrid`: the spool's commits fall on the same grid), then
  again each window for as long as each turn finds bytes. A turn that finds none hands
  the ports back to the loop's watch.

So a lone or slow device is read the moment its line arrives, and a busy fleet costs
about one wake-up per window. The price is time: in steady traffic a line waits up to
one window before it is read and stamped with its arrival time. USB serial adapters
hold bytes back already (FTDI's latency timer is 16 ms by default), so a window of tens
of milliseconds changes little; a device's ``read_window = 0`` gives it a reader of its
own again.
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import weakref
from collections.abc import Callable

from gateway.clockgrid import next_tick

__all__ = ["AVAILABLE", "GATHER_S", "ReadBatcher", "batcher"]

ReadReady = Callable[[], None]

AVAILABLE = hasattr(select, "epoll")
"""Read turns need epoll (Linux); elsewhere every port keeps a reader of its own."""

_EVENTS = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP if AVAILABLE else 0

GATHER_S = 0.005
"""After a quiet window, bytes are read as they come for this long (one line, or a burst
of devices sending together); bytes still coming after it are steady traffic."""


class ReadBatcher:
    """An epoll set of port descriptors read together, at most once per ``window`` s
    while traffic is steady."""

    def __init__(self, loop: asyncio.AbstractEventLoop, window: float) -> None:
        if window <= 0:
            raise ValueError("a read window must be positive")
        self.window = window
        self.turns = 0
        """How many times the ports were read (one wake-up each, or less)."""
        self._loop = loop
        self._epoll = select.epoll()
        self._readers: dict[int, ReadReady] = {}
        self._watching = False  # the loop watches the epoll descriptor
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = float("-inf")
        self._burst_start = float("-inf")  # the first read after the last quiet window

    @property
    def ports(self) -> int:
        """How many descriptors are read by this batcher."""
        return len(self._readers)

    def add(self, fd: int, read_ready: ReadReady) -> None:
        """Call ``read_ready`` whenever ``fd`` has bytes (or hung up), in batches."""
        if fd in self._readers:
            self._epoll.modify(fd, _EVENTS)
        else:
            self._epoll.register(fd, _EVENTS)
        self._readers[fd] = read_ready
        if self._timer is None:  # no turn due: the loop must watch (if it does not yet)
            self._watch()

    def remove(self, fd: int) -> bool:
        """Stop reading ``fd``; True if it was there."""
        if self._readers.pop(fd, None) is None:
            return False
        with contextlib.suppress(OSError):  # closed already: the kernel dropped it
            self._epoll.unregister(fd)
        if not self._readers:
            self._stop()
        return True

    def _watch(self) -> None:
        if self._readers and not self._watching:
            self._loop.add_reader(self._epoll.fileno(), self._ready)
            self._watching = True

    def _stop(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._epoll.fileno())
            self._watching = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _ready(self) -> None:
        """The loop saw a port ready: read it now, or (steady traffic) in the next turn."""
        loop = self._loop
        now = loop.time()
        if now >= self._last_read + self.window:
            self._burst_start = now  # after a quiet window
        if now < self._burst_start + GATHER_S:
            self._read_all(now)  # a lone line, or devices sending together: read at once
            return
        loop.remove_reader(self._epoll.fileno())
        self._watching = False
        self._timer = loop.call_at(next_tick(now, self.window), self._turn)

    def _turn(self) -> None:
        self._timer = None
        now = self._loop.time()
        if self._read_all(now) and self._readers:
            self._timer = self._loop.call_at(next_tick(now, self.window), self._turn)
        else:
            self._watch()  # a window without bytes: read as they come again

    def _read_all(self, now: float) -> int:
        self._last_read = now
        self.turns += 1
        readers = self._readers
        ready = self._epoll.poll(0)
        for fd, _ in ready:
            read_ready = readers.get(fd)
            if read_ready is not None:  # a port read earlier in this turn may have closed
                read_ready()
        return len(ready)


_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, ReadBatcher]] = (
    weakref.WeakKeyDictionary()
)


def batcher(window: float) -> ReadBatcher:
    """The running loop's batcher for ``window`` seconds (created on first use)."""
    loop = asyncio.get_running_loop()
    by_window = _batchers.setdefault(loop, {})
    found = by_window.get(window)
    if found is None:
        found = by_window[window] = ReadBatcher(loop, window)
    return found
