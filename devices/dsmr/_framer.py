"""Cutting a P1 byte stream into telegrams: ``/`` header … ``!`` [CRC] line end."""

from __future__ import annotations

from typing import Final

from devices._crc import crc16 as crc16_of
from gateway.driver import Framer

__all__ = ["TelegramFramer", "crc16"]

_START: Final = b"/"
_END: Final = b"!"


def crc16(data: bytes) -> int:
    """CRC-16/ARC (polynomial 0x8005 reflected, initial 0), as DSMR 4+ uses after ``!``."""
    return crc16_of(data, 0)


class TelegramFramer(Framer):
    """Frames are telegrams from ``/`` to the line end after ``!``.

    Bytes that are not part of a telegram are handed on as a frame of their own (the
    driver rejects them as ``truncated``): a telegram cut off by a new ``/`` header,
    noise between telegrams. The bytes before the first header after a (re)connect
    are dropped silently: joining a meter mid-telegram is normal. A telegram over
    ``max_bytes`` is dropped and counted in ``overflows``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.overflows = 0
        self._buf = bytearray()
        self._in_telegram = False
        self._quiet = True  # drop leading bytes silently until the next header

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while self._buf:
            if not self._in_telegram:
                start = self._buf.find(_START)
                if start < 0:
                    if len(self._buf) > self.max_bytes:
                        self._overflow()
                    break
                junk = bytes(self._buf[:start])
                del self._buf[:start]
                if junk.strip() and not self._quiet:
                    frames.append(junk)
                self._in_telegram = True
                self._quiet = False
            end = self._buf.find(_END, 1)
            restart = self._buf.find(_START, 1, end if end >= 0 else len(self._buf))
            if restart >= 0:  # a new header before this telegram ended: it was cut off
                frames.append(bytes(self._buf[:restart]))
                del self._buf[:restart]
                continue
            line_end = self._buf.find(b"\n", end) if end >= 0 else -1
            if line_end < 0:
                if len(self._buf) > self.max_bytes:
                    self._overflow()
                break
            if line_end + 1 > self.max_bytes:
                self.overflows += 1
            else:
                frames.append(bytes(self._buf[: line_end + 1]))
            del self._buf[: line_end + 1]
            self._in_telegram = False
        return frames

    def reset(self) -> None:
        self._buf.clear()
        self._in_telegram = False
        self._quiet = True

    def _overflow(self) -> None:
        self.overflows += 1
        self._buf.clear()
        self._in_telegram = False
        self._quiet = True  # the rest of the long telegram is not counted again
