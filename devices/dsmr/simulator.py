"""A simulated smart meter: P1 telegrams on a pseudo-terminal.

Replays real telegrams (``tests/data/dsmr/*.txt``) as a meter sends them, one per
period. With ``restamp`` the meter's clock is set to a given time, the telegram's
timestamp advancing one period per telegram and the M-Bus (gas) timestamp to the last
whole 5 minutes, and the CRC recomputed: the replay then looks live to the gateway.
Misbehaviour on demand: wrong CRCs, cut-off telegrams, noise::

    meter = P1Simulator.from_file(path, target=pty.master_fd)
    meter.write(meter.telegram(datetime.now(UTC)))
    meter.write(meter.garbage("bad_crc"))

Run ``python -m devices.dsmr.simulator TELEGRAM`` for a pty to point a gateway at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import tty
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, get_args
from zoneinfo import ZoneInfo

from devices._sink import Target, write_all, write_all_async
from devices.dsmr._framer import crc16

__all__ = ["Garbage", "P1Simulator", "main", "with_crc"]

Garbage = Literal["bad_crc", "truncated", "noise", "no_crc", "long"]

_METER_TIME: Final = re.compile(rb"(0-0:1\.0\.0\()(\d{12})([SW])\)")
_MBUS_TIME: Final = re.compile(rb"(0-\d:24\.2\.[13]\()(\d{12})([SW])\)")
_ZONE: Final = ZoneInfo("Europe/Amsterdam")
# Past the driver's default max_frame_bytes (8 KiB), so the framer drops it.
_LONG_BYTES: Final = 9000
_NOISE_BYTES: Final = 64


def with_crc(telegram: bytes) -> bytes:
    """``telegram`` (from ``/`` to ``!``, any CRC after it dropped) with a correct CRC line."""
    body = telegram[: telegram.rindex(b"!") + 1]
    return body + f"{crc16(body):04X}".encode() + b"\r\n"


def _stamp(when: datetime) -> bytes:
    local = when.astimezone(_ZONE)
    dst = b"S" if local.dst() else b"W"
    return local.strftime("%y%m%d%H%M%S").encode() + dst


class P1Simulator:
    """Writes telegrams of a real meter, with its CRLF line ends.

    Args:
        telegrams: complete telegrams (``/`` … ``!XXXX\\r\\n``), sent in turn.
        target: a file descriptor (e.g. a pty master) or a binary file object.
        seed: for repeatable garbage.
    """

    def __init__(
        self, telegrams: list[bytes], target: Target | None = None, *, seed: int | None = None
    ) -> None:
        if not telegrams:
            msg = "a simulator needs at least one telegram"
            raise ValueError(msg)
        self.telegrams = telegrams
        self.target = target
        self.sent = 0
        self._rng = random.Random(seed)

    @classmethod
    def from_file(
        cls, path: Path, target: Target | None = None, *, seed: int | None = None
    ) -> P1Simulator:
        """A simulator replaying the telegram in ``path``."""
        return cls([path.read_bytes()], target, seed=seed)

    def telegram(self, when: datetime | None = None) -> bytes:
        """The next telegram; with ``when``, stamped at that time (CRC recomputed)."""
        data = self.telegrams[self.sent % len(self.telegrams)]
        self.sent += 1
        if when is None:
            return data
        gas_time = when - timedelta(minutes=when.minute % 5, seconds=when.second)
        data = _METER_TIME.sub(lambda m: m[1] + _stamp(when) + b")", data)
        data = _MBUS_TIME.sub(lambda m: m[1] + _stamp(gas_time) + b")", data)
        return with_crc(data)

    def garbage(self, kind: Garbage) -> bytes:
        """Bytes a misbehaving meter or line might produce.

        ``bad_crc``: a telegram with one digit changed (its CRC no longer matches).
        ``truncated``: the first half of a telegram (the next header cuts it off).
        ``noise``: random bytes without ``/``, as a wrong baud rate produces.
        ``no_crc``: a DSMR 4+ telegram whose CRC line is empty. ``long``: a header and
        9000 bytes before the ``!``.
        """
        sample = self.telegrams[self._rng.randrange(len(self.telegrams))]
        if kind == "bad_crc":
            digits = [
                i
                for i in range(sample.index(b"\n"), sample.rindex(b"!"))
                if sample[i : i + 1].isdigit()
            ]
            i = self._rng.choice(digits)
            changed = b"0" if sample[i : i + 1] != b"0" else b"1"
            return sample[:i] + changed + sample[i + 1 :]
        if kind == "truncated":
            return sample[: len(sample) // 2]
        if kind == "noise":
            return bytes(b for b in self._rng.randbytes(_NOISE_BYTES) if b not in b"/!") + b"\r\n"
        if kind == "no_crc":
            return sample[: sample.rindex(b"!") + 1] + b"\r\n"
        if kind == "long":
            return b"/ABC5LONG\r\n\r\n" + b"x" * _LONG_BYTES + b"\r\n!0000\r\n"
        msg = f"unknown garbage kind {kind!r}; choose from {', '.join(get_args(Garbage))}"
        raise ValueError(msg)

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Write bytes to the target (blocking, at most ``timeout`` s per call)."""
        if self.target is None:
            msg = "this simulator has no target; pass an fd or a file object"
            raise RuntimeError(msg)
        write_all(self.target, data, timeout)

    async def run(self, period_s: float = 1.0, count: int | None = None) -> int:
        """Send a telegram stamped with the current time every ``period_s`` seconds."""
        if period_s <= 0:
            msg = f"period_s must be positive, got {period_s}"
            raise ValueError(msg)
        if self.target is None:
            msg = "this simulator has no target; pass an fd or a file object"
            raise RuntimeError(msg)
        written = 0
        while count is None or written < count:
            await write_all_async(self.target, self.telegram(datetime.now(UTC)))
            written += 1
            await asyncio.sleep(period_s)
        return written


def main(argv: list[str] | None = None) -> None:
    """Open a pseudo-terminal, print its path and send a telegram every second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("telegram", type=Path, help="e.g. tests/data/dsmr/v5-iskra.txt")
    parser.add_argument("--period", type=float, default=1.0, help="seconds between telegrams")
    args = parser.parse_args(argv)
    master, slave = os.openpty()
    tty.setraw(slave)
    meter = P1Simulator.from_file(args.telegram, master)
    print(f"simulated smart meter on {os.ttyname(slave)}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(meter.run(args.period))
    finally:
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
