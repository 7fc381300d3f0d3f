"""The stock framers against garbage, truncation, wrong checksums, arbitrary chunking
and a device that never stops sending without a delimiter (bounded memory)."""

from __future__ import annotations

import itertools
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.driver import (
    FixedLengthFramer,
    Framer,
    LengthPrefixedFramer,
    LineFramer,
    MarkerFramer,
)

# --- a SDS011-like fixed-length frame: AA C0 <6 data> <sum> AB ----------------------------


def _sds(data: bytes) -> bytes:
    assert len(data) == 6
    return b"\xaa\xc0" + data + bytes([sum(data) & 0xFF]) + b"\xab"


def _sds_ok(frame: bytes) -> bool:
    return sum(frame[2:8]) & 0xFF == frame[8]


def _fixed() -> FixedLengthFramer:
    return FixedLengthFramer(10, header=b"\xaa", trailer=b"\xab", checksum=_sds_ok)


# --- a length-prefixed frame: 7E <len> <payload> <xor> --------------------------------------


def _lp(payload: bytes) -> bytes:
    x = 0
    for b in payload:
        x ^= b
    return b"\x7e" + bytes([len(payload)]) + payload + bytes([x])


def _lp_ok(frame: bytes) -> bool:
    x = 0
    for b in frame[2:-1]:
        x ^= b
    return x == frame[-1]


def _length_prefixed(max_bytes: int = 64) -> LengthPrefixedFramer:
    return LengthPrefixedFramer(
        b"\x7e", length_offset=1, length_adjust=1, max_bytes=max_bytes, checksum=_lp_ok
    )


def _feed_all(framer: Framer, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def _drops(framer: Framer) -> dict[str, int]:
    return {reason: count for reason, count, _ in framer.take_drops()}


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# --- fixed length ---------------------------------------------------------------------------


def test_fixed_length_resyncs_after_garbage_and_counts_it() -> None:
    a, b = _sds(b"\x01\x02\x03\x04\x05\x06"), _sds(b"\x10\x20\x30\x40\x50\x60")
    framer = _fixed()
    assert framer.feed(b"\x00\x13garbage" + a + b"\xffjunk" + b) == [a, b]
    assert _drops(framer) == {"garbage": 2}


def test_fixed_length_wrong_checksum_is_dropped_and_the_next_frame_kept() -> None:
    good = _sds(b"\x01\x02\x03\x04\x05\x06")
    bad = bytearray(good)
    bad[8] ^= 0x55
    framer = _fixed()
    assert framer.feed(bytes(bad) + good) == [good]
    drops = _drops(framer)
    assert drops["checksum"] == 1


def test_fixed_length_header_byte_inside_a_bad_frame_costs_one_frame_only() -> None:
    # A truncated frame whose payload holds the header byte: the framer must find the
    # real frame right after it, not skip 10 bytes past the false start.
    good = _sds(b"\x01\x02\x03\x04\x05\x06")
    truncated = b"\xaa\xc0\x01\xaa"  # cut off after 4 bytes
    framer = _fixed()
    assert framer.feed(truncated + good) == [good]
    assert "garbage" in _drops(framer) or framer.overflows == 0


def test_fixed_length_wrong_trailer_is_malformed() -> None:
    good = _sds(b"\x01\x02\x03\x04\x05\x06")
    framer = _fixed()
    assert framer.feed(good[:-1] + b"\x00" + good) == [good]
    assert _drops(framer).get("malformed") == 1


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(min_size=6, max_size=6), min_size=1, max_size=8),
    garbage=st.lists(st.binary(max_size=20).map(lambda g: g.replace(b"\xaa", b"")), max_size=9),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_fixed_length_finds_every_frame_between_garbage_in_any_chunking(
    payloads: list[bytes], garbage: list[bytes], cuts: list[int]
) -> None:
    frames = [_sds(p) for p in payloads]
    stream = b""
    for i, frame in enumerate(frames):
        stream += (garbage[i] if i < len(garbage) else b"") + frame
    framer = _fixed()
    assert _feed_all(framer, _split(stream, cuts)) == frames


# --- start/end markers ------------------------------------------------------------------


def _nmea_ok(frame: bytes) -> bool:
    body, _, tail = frame[1:].partition(b"*")
    x = 0
    for b in body:
        x ^= b
    return tail[:2] == f"{x:02X}".encode()


def _nmea(body: bytes) -> bytes:
    x = 0
    for b in body:
        x ^= b
    return b"$" + body + f"*{x:02X}".encode() + b"\r\n"


def test_markers_cut_frames_and_resync_on_a_new_start() -> None:
    a, b = _nmea(b"GPGGA,1,2,3"), _nmea(b"GPRMC,4,5")
    framer = MarkerFramer(b"$", b"\r\n", max_bytes=100, checksum=_nmea_ok)
    truncated = a[:9]  # the device reset mid-sentence
    assert framer.feed(b"noise" + truncated + a + b) == [a, b]
    assert _drops(framer) == {"garbage": 1, "truncated": 1}


def test_markers_with_a_checksum_after_the_end_marker() -> None:
    telegram = b"/XMX5LGBBFG1009394887\r\n\r\n1-0:1.8.1(001234.567*kWh)\r\n!ABCD\r\n"
    framer = MarkerFramer(b"/", b"!", after_end=6, max_bytes=2048)
    assert _feed_all(framer, [telegram[:40], telegram[40:62], telegram[62:]]) == [telegram]


def test_markers_wrong_checksum_dropped() -> None:
    good = _nmea(b"GPGGA,1,2,3")
    bad = good.replace(b"1,2", b"1,3")
    framer = MarkerFramer(b"$", b"\r\n", max_bytes=100, checksum=_nmea_ok)
    assert framer.feed(bad + good) == [good]
    assert _drops(framer) == {"checksum": 1}


def test_markers_too_long_frame_is_an_overflow_then_framing_resumes() -> None:
    good = _nmea(b"GPGGA,1")
    framer = MarkerFramer(b"$", b"\r\n", max_bytes=40)
    out = framer.feed(b"$" + b"x" * 100) + framer.feed(b"\r\n" + good)
    assert out == [good]
    assert framer.overflows == 1


def test_markers_without_restart_keep_start_bytes_inside_a_frame() -> None:
    framer = MarkerFramer(b"<", b">", restart_on_start=False)
    assert framer.feed(b"<a<b>") == [b"<a<b>"]


@settings(max_examples=200, deadline=None)
@given(
    bodies=st.lists(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.", min_size=1, max_size=60),
        min_size=1,
        max_size=6,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=15),
)
def test_markers_are_independent_of_chunking(bodies: list[str], cuts: list[int]) -> None:
    frames = [_nmea(b.encode()) for b in bodies]
    stream = b"".join(frames)
    framer = MarkerFramer(b"$", b"\r\n", max_bytes=100, checksum=_nmea_ok)
    assert _feed_all(framer, _split(stream, cuts)) == frames
    assert framer.take_drops() == []


# --- length-prefixed ----------------------------------------------------------------------


def test_length_prefixed_frames_garbage_and_checksum() -> None:
    a, b = _lp(b"hello"), _lp(b"\x7e\x7e")  # the header byte inside a payload
    bad = bytearray(_lp(b"world"))
    bad[-1] ^= 1
    framer = _length_prefixed()
    assert framer.feed(b"zz" + a + bytes(bad) + b) == [a, b]
    drops = _drops(framer)
    assert drops["checksum"] == 1
    assert drops["garbage"] >= 1


def test_length_prefixed_absurd_length_is_an_overflow_not_a_wait() -> None:
    good = _lp(b"ok")
    framer = _length_prefixed(max_bytes=32)
    # 7E FF: a frame of 258 bytes; the framer must not wait for it.
    assert framer.feed(b"\x7e\xff" + good) == [good]
    assert framer.overflows == 1


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_length_prefixed_is_independent_of_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    frames = [_lp(p) for p in payloads]
    framer = _length_prefixed()
    assert _feed_all(framer, _split(b"".join(frames), cuts)) == frames


# --- truncation at the end of the stream, reset ----------------------------------------


@pytest.mark.parametrize(
    ("framer", "frame"),
    [
        (_fixed(), _sds(b"\x01\x02\x03\x04\x05\x06")),
        (MarkerFramer(b"$", b"\r\n"), _nmea(b"GPGGA,1")),
        (_length_prefixed(), _lp(b"abc")),
        (LineFramer(), b"seq=1\n"),
    ],
)
def test_a_truncated_frame_is_held_until_reset_and_never_glued_to_the_next(
    framer: Framer, frame: bytes
) -> None:
    assert framer.feed(frame[:-2]) == []
    framer.reset()  # the core resets before each request and on every open
    out = framer.feed(frame)
    assert out == [frame.rstrip(b"\n")] if isinstance(framer, LineFramer) else out == [frame]


# --- a device that never stops sending without a delimiter ----------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: LineFramer(4096),
        lambda: MarkerFramer(b"$", b"\r\n", max_bytes=4096),
        lambda: _fixed(),
        lambda: _length_prefixed(max_bytes=4096),
    ],
    ids=["line", "markers", "fixed", "length_prefixed"],
)
def test_endless_bytes_without_a_delimiter_keep_memory_bounded(make: object) -> None:
    assert callable(make)
    framer: Framer = make()
    # 8 MB: a frame start and then never an end (the worst case for each framer).
    chunk = b"$\xaa\x7e" + b"x" * 4093
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak = 0
        for _ in range(2048):
            assert framer.feed(chunk) == []
            framer.take_drops()
            peak = max(peak, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"framer held {peak} bytes"


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(
        st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")), min_size=1, max_size=8
    ),
    crlf=st.booleans(),
)
def test_line_framer_gives_the_same_frames_a_line_at_a_time_and_a_byte_at_a_time(
    lines: list[bytes], crlf: bool
) -> None:
    # A whole line per read takes a shortcut past the buffer; over-long lines (max 8
    # bytes here) must be counted and dropped alike, CRs before the end stripped alike.
    end = b"\r\n" if crlf else b"\n"
    whole, bytewise = LineFramer(max_bytes=8), LineFramer(max_bytes=8)
    by_line = [f for line in lines for f in whole.feed(line + end)]
    stream = b"".join(line + end for line in lines)
    by_byte = [f for i in range(len(stream)) for f in bytewise.feed(stream[i : i + 1])]
    assert by_line == by_byte
    assert whole.overflows == bytewise.overflows
    assert by_line == [line.rstrip(b"\r") for line in lines if len(line + end) - 1 <= 8]
