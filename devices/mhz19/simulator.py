"""A simulated MH-Z19 CO2 sensor on a pseudo-terminal, speaking its real protocol.

It answers command 0x86 with CO2 = 400 + (n mod 1000) ppm for the ``n``-th answer (so
a test can tell which answers arrived) and an internal temperature of 25 °C, records
command 0x79 (automatic baseline correction, no answer) and ignores the rest.
Misbehaviour on demand: bad checksums, noise, answers to another command, silence,
the same answer twice::

    sensor = Mhz19Device()
    with serving(pty.master_fd, sensor):
        ...                                  # a gateway polls pty.path
    assert sensor.abc is False

Run ``python -m devices.mhz19.simulator`` for a pty to point a gateway at.
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
from devices.mhz19._protocol import (
    ABC,
    ABC_ON,
    FRAME_LENGTH,
    HEADER,
    READ_CO2,
    TEMPERATURE_OFFSET,
    checksum,
    frame_ok,
)
from gateway.driver import FixedLengthFramer, Framer

__all__ = ["Fault", "Mhz19Device", "main", "serving"]

Fault = Literal["bad_checksum", "noise", "wrong_command", "silent", "twice"]

_NOISE_BYTES: Final = 16
_TEMPERATURE_C: Final = 25


def _answer(number: int, data: bytes) -> bytes:
    frame = HEADER + bytes([number]) + data.ljust(6, b"\x00")
    return frame + bytes([checksum(frame + b"\x00")])


class Mhz19Device:
    """The sensor's state and protocol, without I/O (see :func:`devices._serve.serving`).

    Attributes:
        answered: answers to 0x86 sent so far (the next says 400 + ``answered`` ppm).
        abc: the automatic baseline correction setting (the factory setting is on).
        faults: what the next answers to 0x86 are instead (first in, first used).
    """

    def __init__(self, seed: int | None = None) -> None:
        self.answered = 0
        self.abc = True
        self.abc_commands = 0
        self.faults: deque[Fault] = deque()
        self._rng = random.Random(seed)

    def request_framer(self) -> Framer:
        """9-byte commands starting with ``FF``, checksum verified."""
        return FixedLengthFramer(FRAME_LENGTH, header=HEADER, checksum=frame_ok)

    def answer(self, request: bytes) -> bytes | None:
        """The answer to one command (None: no answer)."""
        number = request[2]
        if number == ABC:
            self.abc = request[3] == ABC_ON
            self.abc_commands += 1
            return None
        if number != READ_CO2:
            return None
        fault = self.faults.popleft() if self.faults else None
        if fault == "silent":
            return None
        if fault == "noise":
            return bytes(b for b in self._rng.randbytes(_NOISE_BYTES) if b != HEADER[0])
        if fault == "wrong_command":
            return _answer(0x99, b"")
        co2 = 400 + self.answered % 1000
        self.answered += 1
        data = co2.to_bytes(2, "big") + bytes([_TEMPERATURE_C + TEMPERATURE_OFFSET, 0])
        frame = _answer(READ_CO2, data)
        if fault == "bad_checksum":
            frame = frame[:8] + bytes([frame[8] ^ 0xFF])
        if fault == "twice":  # a sensor that answers too much
            frame += frame
        return frame

    def due(self, now: float) -> bytes | None:
        """The sensor never speaks unasked."""
        return None

    def add_faults(self, *faults: Fault) -> None:
        """Misbehave on the next answers, one fault each."""
        for fault in faults:
            if fault not in get_args(Fault):
                msg = f"unknown fault {fault!r}; choose from {', '.join(get_args(Fault))}"
                raise ValueError(msg)
            self.faults.append(fault)


def main(argv: list[str] | None = None) -> None:
    """Open a pseudo-terminal, print its path and play the sensor until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.parse_args(argv)
    master, slave = os.openpty()
    tty.setraw(slave)
    print(f"simulated MH-Z19 on {os.ttyname(slave)}", flush=True)
    stop = threading.Event()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            serve_blocking(master, Mhz19Device(), stop)
    finally:
        os.close(master)
        os.close(slave)


if __name__ == "__main__":
    main()
