"""A simulated SDS011 dust sensor on a pseudo-terminal, speaking its real protocol.

It answers the commands the driver sends (wake/sleep, reporting mode, working period,
query) and, in active mode, sends a measurement every ``period_s``. Measurement ``n``
is PM2.5 = 5.0 + (n mod 500) / 10 and PM10 = PM2.5 + 3, so a test can tell which
frames arrived. Misbehaviour on demand: bad checksums, noise, truncated frames, a
sensor that ignores commands::

    sensor = Sds011Device(period_s=0.05)
    with serving(pty.master_fd, sensor):
        ...                                   # a gateway reads pty.path
    sensor.inject(sensor.garbage("bad_checksum"))

Run ``python -m devices.sds011.simulator`` for a pty to point a gateway at.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import threading
import tty
from collections import deque
from typing import Final, Literal, get_args

from devices._serve import serve_blocking, serving
from devices.sds011._protocol import (
    COMMAND_LENGTH,
    DATA,
    HEADER,
    QUERY_DATA,
    REPLY,
    REPORTING_MODE,
    SLEEP_WORK,
    TRAILER,
    WORKING_PERIOD,
    command_ok,
)
from gateway.driver import FixedLengthFramer, Framer

__all__ = ["Garbage", "Sds011Device", "main", "serving"]

Garbage = Literal["bad_checksum", "noise", "truncated"]

_SENSOR_ID: Final = b"\x12\x34"
_NOISE_BYTES: Final = 32


def _frame(kind: int, data: bytes) -> bytes:
    body = data.ljust(6, b"\x00")[:4] + _SENSOR_ID
    return HEADER + bytes([kind]) + body + bytes([sum(body) & 0xFF]) + TRAILER


class Sds011Device:
    """The sensor's state and protocol, without I/O (see :func:`devices._serve.serving`).

    Args:
        period_s: seconds between measurements in active mode with working period 0
            (the real sensor: 1 s); with a working period, that many minutes.
        mode: the reporting mode at power-on (the real sensor: active).
        sleeping: whether the sensor starts asleep (left so by another program).
        seed: for repeatable garbage.

    Attributes:
        measured: measurements sent so far (the next one is number ``measured``).
        commands: every valid command received, as ``(number, d1, d2)``.
        ignore_commands: pretend to be a clone that never answers a command.
    """

    def __init__(
        self,
        period_s: float = 1.0,
        *,
        mode: Literal["active", "query"] = "active",
        sleeping: bool = False,
        seed: int | None = None,
    ) -> None:
        self.period_s = period_s
        self.mode = mode
        self.sleeping = sleeping
        self.working_period = 0
        self.measured = 0
        self.commands: list[tuple[int, int, int]] = []
        self.ignore_commands = False
        self._next_at = 0.0
        self._pending: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def request_framer(self) -> Framer:
        """19-byte commands from ``AA`` to ``AB``, checksum verified."""
        return FixedLengthFramer(
            COMMAND_LENGTH, header=HEADER, trailer=TRAILER, checksum=command_ok
        )

    def measurement(self) -> bytes:
        """The next measurement frame (counted in ``measured``)."""
        pm2_5 = 50 + self.measured % 500  # tenths of µg/m³
        self.measured += 1
        data = pm2_5.to_bytes(2, "little") + (pm2_5 + 30).to_bytes(2, "little")
        return _frame(DATA, data)

    def answer(self, request: bytes) -> bytes | None:
        """The reply to one command (None: the sensor stays silent)."""
        number, set_, value = request[2], request[3], request[4]
        if self.ignore_commands or (self.sleeping and number != SLEEP_WORK):
            return None
        self.commands.append((number, set_, value))
        if number == QUERY_DATA:
            return self.measurement()
        if number == REPORTING_MODE:
            if set_:
                self.mode = "query" if value else "active"
            current = 1 if self.mode == "query" else 0
        elif number == SLEEP_WORK:
            if set_:
                self.sleeping = not value
            current = 0 if self.sleeping else 1
        elif number == WORKING_PERIOD:
            if set_:
                self.working_period = value
            current = self.working_period
        else:
            return None
        return _frame(REPLY, bytes([number, set_, current, 0]))

    def due(self, now: float) -> bytes | None:
        """Injected bytes, else a measurement when one is due in active mode."""
        with self._lock:
            if self._pending:
                return self._pending.popleft()
        if self.mode != "active" or self.sleeping or now < self._next_at:
            return None
        period = self.working_period * 60.0 or self.period_s
        self._next_at = max(self._next_at + period, now) if self._next_at else now + period
        return self.measurement()

    def inject(self, data: bytes) -> None:
        """Send ``data`` at the next opportunity (from the serving thread)."""
        with self._lock:
            self._pending.append(data)

    def garbage(self, kind: Garbage) -> bytes:
        """Bytes a failing sensor or line produces: the measurement count does not move.

        ``bad_checksum``: a measurement frame with a wrong checksum. ``noise``: random
        bytes without ``AA``. ``truncated``: the first half of a measurement frame.
        """
        if kind == "bad_checksum":
            frame = bytearray(_frame(DATA, b"\x10\x00\x20\x00"))
            frame[8] ^= 0xFF
            return bytes(frame)
        if kind == "noise":
            return bytes(b for b in self._rng.randbytes(_NOISE_BYTES) if b != HEADER[0])
        if kind == "truncated":
            return _frame(DATA, b"\x10\x00\x20\x00")[:5]
        msg = f"unknown garbage kind {kind!r}; choose from {', '.join(get_args(Garbage))}"
        raise ValueError(msg)


def main(argv: list[str] | None = None) -> None:
    """Open a pseudo-terminal, print its path and play the sensor until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--period", type=float, default=1.0, help="seconds between frames")
    args = parser.parse_args(argv)
    master, slave = os.openpty()
    tty.setraw(slave)
    print(f"simulated SDS011 on {os.ttyname(slave)}", flush=True)
    stop = threading.Event()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve_blocking(master, Sds011Device(args.period), stop)
    finally:
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
