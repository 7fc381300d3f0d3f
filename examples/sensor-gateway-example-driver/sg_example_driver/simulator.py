"""A simulated counter device on a pseudo-terminal, for tests and manual tries.

The gateway opens the pty's slave path like a real port; the simulator sits on the
master side and answers each ``READ`` line with ``COUNT <n> TEMP <t>`` (``n`` counts
the answered reads from ``start``), anything else with ``ERR unknown command``::

    device = CounterDevice(start=100)
    task = asyncio.create_task(serve(pty.master_fd, device))
    ...                      # run the gateway against pty.path
    task.cancel()
    assert device.answered == <number of readings stored>

``python -m sg_example_driver.simulator`` opens a pty, prints its path and serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import select
import threading
import tty

from gateway.driver import LineFramer

__all__ = ["CounterDevice", "main", "serve", "serve_blocking"]

# How long to wait before reading again while no one has the slave side open (EIO).
_HANGUP_RETRY_S = 0.05


class CounterDevice:
    """The device's protocol and state, without any I/O.

    Attributes:
        count: the value the next ``READ`` answers with.
        answered: how many ``READ`` requests were answered.
        errors: how many other lines were answered with ``ERR``.
    """

    def __init__(self, start: int = 0, seed: int | None = None) -> None:
        self.count = start
        self.answered = 0
        self.errors = 0
        self._rng = random.Random(seed)
        self._temperature = 21.0

    def answer(self, request: bytes) -> bytes:
        """The reply to one request line (without its newline)."""
        if request.strip() != b"READ":
            self.errors += 1
            return b"ERR unknown command\n"
        self._temperature = min(max(self._temperature + self._rng.gauss(0, 0.05), 18.0), 24.0)
        reply = f"COUNT {self.count} TEMP {self._temperature:.2f}\n".encode()
        self.count += 1
        self.answered += 1
        return reply


async def serve(fd: int, device: CounterDevice | None = None) -> None:
    """Answer requests arriving on ``fd`` (a pty master) until cancelled.

    ``fd`` is switched to non-blocking; it is not closed.
    """
    device = device or CounterDevice()
    os.set_blocking(fd, False)
    loop = asyncio.get_running_loop()
    framer = LineFramer()
    while True:
        readable: asyncio.Future[None] = loop.create_future()

        def wake(fut: asyncio.Future[None] = readable) -> None:
            if not fut.done():
                fut.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
        data = _read(fd)
        if data is None:  # nobody has the port open right now
            await asyncio.sleep(_HANGUP_RETRY_S)
            continue
        for line in framer.feed(data):
            await _write_async(fd, device.answer(line))


def serve_blocking(
    fd: int, device: CounterDevice | None = None, stop: threading.Event | None = None
) -> None:
    """:func:`serve` for a thread or a subprocess: blocks until ``stop`` is set."""
    device = device or CounterDevice()
    os.set_blocking(fd, False)
    framer = LineFramer()
    while stop is None or not stop.is_set():
        if not select.select([fd], [], [], 0.05)[0]:
            continue
        data = _read(fd)
        if data is None:
            (stop.wait if stop else _sleep)(_HANGUP_RETRY_S)
            continue
        for line in framer.feed(data):
            _write_blocking(fd, device.answer(line))


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 4096)
    except BlockingIOError:
        return b""
    except OSError as err:
        if err.errno == errno.EIO:  # Linux: the slave side is closed
            return None
        raise


def _sleep(seconds: float) -> None:
    select.select([], [], [], seconds)


async def _write_async(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await asyncio.sleep(0.001)


def _write_blocking(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 0.05)


def main() -> None:
    """Open a pseudo-terminal, print its path and answer requests until Ctrl-C."""
    master, slave = os.openpty()
    tty.setraw(slave)
    print(f"example counter on {os.ttyname(slave)}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve_blocking(master)
    finally:
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
