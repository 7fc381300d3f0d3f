"""Modbus RTU framing: requests for function codes 3 and 4, answers, CRC-16/MODBUS.

A request is ``<slave> <function> <address hi lo> <count hi lo> <crc lo hi>``; an
answer ``<slave> <function> <byte count> <data…> <crc lo hi>``, or an exception
``<slave> <function | 0x80> <code> <crc lo hi>``.
"""

from __future__ import annotations

from typing import Final

from devices._crc import crc16 as crc16_of
from gateway.driver import Framer

__all__ = [
    "EXCEPTIONS",
    "READ_HOLDING",
    "READ_INPUT",
    "RtuFramer",
    "crc16_modbus",
    "read_request",
]

READ_HOLDING: Final = 0x03
READ_INPUT: Final = 0x04
_EXCEPTION_BIT: Final = 0x80
# The longest answer: 125 registers = 250 data bytes + slave, function, count, CRC.
MAX_ANSWER_BYTES: Final = 255
EXCEPTIONS: Final = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS (polynomial 0x8005 reflected, initial 0xFFFF)."""
    return crc16_of(data, 0xFFFF)


def with_crc(body: bytes) -> bytes:
    """``body`` with its CRC appended, low byte first."""
    return body + crc16_modbus(body).to_bytes(2, "little")


def read_request(slave: int, function: int, address: int, count: int) -> bytes:
    """A request to read ``count`` registers from ``address`` (function 3 or 4)."""
    return with_crc(
        bytes([slave, function]) + address.to_bytes(2, "big") + count.to_bytes(2, "big")
    )


class RtuFramer(Framer):
    """Cuts answers to read requests (and exceptions) out of the byte stream.

    RTU frames have no delimiter: the length follows from the function code and the
    byte count, and the CRC confirms the cut. On a wrong CRC or an unknown function the
    framer moves on by one byte (counted once per run of skipped bytes as ``garbage``,
    or as ``checksum`` when a whole frame was cut and failed its CRC).
    """

    def __init__(self) -> None:
        self.overflows = 0
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        skipped = 0
        buf = self._buf
        while len(buf) >= 3:
            slave, function = buf[0], buf[1]
            if function & _EXCEPTION_BIT and function & 0x7F in (READ_HOLDING, READ_INPUT):
                length = 5
            elif function in (READ_HOLDING, READ_INPUT) and buf[2] and buf[2] % 2 == 0:
                length = 5 + buf[2]
            else:
                length = 0
            if not length or not 1 <= slave <= 247:
                del buf[0]
                skipped += 1
                continue
            if len(buf) < length:
                break
            frame = bytes(buf[:length])
            if crc16_modbus(frame[:-2]).to_bytes(2, "little") != frame[-2:]:
                self.drop(
                    "checksum", f"CRC mismatch in a {length}-byte answer {frame[:16].hex(' ')}"
                )
                del buf[0]
                continue
            if skipped:
                self.drop("garbage", f"{skipped} bytes outside any answer discarded")
                skipped = 0
            frames.append(frame)
            del buf[:length]
        if skipped:
            self.drop("garbage", f"{skipped} bytes outside any answer discarded")
        return frames

    def reset(self) -> None:
        self._buf.clear()
