"""CRC-16 with the reflected polynomial 0x8005 (0xA001), table-driven.

Two protocols use it with different start values: Modbus RTU (CRC-16/MODBUS, 0xFFFF)
and DSMR 4+ P1 telegrams (CRC-16/ARC, 0).
"""

from __future__ import annotations

from typing import Final

__all__ = ["crc16"]


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE: Final = _table()


def crc16(data: bytes, init: int) -> int:
    """The CRC of ``data`` starting from ``init``."""
    crc = init
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc
