"""The SDS011 serial protocol (Nova Fitness "Laser Dust Sensor Control Protocol" V1.3).

Sensor → host frames are 10 bytes: ``AA <kind> d1..d6 <sum of d1..d6> AB``; kind ``C0``
is a measurement, ``C5`` the reply to a command. Host → sensor commands are 19 bytes:
``AA B4 <cmd> d1..d12 <id FF FF = any> <sum of cmd..id> AB``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ANY_SENSOR",
    "COMMAND_LENGTH",
    "DATA",
    "FRAME_LENGTH",
    "HEADER",
    "QUERY_DATA",
    "REPLY",
    "REPORTING_MODE",
    "SLEEP_WORK",
    "TRAILER",
    "WORKING_PERIOD",
    "command",
    "command_ok",
    "frame_ok",
]

HEADER: Final = b"\xaa"
TRAILER: Final = b"\xab"
FRAME_LENGTH: Final = 10
COMMAND_LENGTH: Final = 19
DATA: Final = 0xC0
REPLY: Final = 0xC5
_COMMAND: Final = 0xB4
# Command numbers (the byte after B4, echoed in byte 2 of the C5 reply).
REPORTING_MODE: Final = 0x02  # d1 = 1 set / 0 ask, d2 = 0 active / 1 query
QUERY_DATA: Final = 0x04
SLEEP_WORK: Final = 0x06  # d1 = 1 set / 0 ask, d2 = 0 sleep / 1 work
WORKING_PERIOD: Final = 0x08  # d1 = 1 set / 0 ask, d2 = minutes (0 = continuous)
ANY_SENSOR: Final = b"\xff\xff"


def command(number: int, *data: int) -> bytes:
    """A 19-byte command to any sensor: ``command(SLEEP_WORK, 1, 1)`` wakes it."""
    body = bytes([number, *data]).ljust(13, b"\x00") + ANY_SENSOR
    return HEADER + bytes([_COMMAND]) + body + bytes([sum(body) & 0xFF]) + TRAILER


def frame_ok(frame: bytes) -> bool:
    """Whether a 10-byte frame's checksum (the sum of bytes 2-7) matches byte 8."""
    return len(frame) == FRAME_LENGTH and sum(frame[2:8]) & 0xFF == frame[8]


def command_ok(frame: bytes) -> bool:
    """Whether a 19-byte command's checksum (the sum of bytes 2-16) matches byte 17."""
    return len(frame) == COMMAND_LENGTH and sum(frame[2:17]) & 0xFF == frame[17]
