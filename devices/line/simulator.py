"""A simulated line-oriented serial sensor, for tests, benchmarks and the demo.

Each line carries a ``seq`` field counting up from ``start``, so a test can check that
nothing was lost or duplicated; the other fields are believable indoor-climate values.
Write to a pseudo-terminal master (``os.openpty()``), any fd, or a binary file object::

    sim = LineSimulator(pty.master_fd, "csv", seed=1)
    options = sim.options(pty.path)        # matching ``line`` driver options
    await sim.run(rate_hz=50, count=500)   # seq 0..499

Run ``python -m devices.line.simulator --format kv`` for a pty to point a gateway at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import time
import tty
from collections.abc import Iterator
from typing import Any, Final, Literal, get_args

from devices._climate import Climate
from devices._sink import Target, write_all, write_all_async

__all__ = ["COLUMNS", "PATTERN", "Garbage", "LineFormat", "LineSimulator", "main"]

LineFormat = Literal["kv", "json", "csv", "regex"]
Garbage = Literal["invalid_utf8", "malformed", "empty", "long_line", "no_terminator", "noise"]

COLUMNS: Final = ["seq", "temperature", "humidity", "pressure"]
"""The csv columns the simulator writes (plus ``ts`` with ``with_time``)."""
PATTERN: Final = (
    r"^SEQ (?P<seq>\d+) T:(?P<temperature>-?[\d.]+)C H:(?P<humidity>[\d.]+)% "
    r"P:(?P<pressure>[\d.]+)hPa(?: TS:(?P<ts>\d+))?$"
)
"""The regex matching the simulator's ``regex`` format lines."""
TIME_FIELD: Final = "ts"

# Longer than the driver's default max_frame_bytes (4096), so it trips the framer's limit.
DEFAULT_GARBAGE_BYTES: Final = 5000
NOISE_BYTES: Final = 64


class LineSimulator:
    """Writes sensor lines in one of the ``line`` driver's formats.

    Args:
        target: a file descriptor (e.g. a pty master) or a binary file object; None
            when you only want the bytes from :meth:`line` / :meth:`lines`.
        format: ``kv``, ``json``, ``csv`` or ``regex`` (matching :data:`PATTERN`).
        seed: makes values (not ``ts``) repeatable.
        start: the first ``seq``.
        separator: between kv pairs (``" "`` or ``","``).
        with_time: add ``ts``, the current time in epoch milliseconds (strictly increasing).
        newline: the line terminator.
    """

    def __init__(
        self,
        target: Target | None = None,
        format: LineFormat = "kv",
        *,
        seed: int | None = None,
        start: int = 0,
        separator: str = " ",
        with_time: bool = False,
        newline: bytes = b"\n",
    ) -> None:
        if format not in get_args(LineFormat):
            msg = f"format must be one of {', '.join(get_args(LineFormat))}, got {format!r}"
            raise ValueError(msg)
        self.target = target
        self.format: LineFormat = format
        self.seq = start
        """The ``seq`` of the next line."""
        self.separator = separator
        self.with_time = with_time
        self.newline = newline
        self._climate = Climate(seed)
        self._rng = random.Random(seed)
        self._last_ms = 0

    def options(self, port: str) -> dict[str, Any]:
        """``line`` driver options that read what this simulator writes on ``port``."""
        opts: dict[str, Any] = {"port": port, "format": self.format}
        if self.format == "csv":
            opts["columns"] = [*COLUMNS, TIME_FIELD] if self.with_time else list(COLUMNS)
        elif self.format == "regex":
            opts["pattern"] = PATTERN
        if self.with_time:
            opts["time_field"] = TIME_FIELD
        return opts

    def line(self) -> bytes:
        """The next line (terminator included); advances ``seq``."""
        v = self._climate.step()
        values: dict[str, int | float] = {
            "seq": self.seq,
            "temperature": v.temperature,
            "humidity": v.humidity,
            "pressure": v.pressure,
        }
        if self.with_time:
            # Strictly increasing, so two lines never share a point identity.
            self._last_ms = max(time.time_ns() // 1_000_000, self._last_ms + 1)
            values[TIME_FIELD] = self._last_ms
        self.seq += 1
        if self.format == "kv":
            text = self.separator.join(f"{k}={val}" for k, val in values.items())
        elif self.format == "json":
            text = json.dumps(values, separators=(",", ":"))
        elif self.format == "csv":
            text = ",".join(str(val) for val in values.values())
        else:
            stamp = f" TS:{values[TIME_FIELD]}" if self.with_time else ""
            text = f"SEQ {self.seq - 1} T:{v.temperature}C H:{v.humidity}% P:{v.pressure}hPa{stamp}"
        return text.encode() + self.newline

    def lines(self, n: int) -> Iterator[bytes]:
        """The next ``n`` lines, one at a time."""
        for _ in range(n):
            yield self.line()

    def banner(self) -> bytes:
        """A start-up comment line, which the driver skips (``skip_prefix = ["#"]``)."""
        return f"# line simulator, format {self.format}".encode() + self.newline

    def garbage(self, kind: Garbage, size: int | None = None) -> bytes:
        """Bytes a misbehaving device might send; ``seq`` does not advance.

        ``invalid_utf8``, ``malformed`` (bad for the current format) and ``empty`` (a
        line with no field) are one rejected line each. ``long_line`` is ``size`` bytes
        and a terminator: dropped and counted by the framer. ``no_terminator`` is
        ``size`` bytes without one: the framer drops them *and the next line*, up to
        its terminator. ``noise`` is a line of ``size`` random bytes (default 64), as a
        wrong baud rate produces. ``size`` defaults to :data:`DEFAULT_GARBAGE_BYTES`.
        """
        nl = self.newline
        if size is None:
            size = NOISE_BYTES if kind == "noise" else DEFAULT_GARBAGE_BYTES
        if kind == "invalid_utf8":
            return b"temperature=\xff\xfe21.5" + nl
        if kind == "malformed":
            return {
                "kv": b"temperature 21.5 humidity",
                "json": b'{"seq": 1, "temperature": ',
                "csv": b"1,21.5",
                "regex": b"SEQ ? T:??C",
            }[self.format] + nl
        if kind == "empty":
            if self.format == "regex":
                msg = "the regex format has no empty line (every group is required)"
                raise ValueError(msg)
            return {"kv": b", ,", "json": b"{}", "csv": b",,,"}[self.format] + nl
        if kind == "long_line":
            return b"x" * size + nl
        if kind == "no_terminator":
            return b"x" * size
        if kind == "noise":
            noise = bytes(b for b in self._rng.randbytes(size) if b not in nl)
            return noise + nl
        msg = f"unknown garbage kind {kind!r}; choose from {', '.join(get_args(Garbage))}"
        raise ValueError(msg)

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Write bytes to the target (blocking, at most ``timeout`` s per call)."""
        write_all(self._require_target(), data, timeout)

    def write_lines(self, n: int) -> range:
        """Write the next ``n`` lines at once; returns the ``seq`` values written."""
        first = self.seq
        self.write(b"".join(self.lines(n)))
        return range(first, self.seq)

    async def run(self, rate_hz: float, count: int | None = None) -> int:
        """Write lines at ``rate_hz`` until ``count`` are written (or forever/cancelled).

        Pacing follows a fixed schedule, so a late line is followed by a catch-up burst
        rather than a slower average rate. Returns the number of lines written.
        """
        if rate_hz <= 0:
            msg = f"rate_hz must be positive, got {rate_hz}"
            raise ValueError(msg)
        target = self._require_target()
        loop = asyncio.get_running_loop()
        period = 1.0 / rate_hz
        begin = loop.time()
        written = 0
        while count is None or written < count:
            delay = begin + written * period - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await write_all_async(target, self.line())
            written += 1
        return written

    def _require_target(self) -> Target:
        if self.target is None:
            msg = "this simulator has no target; pass an fd or a file object"
            raise RuntimeError(msg)
        return self.target


def main(argv: list[str] | None = None) -> None:
    """Open a pseudo-terminal, print its path and write simulated lines until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--format", choices=get_args(LineFormat), default="kv")
    parser.add_argument("--rate", type=float, default=1.0, help="lines per second")
    parser.add_argument("--count", type=int, default=None, help="stop after this many lines")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--with-time", action="store_true", help="add a ts field (epoch ms)")
    args = parser.parse_args(argv)
    master, slave = os.openpty()
    tty.setraw(slave)
    sim = LineSimulator(master, args.format, seed=args.seed, with_time=args.with_time)
    print(f"simulated {args.format} sensor on {os.ttyname(slave)}", flush=True)
    print("driver options:", json.dumps(sim.options(os.ttyname(slave))), flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(sim.run(args.rate, args.count))
    finally:
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
