"""A scripted serial device on the master side of a virtual port.

:class:`ScriptedDevice` plays a device in a background thread, so it serves a gateway
running in-process on the test's event loop and a gateway subprocess alike:

* ``respond(request, reply, delay=0, times=None)`` — expect a request, send a reply
  (bytes, or a function of the request frame); ``delay`` answers late; ``times`` limits
  how often the rule applies (rules are tried in order, so ``times=1`` rules make an
  ordered conversation);
* ``stream(frame, rate_hz, count=None)`` — send frames at a rate (``frame(n)`` makes
  the n-th one);
* ``send(data, delay=0)`` — one unprompted write;
* ``replay(capture)`` — play a recorded capture (see :mod:`gateway.testing.capture`).

Requests are cut with a framer (lines by default; pass ``FixedLengthFramer(...)`` for a
binary protocol). What the device received is in :attr:`requests` (when, in
:attr:`request_times`); requests no rule matched are in :attr:`unmatched`. With a :class:`PluggableSerialPty` the device follows
unplug/replug: while unplugged its writes are skipped (counted in :attr:`lost`).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import re
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from gateway.serial.framers import Framer, LineFramer
from gateway.testing.pty import PluggableSerialPty, SerialPty

__all__ = ["Reply", "Request", "ScriptedDevice"]

Request = bytes | re.Pattern[bytes] | Callable[[bytes], bool]
"""What a rule expects: exact bytes, a regex (full match) or a predicate on the frame."""
Reply = bytes | Callable[[bytes], bytes | None]
"""What a rule sends: bytes, or a function of the request frame (None: send nothing)."""


@dataclass
class _Rule:
    request: Request
    reply: Reply
    delay: float
    times: int | None

    def matches(self, frame: bytes) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if isinstance(self.request, bytes):
            return frame == self.request
        if isinstance(self.request, re.Pattern):
            return self.request.fullmatch(frame) is not None
        return self.request(frame)


class ScriptedDevice:
    """A device played on the master side of ``port``; ``start()``/``stop()`` or ``with``."""

    def __init__(
        self, port: SerialPty | PluggableSerialPty, request_framer: Framer | None = None
    ) -> None:
        self.port = port
        self.framer = request_framer or LineFramer(terminator=b"\n")
        self.requests: list[bytes] = []
        self.request_times: list[float] = []  # time.monotonic() when each request was cut
        self.unmatched: list[bytes] = []
        self.sent = 0  # writes that reached the port
        self.lost = 0  # writes skipped because the port was unplugged
        self._rules: list[_Rule] = []
        self._due: list[tuple[float, int, bytes | Callable[[], bytes | None]]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pty: SerialPty | None = None

    # -- the script ------------------------------------------------------------------

    def respond(
        self, request: Request, reply: Reply, *, delay: float = 0.0, times: int | None = None
    ) -> Self:
        """Answer each request matching ``request`` with ``reply``, ``delay`` seconds later."""
        with self._lock:
            self._rules.append(_Rule(request, reply, delay, times))
        return self

    def send(self, data: bytes, delay: float = 0.0) -> Self:
        """Write ``data`` unprompted, ``delay`` seconds from now."""
        self._schedule(time.monotonic() + delay, data)
        return self

    def stream(
        self,
        frame: Callable[[int], bytes],
        rate_hz: float,
        count: int | None = None,
        start_delay: float = 0.0,
    ) -> Self:
        """Send ``frame(0)``, ``frame(1)``, … at ``rate_hz`` (forever if ``count`` is None).

        Frames keep to a fixed schedule (no drift); ``frame(n)`` returning None skips one.
        """
        start = time.monotonic() + start_delay
        period = 1.0 / rate_hz
        numbers = itertools.count() if count is None else iter(range(count))

        def due_next() -> None:
            n = next(numbers, None)
            if n is None:
                return
            at = start + n * period

            def make() -> bytes | None:
                due_next()
                return frame(n)

            self._schedule(at, make)

        due_next()
        return self

    def replay(self, capture: object, speed: float = 1.0) -> Self:
        """Play a :class:`~gateway.testing.capture.Capture` (see its ``play_on``)."""
        from gateway.testing.capture import Capture

        if not isinstance(capture, Capture):
            raise TypeError("replay() takes a gateway.testing.Capture")
        capture.play_on(self, speed)
        return self

    # -- running ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("the device is running already")
        self._thread = threading.Thread(target=self._run, name="scripted-device", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[bytes]:
        """Block until ``n`` requests were received; return them."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.requests)} of {n} requests after {timeout} s")
            time.sleep(0.01)
        return list(self.requests)

    # -- internals -------------------------------------------------------------------

    def _schedule(self, at: float, what: bytes | Callable[[], bytes | None]) -> None:
        with self._lock:
            heapq.heappush(self._due, (at, next(self._seq), what))
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _current(self) -> SerialPty | None:
        port = self.port
        pty = port.pty if isinstance(port, PluggableSerialPty) else port
        if pty is not self._pty:
            self.framer.reset()  # a new device: no half request from the old one
            self._pty = pty
        return None if pty is None or pty.closed else pty

    def _run(self) -> None:
        while not self._stop.is_set():
            pty = self._current()
            with self._lock:
                next_due = self._due[0][0] if self._due else None
            wait = 0.05 if next_due is None else max(0.0, min(0.05, next_due - time.monotonic()))
            fds = [self._wake_r] + ([pty.master_fd] if pty is not None else [])
            try:
                ready, _, _ = select.select(fds, [], [], wait)
            except (OSError, ValueError):
                ready = []  # the pty was closed under us (unplugged)
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 4096)
            if pty is not None and pty.master_fd in ready:
                self._read(pty)
            self._write_due()

    def _read(self, pty: SerialPty) -> None:
        try:
            data = os.read(pty.master_fd, 4096)
        except (BlockingIOError, OSError):
            return
        now = time.monotonic()
        for frame in self.framer.feed(data):
            self.requests.append(frame)
            self.request_times.append(now)
            self._answer(frame)

    def _answer(self, frame: bytes) -> None:
        with self._lock:
            rule = next((r for r in self._rules if r.matches(frame)), None)
            if rule is not None and rule.times is not None:
                rule.times -= 1
        if rule is None:
            self.unmatched.append(frame)
            return
        reply = rule.reply(frame) if callable(rule.reply) else rule.reply
        if reply is not None:
            self._schedule(time.monotonic() + rule.delay, reply)

    def _write_due(self) -> None:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._due or self._due[0][0] > now:
                    return
                _, _, what = heapq.heappop(self._due)
            data = what() if callable(what) else what
            if data is None:
                continue
            pty = self._current()
            if pty is None:
                self.lost += 1
                continue
            try:
                pty.write(data)
                self.sent += 1
            except (OSError, TimeoutError):
                self.lost += 1
