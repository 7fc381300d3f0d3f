"""Stock framers: cut a serial byte stream into frames, with bounded buffers.

Every framer here resynchronizes after garbage (it looks for the next frame start one
byte after a bad one, not after the whole bad frame), never raises for bad bytes, and
never holds more than ``max_bytes`` of a partial frame: a device spewing bytes without
a delimiter cannot grow memory. What a framer throws away is reported to the core,
which counts it per device with its reason and logs it (rate-limited):

* ``overflows`` (reported as ``frame_too_long``): a frame longer than ``max_bytes``;
* :meth:`Framer.take_drops`: everything else, by reason — ``garbage`` (bytes outside
  any frame), ``checksum`` (a complete frame whose check failed), ``truncated`` (a
  frame cut off by the start of the next one), ``malformed`` (e.g. a wrong trailer).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Final, Literal

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Checksum",
    "FixedLengthFramer",
    "Framer",
    "LengthPrefixedFramer",
    "LineFramer",
    "MarkerFramer",
]

# A text frame longer than this is garbage or a missing terminator, not a reading.
DEFAULT_MAX_FRAME_BYTES: Final = 4096

Checksum = Callable[[bytes], bool]
"""Checks one whole candidate frame (header to trailer); True if it is intact."""


class Framer(ABC):
    """Cuts a byte stream into frames, with a bounded buffer.

    A framer never raises for bad bytes: an over-long frame is discarded, counted in
    ``overflows`` (the core turns that into a ``frame_too_long`` rejection) and the
    framer resynchronizes at the next frame boundary. Other discards are recorded with
    :meth:`drop` and collected by the core with :meth:`take_drops` after each feed.
    """

    overflows: int = 0
    _drops: dict[str, list[int | str]] | None = None

    @abstractmethod
    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete frames now available (possibly none)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget any partial frame (after a reconnect, before a request)."""

    def drop(self, reason: str, message: str) -> None:
        """Record a discard (counted by the core under ``reason``; last message kept)."""
        if self._drops is None:
            self._drops = {}
        slot = self._drops.get(reason)
        if slot is None:
            self._drops[reason] = [1, message]
        else:
            slot[0] = int(slot[0]) + 1
            slot[1] = message

    @property
    def buffered(self) -> int:
        """Bytes of a partial frame held now (0 if the framer does not say)."""
        buf = getattr(self, "_buf", None)
        return len(buf) if isinstance(buf, bytearray) else 0

    @property
    def has_drops(self) -> bool:
        """True if :meth:`take_drops` has something to report."""
        return bool(self._drops)

    def take_drops(self) -> list[tuple[str, int, str]]:
        """The discards since the last call: ``(reason, count, last message)``."""
        drops = self._drops
        if not drops:
            return []
        self._drops = None
        return [(reason, int(count), str(msg)) for reason, (count, msg) in drops.items()]


class LineFramer(Framer):
    """Frames are lines ending in ``terminator``; a CR before it is stripped."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_FRAME_BYTES, terminator: bytes = b"\n") -> None:
        if not terminator:
            raise ValueError("the line terminator cannot be empty")
        self.max_bytes = max_bytes
        self.overflows = 0
        self._term = terminator
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        term = self._term
        if not self._buf and not self._discarding and data.endswith(term):
            # The common case, one whole line per read: no copy through the buffer.
            end = data.find(term)
            if end == len(data) - len(term):
                if end > self.max_bytes:
                    self.overflows += 1
                    return []
                return [data[:end].rstrip(b"\r")]
        self._buf += data
        frames: list[bytes] = []
        while (end := self._buf.find(self._term)) >= 0:
            frame = bytes(self._buf[:end])
            del self._buf[: end + len(self._term)]
            if self._discarding:  # the tail of an over-long line, already counted
                self._discarding = False
            elif len(frame) > self.max_bytes:
                self.overflows += 1
            else:
                frames.append(frame.rstrip(b"\r"))
        if len(self._buf) > self.max_bytes:
            # No terminator within the limit: drop what we have and skip to the next one,
            # so a device streaming garbage cannot grow our memory. Keep a possible
            # partial terminator at the end.
            keep = len(self._term) - 1
            tail = bytes(self._buf[-keep:]) if keep else b""
            self._buf[:] = tail
            if not self._discarding:
                self.overflows += 1
            self._discarding = True
        return frames

    def reset(self) -> None:
        self._buf.clear()
        self._discarding = False


class _SyncFramer(Framer):
    """Shared machinery of framers that look for a start marker and resync after it."""

    def __init__(self, start: bytes, max_bytes: int) -> None:
        if not start:
            raise ValueError("the frame start (header) cannot be empty")
        if max_bytes < len(start):
            raise ValueError("max_bytes must hold at least the frame start")
        self.start = start
        self.max_bytes = max_bytes
        self.overflows = 0
        self._buf = bytearray()

    def reset(self) -> None:
        self._buf.clear()

    def _sync(self) -> bool:
        """Drop bytes before the next frame start; True if the buffer now begins with one."""
        buf = self._buf
        if buf.startswith(self.start):
            return True
        at = buf.find(self.start)
        if at < 0:
            # Keep what could be the beginning of a split start marker.
            keep = min(len(buf), len(self.start) - 1)
            while keep and not self.start.startswith(bytes(buf[len(buf) - keep :])):
                keep -= 1
            skipped = len(buf) - keep
            if skipped:
                self.drop("garbage", f"{skipped} bytes outside any frame discarded")
                del buf[:skipped]
            return False
        self.drop("garbage", f"{at} bytes before a frame start discarded")
        del buf[:at]
        return True

    def _skip_start(self) -> None:
        """Resync one byte after the current (bad) frame start."""
        del self._buf[:1]

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while self._sync():
            frame = self._cut()
            if frame is None:
                break
            if frame:
                frames.append(frame)
        return frames

    @abstractmethod
    def _cut(self) -> bytes | None:
        """With the buffer at a frame start: a frame, b"" after a discard, None if incomplete."""


class FixedLengthFramer(_SyncFramer):
    """Frames of ``length`` bytes that begin with ``header`` and may end with ``trailer``.

    ``checksum`` (optional) gets the whole frame; a frame whose trailer or checksum is
    wrong is dropped (``malformed`` / ``checksum``) and the framer looks for the next
    header one byte further on, so a header byte inside the payload never costs more
    than one frame. Example, the SDS011's 10-byte frames::

        FixedLengthFramer(10, header=b"\\xaa", trailer=b"\\xab",
                          checksum=lambda f: sum(f[2:8]) & 0xFF == f[8])
    """

    def __init__(
        self,
        length: int,
        header: bytes,
        trailer: bytes = b"",
        checksum: Checksum | None = None,
    ) -> None:
        if length < len(header) + len(trailer):
            raise ValueError("length must hold the header and the trailer")
        super().__init__(header, max(length, len(header)))
        self.length = length
        self.trailer = trailer
        self.checksum = checksum

    def _cut(self) -> bytes | None:
        buf = self._buf
        if len(buf) < self.length:
            return None
        frame = bytes(buf[: self.length])
        if self.trailer and not frame.endswith(self.trailer):
            self.drop("malformed", f"frame {frame.hex(' ')} does not end in {self.trailer.hex()}")
            self._skip_start()
            return b""
        if self.checksum is not None and not self.checksum(frame):
            self.drop("checksum", f"checksum mismatch in frame {frame.hex(' ')}")
            self._skip_start()
            return b""
        del buf[: self.length]
        return frame


class MarkerFramer(_SyncFramer):
    """Frames from a ``start`` marker to an ``end`` marker (both kept in the frame).

    ``after_end`` more bytes after the end marker belong to the frame (a checksum,
    like DSMR's ``!XXXX``); ``checksum`` gets the whole frame. A new start marker
    before the end cuts the frame short: it is dropped as ``truncated`` and framing
    restarts there (set ``restart_on_start=False`` if the start marker can occur
    inside a frame). A frame longer than ``max_bytes`` is dropped as an overflow.
    Examples: NMEA ``MarkerFramer(b"$", b"\\r\\n", max_bytes=82)``; DSMR
    ``MarkerFramer(b"/", b"!", after_end=6, max_bytes=8192)`` (``!`` CRC CR LF).
    """

    def __init__(
        self,
        start: bytes,
        end: bytes,
        *,
        after_end: int = 0,
        max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        checksum: Checksum | None = None,
        restart_on_start: bool = True,
    ) -> None:
        if not end:
            raise ValueError("the end marker cannot be empty")
        super().__init__(start, max_bytes)
        self.end = end
        self.after_end = after_end
        self.checksum = checksum
        self.restart_on_start = restart_on_start
        self._scanned = len(start)  # where to resume looking for the end marker

    def reset(self) -> None:
        super().reset()
        self._scanned = len(self.start)

    def _cut(self) -> bytes | None:
        buf = self._buf
        # Bytes up to _scanned held neither marker: look again only across the seam.
        overlap = max(len(self.end), len(self.start)) - 1
        search_from = max(len(self.start), self._scanned - overlap)
        end = buf.find(self.end, search_from)
        limit = len(buf) if end < 0 else end
        if self.restart_on_start:
            again = buf.find(self.start, search_from, limit)
            if again >= 0:
                self.drop("truncated", f"frame cut off after {again} bytes by the next start")
                del buf[:again]
                self._scanned = len(self.start)
                return b""
        if end < 0:
            if len(buf) > self.max_bytes:
                self.overflows += 1
                self._skip_start()
                self._scanned = len(self.start)
                return b""
            self._scanned = len(buf)
            return None
        total = end + len(self.end) + self.after_end
        if total > self.max_bytes:
            self.overflows += 1
            self._skip_start()
            self._scanned = len(self.start)
            return b""
        if len(buf) < total:
            self._scanned = end + overlap  # the end marker is found again on the next feed
            return None
        frame = bytes(buf[:total])
        self._scanned = len(self.start)
        if self.checksum is not None and not self.checksum(frame):
            self.drop("checksum", f"checksum mismatch in a {len(frame)}-byte frame")
            del buf[:total]
            return b""
        del buf[:total]
        return frame


class LengthPrefixedFramer(_SyncFramer):
    """Frames that carry their own length: ``header``, ..., a length field, the rest.

    The length field is ``length_size`` bytes (``byteorder``) at ``length_offset``
    from the frame start; the whole frame is ``length_offset + length_size + value +
    length_adjust`` bytes (``length_adjust`` covers what the length does not count,
    such as a trailing CRC). A length that makes the frame longer than ``max_bytes``
    is garbage: dropped as an overflow and the framer resyncs one byte further on.
    Example: ``LengthPrefixedFramer(b"\\x7e", length_offset=1, length_size=2,
    length_adjust=2, checksum=crc_ok)``.
    """

    def __init__(
        self,
        header: bytes,
        *,
        length_offset: int,
        length_size: Literal[1, 2, 4] = 1,
        byteorder: Literal["big", "little"] = "big",
        length_adjust: int = 0,
        max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        checksum: Checksum | None = None,
    ) -> None:
        if length_offset < len(header):
            raise ValueError("the length field cannot overlap the header")
        super().__init__(header, max_bytes)
        self.length_offset = length_offset
        self.length_size = length_size
        self.byteorder: Literal["big", "little"] = byteorder
        self.length_adjust = length_adjust
        self.checksum = checksum

    def _cut(self) -> bytes | None:
        buf = self._buf
        head = self.length_offset + self.length_size
        if len(buf) < head:
            return None
        value = int.from_bytes(buf[self.length_offset : head], self.byteorder)
        total = head + value + self.length_adjust
        if total > self.max_bytes or total < head:
            self.overflows += 1
            self._skip_start()
            return b""
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        if self.checksum is not None and not self.checksum(frame):
            self.drop("checksum", f"checksum mismatch in frame {frame[:32].hex(' ')}")
            self._skip_start()
            return b""
        del buf[:total]
        return frame
