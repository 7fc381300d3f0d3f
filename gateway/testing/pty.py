"""Virtual serial ports: a pseudo-terminal, and one behind a stable path you can unplug.

The gateway opens :attr:`SerialPty.path` exactly like ``/dev/ttyUSB0``; the test or a
device simulator talks on the master side. :class:`PluggableSerialPty` keeps a stable
symlink (like ``/dev/serial/by-id/…``) and can be unplugged and plugged in again.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
import tty
from types import TracebackType
from typing import Self

__all__ = ["PluggableSerialPty", "SerialPty"]


# --------------------------------------------------------------------------------------------
# serial pseudo-terminal
# --------------------------------------------------------------------------------------------


class SerialPty:
    """A pseudo-terminal standing in for a serial device.

    The gateway opens :attr:`path` (``/dev/pts/N``) with pyserial / pyserial-asyncio-fast
    exactly like a real port (``serial_asyncio_fast.open_serial_connection(url=path, ...)``);
    the test or a device simulator writes the device's bytes with :meth:`write` and reads what
    the gateway sent with :meth:`read_available`. The slave is put in raw mode (no echo, no
    CR/LF translation), so bytes pass unchanged. A pty ignores the baud rate: "wrong baud" can
    only be simulated by sending garbage. :meth:`close` (hang-up) is the unplug: the gateway's
    next read fails. The helper keeps its own slave fd open until then, so the master never
    sees EIO just because the gateway closed and reopened the port.
    """

    def __init__(self) -> None:
        self.master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self.master_fd, False)
        self.path: str = os.ttyname(self._slave_fd)
        self.closed = False

    def fileno(self) -> int:
        return self.master_fd

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Write all of ``data`` to the master (the gateway reads it from :attr:`path`).

        Raises TimeoutError if the gateway doesn't read fast enough for ``timeout`` seconds.
        """
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = os.write(self.master_fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pty {self.path}: {len(view)} bytes not written in time")
            select.select([], [self.master_fd], [], min(left, 0.05))

    def read_available(self, timeout: float = 0.5) -> bytes:
        """Wait up to ``timeout`` for data from the gateway, then return all there is (b"" if none)."""
        ready, _, _ = select.select([self.master_fd], [], [], timeout)
        if not ready:
            return b""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(self.master_fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            # give a writer in the middle of a burst a moment to finish
            if not select.select([self.master_fd], [], [], 0.01)[0]:
                break
        return b"".join(chunks)

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read until ``marker`` was seen (returns everything read); TimeoutError otherwise."""
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pty {self.path}: {marker!r} not seen; got {buf[-200:]!r}")
            buf += self.read_available(min(left, 0.1))
        return buf

    def close(self) -> None:
        """Hang up (simulated unplug): close master and our slave fd. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PluggableSerialPty:
    """A serial device behind a stable path that can be unplugged and plugged in again.

    Like ``/dev/serial/by-id/...``: :attr:`path` is a symlink to the slave of the current
    :class:`SerialPty`. :meth:`unplug` removes the link, then hangs the pty up (the
    gateway's next read fails, and opening :attr:`path` fails with ENOENT until the next
    :meth:`plug`); :meth:`plug` makes a fresh pty and points the link at it. :attr:`pty` is
    the current pty, None while unplugged. Bytes written before the gateway has reopened
    the port are flushed by pyserial's open, as with a real device.
    """

    def __init__(self, path: str | os.PathLike[str], plugged: bool = True) -> None:
        self.path: str = os.fspath(path)
        self.pty: SerialPty | None = None
        self.plugs = 0
        if plugged:
            self.plug()

    def plug(self) -> SerialPty:
        """Plug in a new device (a fresh pty) behind :attr:`path`; returns its pty."""
        if self.pty is not None:
            raise RuntimeError(f"{self.path} is plugged in already")
        pty = SerialPty()
        tmp = f"{self.path}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(pty.path, tmp)
        os.replace(tmp, self.path)  # the link appears atomically, pointing at a live pty
        self.pty = pty
        self.plugs += 1
        return pty

    def unplug(self) -> None:
        """Pull the device: the path disappears, then the pty hangs up. Idempotent."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.pty is not None:
            self.pty.close()
            self.pty = None

    def close(self) -> None:
        self.unplug()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
