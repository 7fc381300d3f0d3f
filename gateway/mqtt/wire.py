"""The MQTT 3.1.1 / 5 packets a subscribing client needs, encoded and decoded.

Only what the gateway uses: CONNECT/CONNACK, SUBSCRIBE/SUBACK, UNSUBSCRIBE/UNSUBACK,
PUBLISH in (QoS 0/1), PUBACK out, PINGREQ/PINGRESP, DISCONNECT (both ways).
"""

from __future__ import annotations

import struct

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
# MQTT 5 property identifiers used here.
PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21
PROP_REASON_STRING = 0x1F

_PUBACK_HEAD = b"\x40\x02"
_U16 = struct.Struct("!H")

# CONNACK return codes (3.1.1) and the reason codes of MQTT 5 a client meets.
CONNACK_3 = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "Bad user name or password",
    5: "Not authorized",
}
REASONS_5 = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "Bad user name or password",
    0x87: "Not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}
SESSION_TAKEN_OVER = 0x8E


class MqttError(Exception):
    """The connection failed or ended; the message says why."""


class ProtocolError(MqttError):
    """The broker sent something that is not MQTT."""


def reason_text(code: int, v5: bool) -> str:
    """A broker's refusal code in words."""
    table = REASONS_5 if v5 else CONNACK_3
    return table.get(code, f"reason code {code:#04x}")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _U16.pack(len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect(
    client_id: str,
    keepalive: int,
    *,
    v5: bool,
    clean: bool = False,
    username: str | None = None,
    password: str | None = None,
    receive_maximum: int | None = None,
    session_expiry: int | None = None,
) -> bytes:
    """CONNECT; a persistent session unless ``clean``."""
    flags = 0x02 if clean else 0
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = _str("MQTT") + bytes([5 if v5 else 4, flags]) + _U16.pack(keepalive)
    if v5:
        props = b""
        if session_expiry is not None:
            props += bytes([PROP_SESSION_EXPIRY]) + struct.pack("!I", session_expiry)
        if receive_maximum is not None:
            props += bytes([PROP_RECEIVE_MAXIMUM]) + _U16.pack(receive_maximum)
        body += varint(len(props)) + props
    body += _str(client_id)
    if username is not None:
        body += _str(username)
    if password is not None:
        body += _str(password)
    return _packet(CONNECT << 4, body)


def subscribe(mid: int, filters: list[tuple[str, int]], *, v5: bool) -> bytes:
    body = _U16.pack(mid) + (b"\x00" if v5 else b"")
    for topic, qos in filters:
        body += _str(topic) + bytes([qos])
    return _packet(SUBSCRIBE << 4 | 0x02, body)


def unsubscribe(mid: int, filters: list[str], *, v5: bool) -> bytes:
    body = _U16.pack(mid) + (b"\x00" if v5 else b"")
    for topic in filters:
        body += _str(topic)
    return _packet(UNSUBSCRIBE << 4 | 0x02, body)


def puback(mid: int) -> bytes:
    """PUBACK (success; MQTT 5 allows leaving out reason code 0 and properties)."""
    return _PUBACK_HEAD + _U16.pack(mid)


def read_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(value, position after it); raises ProtocolError past 4 bytes or the buffer end."""
    value = 0
    shift = 0
    for i in range(pos, min(pos + 4, len(buf))):
        digit = buf[i]
        value |= (digit & 0x7F) << shift
        if digit < 0x80:
            return value, i + 1
        shift += 7
    raise ProtocolError("malformed variable-length integer")


def connack(body: bytes, v5: bool) -> tuple[bool, int, str]:
    """(session present, return/reason code, reason string from the broker or "")."""
    if len(body) < 2:
        raise ProtocolError("CONNACK too short")
    reason = ""
    if v5 and len(body) > 2:
        reason = _reason_string(body, 2)
    return bool(body[0] & 1), body[1], reason


def suback(body: bytes, v5: bool) -> tuple[int, list[int]]:
    """(packet id, one granted QoS or failure code per filter)."""
    mid = _U16.unpack_from(body)[0]
    pos = 2
    if v5:
        length, pos = read_varint(body, pos)
        pos += length
    return mid, list(body[pos:])


def disconnect_reason(body: bytes) -> tuple[int, str]:
    """An MQTT 5 DISCONNECT from the broker: (reason code, reason string or "")."""
    if not body:
        return 0, ""
    return body[0], _reason_string(body, 1) if len(body) > 1 else ""


def _reason_string(body: bytes, pos: int) -> str:
    try:
        length, pos = read_varint(body, pos)
        end = pos + length
        while pos < end:
            ident = body[pos]
            pos += 1
            if ident == PROP_REASON_STRING:
                size = _U16.unpack_from(body, pos)[0]
                return body[pos + 2 : pos + 2 + size].decode("utf-8", "replace")
            # Skip a property we do not use (sizes per MQTT 5 §2.2.2.2).
            if ident in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
                pos += 1
            elif ident in (0x13, 0x21, 0x22, 0x23):
                pos += 2
            elif ident in (0x02, 0x11, 0x18, 0x27):
                pos += 4
            elif ident == 0x0B:
                _, pos = read_varint(body, pos)
            elif ident == 0x26:
                for _ in range(2):
                    pos += 2 + _U16.unpack_from(body, pos)[0]
            else:
                pos += 2 + _U16.unpack_from(body, pos)[0]
    except (ProtocolError, struct.error, IndexError):
        return ""
    return ""
