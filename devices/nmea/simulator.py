"""A simulated GNSS receiver: replays a real NMEA capture on a pseudo-terminal.

The sentences are those of a real receiver (``tests/data/nmea/*.log``, comment lines
dropped). With ``start`` set, every time and date is moved so the capture's first epoch
falls at ``start`` and the checksums are recomputed: a replay then looks live to the
gateway's clock checks. Misbehaviour on demand: bad checksums, cut sentences, noise::

    sim = NmeaSimulator.from_file(path, target=pty.master_fd, start=datetime.now(UTC))
    sim.write_sentences(20)                # the next 20 sentences of the capture
    sim.write(sim.garbage("bad_checksum"))

Run ``python -m devices.nmea.simulator CAPTURE`` for a pty to point a gateway at.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tty
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final, Literal, get_args

from devices._sink import Target, write_all, write_all_async

__all__ = ["Garbage", "NmeaSimulator", "checksum", "main", "read_capture", "restamp"]

Garbage = Literal["bad_checksum", "truncated", "noise", "no_checksum", "long_line", "binary"]

# Where the time of day and the date sit in each timed sentence (field index after the address).
_TIME_FIELD: Final = {"GGA": 0, "RMC": 0, "GLL": 4, "ZDA": 0}
_RMC_DATE: Final = 8
_ZDA_DATE: Final = 1
# Longer than the default max_frame_bytes (4096), so the framer drops it.
_LONG_LINE_BYTES: Final = 5000
_NOISE_BYTES: Final = 64


def checksum(body: bytes) -> bytes:
    """The two hex digits of an NMEA checksum: XOR of the bytes between ``$`` and ``*``."""
    value = 0
    for byte in body:
        value ^= byte
    return f"{value:02X}".encode()


def read_capture(path: Path) -> list[bytes]:
    """The sentences of a capture file (lines starting with ``$``), without line ends."""
    return [
        line.rstrip(b"\r\n") for line in path.read_bytes().splitlines() if line.startswith(b"$")
    ]


def restamp(sentences: Iterable[bytes], start: datetime) -> list[bytes]:
    """The sentences with times moved so the first timed one is at ``start`` (UTC).

    Times of day are shifted by one offset (the capture's spacing is kept); dates of
    RMC and ZDA follow. Checksums are recomputed.
    """
    parsed = [s[1:].split(b"*")[0].decode("ascii").split(",") for s in sentences]
    # Sentences before the first date (GGA, GLL) belong to the day of the first date.
    day = next((d for fields in parsed if (d := _date_of(fields))), start.date())
    out: list[bytes] = []
    offset: timedelta | None = None
    for fields in parsed:
        kind = fields[0][2:]
        index = _TIME_FIELD.get(kind)
        if index is not None and fields[index + 1]:
            tod = fields[index + 1]
            day = _date_of(fields) or day
            base = datetime.combine(day, datetime.min.time(), UTC)
            when = base + timedelta(
                hours=int(tod[:2]), minutes=int(tod[2:4]), seconds=float(tod[4:])
            )
            if offset is None:
                offset = start.astimezone(UTC) - when
            moved = when + offset
            decimals = len(tod.partition(".")[2])
            stamp = moved.strftime("%H%M%S")
            if decimals:
                stamp += f"{moved.microsecond / 1e6:.{decimals}f}"[1:]
            fields[index + 1] = stamp
            if kind == "RMC" and fields[_RMC_DATE + 1]:
                fields[_RMC_DATE + 1] = moved.strftime("%d%m%y")
            elif kind == "ZDA":
                fields[2:5] = [moved.strftime("%d"), moved.strftime("%m"), moved.strftime("%Y")]
        new_body = ",".join(fields).encode("ascii")
        out.append(b"$" + new_body + b"*" + checksum(new_body))
    return out


def _date_of(fields: list[str]) -> date | None:
    kind = fields[0][2:]
    if kind == "RMC" and len(fields) > _RMC_DATE + 1 and fields[_RMC_DATE + 1]:
        d = fields[_RMC_DATE + 1]
        return date(2000 + int(d[4:]), int(d[2:4]), int(d[:2]))
    if kind == "ZDA" and len(fields) > _ZDA_DATE + 3 and fields[_ZDA_DATE + 3]:
        return date(int(fields[4]), int(fields[3]), int(fields[2]))
    return None


class NmeaSimulator:
    """Writes a capture's sentences, in order, with CRLF line ends (as receivers do).

    Args:
        sentences: the sentences to replay (see :func:`read_capture`).
        target: a file descriptor (e.g. a pty master) or a binary file object.
        start: move the capture's times to begin here (see :func:`restamp`).
        seed: for repeatable garbage.
    """

    def __init__(
        self,
        sentences: list[bytes],
        target: Target | None = None,
        *,
        start: datetime | None = None,
        seed: int | None = None,
    ) -> None:
        if not sentences:
            msg = "a capture needs at least one sentence"
            raise ValueError(msg)
        self.sentences = restamp(sentences, start) if start is not None else list(sentences)
        self.target = target
        self.position = 0
        self._rng = random.Random(seed)

    @classmethod
    def from_file(
        cls,
        path: Path,
        target: Target | None = None,
        *,
        start: datetime | None = None,
        seed: int | None = None,
    ) -> NmeaSimulator:
        """A simulator replaying the capture at ``path``."""
        return cls(read_capture(path), target, start=start, seed=seed)

    @property
    def remaining(self) -> int:
        """Sentences not written yet."""
        return len(self.sentences) - self.position

    def next_sentences(self, n: int) -> bytes:
        """The next ``n`` sentences (fewer at the end of the capture), each with CRLF."""
        chunk = self.sentences[self.position : self.position + n]
        self.position += len(chunk)
        return b"".join(s + b"\r\n" for s in chunk)

    def garbage(self, kind: Garbage) -> bytes:
        """Bytes a misbehaving receiver or line might produce; the capture does not advance.

        ``bad_checksum``: a real sentence with one digit changed. ``truncated``: a sentence
        cut in the middle, as a reconnect leaves it. ``noise``: random bytes as a wrong baud
        rate produces. ``no_checksum``: a sentence without ``*hh``. ``long_line``: 5000
        bytes without a line end. ``binary``: a SiRF binary message start (a receiver left
        in binary mode).
        """
        sample = self.sentences[self._rng.randrange(len(self.sentences))]
        if kind == "bad_checksum":
            body, _, given = sample.rpartition(b"*")
            broken = body.replace(b"1", b"2", 1) if b"1" in body else body + b"0"
            if checksum(broken[1:]) == given:
                broken += b"0"
            return broken + b"*" + given + b"\r\n"
        if kind == "truncated":
            return sample[: len(sample) // 2] + b"\r\n"
        if kind == "noise":
            return bytes(b for b in self._rng.randbytes(_NOISE_BYTES) if b != 0x0A) + b"\r\n"
        if kind == "no_checksum":
            return sample.rpartition(b"*")[0] + b"\r\n"
        if kind == "long_line":
            return b"$GPTXT," + b"x" * _LONG_LINE_BYTES
        if kind == "binary":
            return b"\xa0\xa2\x00\x29\x02\x00\x42\x8a\xf9\x00\x08\xd7\x17\x00\x46\xb0\xb3\r\n"
        msg = f"unknown garbage kind {kind!r}; choose from {', '.join(get_args(Garbage))}"
        raise ValueError(msg)

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Write bytes to the target (blocking, at most ``timeout`` s per call)."""
        write_all(self._require_target(), data, timeout)

    def write_sentences(self, n: int) -> int:
        """Write the next ``n`` sentences at once; returns how many were written."""
        before = self.position
        self.write(self.next_sentences(n))
        return self.position - before

    async def run(self, rate_hz: float = 10.0) -> int:
        """Write the rest of the capture at ``rate_hz`` sentences per second."""
        if rate_hz <= 0:
            msg = f"rate_hz must be positive, got {rate_hz}"
            raise ValueError(msg)
        target = self._require_target()
        written = 0
        while self.remaining:
            await write_all_async(target, self.next_sentences(1))
            written += 1
            await asyncio.sleep(1.0 / rate_hz)
        return written

    def _require_target(self) -> Target:
        if self.target is None:
            msg = "this simulator has no target; pass an fd or a file object"
            raise RuntimeError(msg)
        return self.target


def main(argv: list[str] | None = None) -> None:
    """Open a pseudo-terminal, print its path and replay a capture (times moved to now)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "capture", type=Path, help="an NMEA capture, e.g. tests/data/nmea/gr601-w.log"
    )
    parser.add_argument("--rate", type=float, default=10.0, help="sentences per second")
    args = parser.parse_args(argv)
    master, slave = os.openpty()
    tty.setraw(slave)
    sim = NmeaSimulator.from_file(args.capture, master, start=datetime.now(UTC))
    print(f"simulated GNSS receiver on {os.ttyname(slave)}", flush=True)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(sim.run(args.rate))
    finally:
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
