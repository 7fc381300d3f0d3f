"""A subscribing MQTT client on an asyncio protocol: parse in place, no queue, no task.

Every chunk the socket gives (up to 256 KiB per wake-up) is parsed in one loop and each
PUBLISH is handed to ``on_message(topic, payload, qos, mid)`` right there, on the event
loop. Acknowledgements are the caller's (:meth:`MqttConnection.ack`, in order) and are
written together once per loop iteration. Why not paho/aiomqtt: see docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable

from gateway.mqtt import wire
from gateway.mqtt.wire import MqttError, ProtocolError

OnMessage = Callable[[str | None, bytes, int, int], None]
"""``(topic, payload, qos, mid)``; topic is None when it is not valid UTF-8."""

# How long CONNECT/CONNACK and SUBSCRIBE/SUBACK may take.
HANDSHAKE_TIMEOUT_S = 10.0


class _Protocol(asyncio.Protocol):
    def __init__(self, conn: MqttConnection) -> None:
        self.conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.conn._transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn._data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._lost(exc)


class MqttConnection:
    """One connection to a broker; :meth:`open` it, subscribe, then wait for its end."""

    def __init__(self, on_message: OnMessage, *, v5: bool) -> None:
        self.v5 = v5
        self.session_present = False
        self._on_message = on_message
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = 0
        self._acks: list[bytes] = []
        self._flush_scheduled = False
        self._connack: asyncio.Future[bytes] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[bytes]] = {}
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._next_mid = 0
        self._heard = True
        self._pinger: asyncio.Task[None] | None = None
        self._error: str | None = None
        self._by_us = False

    # --- lifecycle ---------------------------------------------------------------------

    async def open(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        keepalive: int,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        receive_maximum: int | None = None,
        session_expiry: int | None = None,
        clean: bool = False,
    ) -> None:
        """Connect and log in (a persistent session unless ``clean``); raise MqttError
        with the reason."""
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await self._loop.create_connection(
                    lambda: _Protocol(self),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
                assert self._transport is not None
                self._transport.write(
                    wire.connect(
                        client_id,
                        keepalive,
                        v5=self.v5,
                        username=username,
                        password=password,
                        receive_maximum=receive_maximum if self.v5 else None,
                        session_expiry=session_expiry if self.v5 else None,
                        clean=clean,
                    )
                )
                body = await self._connack
        except TimeoutError:
            self.abort()
            raise MqttError(f"no answer from the broker within {HANDSHAKE_TIMEOUT_S:g} s") from None
        except BaseException:
            self.abort()
            raise
        present, code, reason = wire.connack(body, self.v5)
        if code != 0:
            self.abort()
            text = wire.reason_text(code, self.v5)
            if self.v5 and code in (1, 0x84):
                text = 'the broker does not speak MQTT 5: set protocol = "3.1.1"'
            raise MqttError(f"connection refused: {text}" + (f" ({reason})" if reason else ""))
        self.session_present = present
        self._pinger = self._loop.create_task(self._ping(keepalive))

    async def wait_closed(self) -> None:
        """Return when the connection ends; raise MqttError saying why unless we closed it."""
        await asyncio.shield(self._closed)

    def pause_reading(self) -> None:
        """Take no more messages (stopping)."""
        if self._transport is not None:
            with contextlib.suppress(RuntimeError):
                self._transport.pause_reading()

    async def disconnect(self) -> None:
        """Send what is queued (acks first), DISCONNECT, and wait for the broker to close.

        The broker closes the connection once it has read the DISCONNECT, so by then it
        has read every PUBACK before it too: a new connection taking the session over
        right after cannot make it redeliver messages we acknowledged.
        """
        if self._transport is None or self._closed.done():
            return
        self._flush()
        self._transport.write(wire.DISCONNECT_PACKET)
        self._by_us = True
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2.0):
                await asyncio.shield(self._closed)
        self._transport.close()

    def abort(self) -> None:
        """Close at once (nothing more is sent)."""
        self._by_us = True
        if self._transport is not None:
            self._transport.abort()
        if self._pinger is not None:
            self._pinger.cancel()

    # --- requests ------------------------------------------------------------------------

    async def subscribe(self, filters: list[tuple[str, int]]) -> list[int]:
        """Subscribe; one granted QoS (0-2) or failure code (>= 0x80) per filter."""
        mid = self._mid()
        body = await self._request(mid, wire.subscribe(mid, filters, v5=self.v5))
        _, codes = wire.suback(body, self.v5)
        if len(codes) != len(filters):
            raise ProtocolError(f"SUBACK with {len(codes)} codes for {len(filters)} filters")
        return codes

    async def unsubscribe(self, filters: list[str]) -> None:
        mid = self._mid()
        await self._request(mid, wire.unsubscribe(mid, filters, v5=self.v5))

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a QoS 1 message; written with the others at the end of this turn."""
        if qos == 1:
            self._acks.append(wire.puback(mid))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._acks and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._acks))
        self._acks.clear()

    def _mid(self) -> int:
        self._next_mid = self._next_mid % 65535 + 1
        return self._next_mid

    async def _request(self, mid: int, packet: bytes) -> bytes:
        if self._transport is None or self._closed.done():
            raise MqttError("not connected")
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._pending[mid] = fut
        self._transport.write(packet)
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                return await fut
        except TimeoutError:
            raise MqttError(f"no answer from the broker within {HANDSHAKE_TIMEOUT_S:g} s") from None
        finally:
            self._pending.pop(mid, None)

    async def _ping(self, keepalive: int) -> None:
        # PINGREQ at half the keepalive; nothing heard for a whole keepalive: the
        # connection is dead even if TCP has not noticed.
        interval = keepalive / 2
        silent = 0.0
        while True:
            await asyncio.sleep(interval)
            if self._transport is None or self._transport.is_closing():
                return
            if self._heard:
                silent = 0.0
            else:
                silent += interval
                if silent >= keepalive:
                    self._error = f"no packet from the broker for {keepalive} s (keepalive)"
                    self._transport.abort()
                    return
            self._heard = False
            self._transport.write(wire.PINGREQ_PACKET)

    # --- incoming ------------------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        self._heard = True
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return  # a big packet still arriving: do not re-parse its start
            buf = self._buf
        else:
            buf = data
        try:
            used = self._parse(buf)
        except MqttError as err:
            self._error = str(err)
            self._buf.clear()
            if self._transport is not None:
                self._transport.abort()
            return
        if buf is self._buf:
            del self._buf[:used]
        elif used < len(buf):
            self._buf = bytearray(buf[used:])

    def _parse(self, buf: bytes | bytearray) -> int:
        """Handle every whole packet in ``buf``; return the bytes used."""
        pos = 0
        end = len(buf)
        v5 = self.v5
        deliver = self._on_message
        self._need = 0
        while end - pos >= 2:
            first = buf[pos]
            # Remaining length: up to 4 bytes, 7 bits each.
            length = buf[pos + 1]
            head = pos + 2
            if length & 0x80:
                length &= 0x7F
                shift = 7
                while True:
                    if head >= end:
                        self._need = end - pos + 1
                        return pos
                    digit = buf[head]
                    head += 1
                    length |= (digit & 0x7F) << shift
                    if digit < 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise ProtocolError("malformed remaining length")
            stop = head + length
            if stop > end:
                self._need = stop - pos
                return pos
            kind = first >> 4
            if kind == wire.PUBLISH:
                qos = (first >> 1) & 3
                tlen = (buf[head] << 8) | buf[head + 1]
                p = head + 2 + tlen
                raw_topic = buf[head + 2 : p]
                mid = 0
                if qos:
                    mid = (buf[p] << 8) | buf[p + 1]
                    p += 2
                if v5:
                    plen = buf[p]
                    if plen & 0x80:
                        plen, p = wire.read_varint(buf, p)
                    else:
                        p += 1
                    p += plen
                try:
                    topic: str | None = raw_topic.decode()
                except UnicodeDecodeError:
                    topic = None
                deliver(topic, bytes(buf[p:stop]), qos, mid)
            else:
                self._control(kind, bytes(buf[head:stop]))
            pos = stop
        return pos

    def _control(self, kind: int, body: bytes) -> None:
        if kind == wire.CONNACK:
            if not self._connack.done():
                self._connack.set_result(body)
        elif kind in (wire.SUBACK, wire.UNSUBACK):
            mid = (body[0] << 8) | body[1]
            fut = self._pending.get(mid)
            if fut is not None and not fut.done():
                fut.set_result(body)
        elif kind == wire.DISCONNECT:
            code, reason = wire.disconnect_reason(body)
            text = wire.reason_text(code, True) if code else "normal disconnection"
            if code == wire.SESSION_TAKEN_OVER:
                text = (
                    "session taken over: another client connected with our client id "
                    "(brokers.*.client_id must be unique per gateway)"
                )
            self._error = f"broker disconnected us: {text}" + (f" ({reason})" if reason else "")
        elif kind == wire.PINGRESP:
            pass
        elif kind == wire.PUBREL:
            # Only after a QoS 2 PUBREC, which we never send (we subscribe with QoS <= 1).
            raise ProtocolError("unexpected PUBREL")
        else:
            raise ProtocolError(f"unexpected packet type {kind}")

    def _lost(self, exc: Exception | None) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
        error: str | None = None
        if not (self._by_us and exc is None):
            error = self._error or (str(exc) if exc else "the broker closed the connection")
        for fut in (self._connack, *self._pending.values()):
            if not fut.done():
                fut.set_exception(MqttError(error or "connection closed"))
                fut.exception()  # nobody may be waiting any more
        if not self._closed.done():
            if error is None:
                self._closed.set_result(None)
            else:
                self._closed.set_exception(MqttError(error))
                self._closed.exception()  # the hub may be stopping and not waiting
