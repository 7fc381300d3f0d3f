"""The MH-Z19 serial protocol (Winsen MH-Z19B datasheet): 9-byte commands and answers.

Commands are ``FF 01 <cmd> d3..d7 <checksum>``, answers ``FF <cmd> d2..d7 <checksum>``;
the checksum is the two's complement of the sum of bytes 1-7.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ABC",
    "ABC_OFF",
    "ABC_ON",
    "FRAME_LENGTH",
    "HEADER",
    "READ_CO2",
    "TEMPERATURE_OFFSET",
    "checksum",
    "command",
    "frame_ok",
]

HEADER: Final = b"\xff"
FRAME_LENGTH: Final = 9
READ_CO2: Final = 0x86  # answer: FF 86 <co2 hi> <co2 lo> <temperature + 40> <status> ...
ABC: Final = 0x79  # d3 = A0 on / 00 off; the sensor does not answer
ABC_ON: Final = 0xA0
ABC_OFF: Final = 0x00
_SENSOR: Final = 0x01
# The answer's temperature byte is the sensor's internal temperature plus 40 (°C).
TEMPERATURE_OFFSET: Final = 40


def checksum(frame: bytes) -> int:
    """The checksum byte for a 9-byte frame: 0x100 minus the sum of bytes 1-7."""
    return (0x100 - sum(frame[1:8])) & 0xFF


def command(number: int, *data: int) -> bytes:
    """A command to the sensor: ``command(READ_CO2)`` is ``FF 01 86 00 00 00 00 00 79``."""
    frame = HEADER + bytes([_SENSOR, number, *data]).ljust(7, b"\x00")
    return frame + bytes([checksum(frame + b"\x00")])


def frame_ok(frame: bytes) -> bool:
    """Whether a 9-byte frame's last byte is its checksum."""
    return len(frame) == FRAME_LENGTH and checksum(frame) == frame[8]
