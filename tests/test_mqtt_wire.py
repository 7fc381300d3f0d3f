"""The MQTT parser of the gateway's client: packets cut anywhere, big ones, bad ones."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.mqtt import wire
from gateway.mqtt.client import MqttConnection


class _Transport:
    def __init__(self) -> None:
        self.aborted = False
        self.written: list[bytes] = []

    def abort(self) -> None:
        self.aborted = True

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.aborted


def publish(topic: bytes, payload: bytes, qos: int = 0, mid: int = 0, v5: bool = False) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if v5:
        props = b"\x01\x01"  # payload format indicator: UTF-8
        body += wire.varint(len(props)) + props
    body += payload
    return bytes([wire.PUBLISH << 4 | qos << 1]) + wire.varint(len(body)) + body


def _conn(v5: bool = False) -> tuple[MqttConnection, list[tuple[str | None, bytes, int, int]]]:
    got: list[tuple[str | None, bytes, int, int]] = []
    conn = MqttConnection(lambda *m: got.append(m), v5=v5)
    conn._transport = _Transport()  # type: ignore[assignment]
    return conn, got


def _feed(conn: MqttConnection, data: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        conn._data(data[last:cut])
        last = cut
    conn._data(data[last:])


MESSAGES = [
    (b"a/b", b'{"t": 1}', 0, 0),
    (b"sensors/kitchen/state", b"x" * 300, 1, 7),  # two-byte remaining length
    (b"big", b"y" * 200_000, 1, 65535),  # three bytes
    (b"\xff\xfe", b"bad topic", 0, 0),
    (b"empty", b"", 1, 1),
]


@pytest.mark.parametrize("v5", [False, True])
@given(cuts=st.lists(st.integers(min_value=0), max_size=8))
async def test_packets_cut_anywhere_arrive_whole_and_in_order(v5: bool, cuts: list[int]) -> None:
    conn, got = _conn(v5)
    stream = b"".join(publish(t, p, q, m, v5) for t, p, q, m in MESSAGES)
    stream += b"\xd0\x00"  # PINGRESP between messages is fine
    stream += publish(b"last", b"1", 1, 2, v5)
    _feed(conn, stream, cuts)
    expected = [
        (t.decode() if t != b"\xff\xfe" else None, p, q, m) for t, p, q, m in MESSAGES
    ] + [("last", b"1", 1, 2)]
    assert got == expected
    assert not conn._buf


async def test_a_big_packet_arriving_in_small_reads_is_not_reparsed_each_time() -> None:
    conn, got = _conn()
    data = publish(b"big", b"z" * 1_000_000, 1, 3)
    for i in range(0, len(data), 65536):
        conn._data(data[i : i + 65536])
    assert got == [("big", b"z" * 1_000_000, 1, 3)]


async def test_a_malformed_remaining_length_aborts_the_connection() -> None:
    conn, got = _conn()
    conn._data(b"\x30\xff\xff\xff\xff\x01")
    assert got == []
    transport = conn._transport
    assert isinstance(transport, _Transport)
    assert transport.aborted
    assert conn._error is not None
    assert "malformed" in conn._error


async def test_acks_of_one_turn_are_written_together() -> None:
    conn, _ = _conn()
    for mid in (1, 2, 3):
        conn.ack(mid, 1)
    conn._flush()
    transport = conn._transport
    assert isinstance(transport, _Transport)
    assert transport.written == [b"\x40\x02\x00\x01\x40\x02\x00\x02\x40\x02\x00\x03"]


async def test_a_takeover_disconnect_names_the_client_id() -> None:
    conn, _ = _conn(v5=True)
    conn._data(b"\xe0\x01\x8e")
    assert conn._error is not None
    assert "session taken over" in conn._error
    assert "client_id" in conn._error


def test_connect_packets_carry_a_persistent_session_and_receive_maximum() -> None:
    v5 = wire.connect("gw-1", 60, v5=True, receive_maximum=2000, session_expiry=0xFFFFFFFF)
    assert v5[0] == 0x10
    assert b"MQTT\x05\x00" in v5  # level 5, clean start off
    assert b"\x21\x07\xd0" in v5  # Receive Maximum 2000
    assert b"\x11\xff\xff\xff\xff" in v5  # session never expires
    v3 = wire.connect("gw-1", 60, v5=False, username="u", password="p")
    assert b"MQTT\x04\xc0" in v3  # level 4, username + password, clean session off


def test_suback_codes_and_reasons() -> None:
    assert wire.suback(b"\x00\x05\x01\x80", v5=False) == (5, [1, 0x80])
    assert wire.suback(b"\x00\x05\x00\x87", v5=True) == (5, [0x87])
    assert wire.reason_text(0x87, v5=True) == "Not authorized"
    assert wire.reason_text(4, v5=False) == "Bad user name or password"


async def test_a_read_ending_inside_the_length_of_a_later_packet() -> None:
    conn, got = _conn()
    first = publish(b"t", b"a" * 500, 0)
    second = publish(b"u", b"b" * 300, 0)  # two-byte remaining length
    stream = first * 3 + second
    cut = len(first) * 3 + 2  # after the first length byte of the last packet
    conn._data(stream[:cut])
    conn._data(stream[cut:])
    assert [m[0] for m in got] == ["t", "t", "t", "u"]
