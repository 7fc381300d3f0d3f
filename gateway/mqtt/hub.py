"""One MQTT connection per broker, shared by every device on that broker.

aiomqtt 2.x does not reconnect by itself: :meth:`MqttHub.run` loops around the client
context, backs off with jitter on :class:`aiomqtt.MqttError`, and resubscribes every
device's topics on each connection. Messages are routed to the devices whose topic
patterns match; a device's bad payload is counted and reported for that device only.

Messages are decoded and spooled straight from paho's message callback, on the event
loop (no queue, no task per message). A QoS 1 message is acknowledged only once the
spool commit holding its readings is done (:class:`AckWindow`): until then the broker
keeps it, so neither kill -9 nor a stop loses it; the broker's in-flight window is the
only buffer, and TCP flow control holds what we cannot take yet.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.backoff import Backoff
from gateway.config import BrokerSection, default_client_id
from gateway.delivery.spool import Spool
from gateway.driver import MqttDriver
from gateway.errors import RejectedInput
from gateway.mqtt.acks import AckWindow
from gateway.pipeline.intake import DeviceInput

# Routing results are cached per topic; a gateway sees a bounded set of topics, but a
# misbehaving publisher could invent endless ones, so the cache is capped.
ROUTE_CACHE_SIZE = 10_000
# MQTT 5 session expiry meaning "never": the broker keeps our session and its queue like
# a 3.1.1 clean_session = false session.
SESSION_NEVER_EXPIRES = 0xFFFFFFFF


@dataclass(slots=True)
class _Route:
    driver: MqttDriver[Any]
    entry: DeviceInput


@dataclass(slots=True)
class BrokerStats:
    """Connection state of one broker, for status."""

    state: str = "connecting"
    connects: int = 0
    messages: int = 0
    unrouted: int = 0
    sessions_lost: int = 0
    last_error: str = ""
    subscriptions: list[str] = field(default_factory=list)
    acked: int = 0
    unacked: int = 0
    early_commits: int = 0


class MqttHub:
    """Owns one broker connection and routes its messages to devices."""

    def __init__(self, name: str, config: BrokerSection) -> None:
        self.name = name
        self.config = config
        self.stats = BrokerStats()
        self._routes: list[_Route] = []
        self._cache: dict[str, list[_Route]] = {}
        self._log = structlog.get_logger("gateway.mqtt").bind(broker=name)
        self._acks: AckWindow | None = None

    def add_device(self, driver: MqttDriver[Any], entry: DeviceInput) -> None:
        """Route matching messages to ``driver`` (before :meth:`run`)."""
        self._routes.append(_Route(driver, entry))
        self._cache.clear()

    @property
    def devices(self) -> list[DeviceInput]:
        """The devices this hub routes messages to."""
        return [route.entry for route in self._routes]

    @property
    def window(self) -> int:
        """How many unacknowledged QoS 1 messages the broker sends us at most."""
        cfg = self.config
        return cfg.receive_maximum if cfg.protocol == "5" else cfg.inflight_window

    def _client(self) -> _Client:
        cfg = self.config
        tls_context = None
        if cfg.tls or cfg.ca_file or cfg.cert_file:
            tls_context = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.cert_file:
                tls_context.load_cert_chain(cfg.cert_file, cfg.key_file)
        # A stable client id with a persistent session lets the broker keep QoS 1
        # messages for us while we are away (see docs/delivery.md).
        session: dict[str, Any]
        if cfg.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = cfg.receive_maximum
            props.SessionExpiryInterval = SESSION_NEVER_EXPIRES
            session = {
                "protocol": aiomqtt.ProtocolVersion.V5,
                "clean_start": False,
                "properties": props,
            }
        else:
            session = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
        return _Client(
            self._on_message,
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.resolved_password(),
            identifier=cfg.client_id or default_client_id(),
            keepalive=cfg.keepalive,
            tls_context=tls_context,
            **session,
        )

    def _spool(self) -> Spool | None:
        return self._routes[0].entry.pipeline.spool if self._routes else None

    async def run(self) -> None:
        """Connect, subscribe, route messages; reconnect with backoff forever."""
        cfg = self.config
        backoff = Backoff(cfg.reconnect_initial, cfg.reconnect_max)
        filters: dict[str, int] = {}
        for route in self._routes:
            for topic in route.driver.subscriptions():
                # QoS 2 would hand the message over (PUBREC) before it is spooled; QoS 1
                # acknowledged after the commit is the stronger promise, and redeliveries
                # are absorbed by fixed timestamps (docs/delivery.md).
                qos = min(route.driver.options.qos, 1)
                filters[topic] = max(filters.get(topic, 0), qos)
        self.stats.subscriptions = sorted(filters)
        where = f"{cfg.host}:{cfg.port}"
        disconnected_at = time.monotonic()
        while True:
            try:
                client = self._client()
                async with client:
                    acks = self._acks = AckWindow(client, self._spool(), self.window, self.stats)
                    try:
                        for topic, qos in filters.items():
                            await client.subscribe(topic, qos=qos)
                        self.stats.state = "connected"
                        self.stats.connects += 1
                        self._log.info(
                            "connected to MQTT broker",
                            address=where,
                            subscriptions=len(filters),
                            session_present=client.session_present,
                            protocol=cfg.protocol,
                            window=self.window,
                        )
                        if self.stats.connects > 1 and not client.session_present:
                            self.stats.sessions_lost += 1
                            self._log.warning(
                                "MQTT broker did not keep our session (restarted without "
                                "persistence?): QoS 1 messages published while we were "
                                "disconnected are lost",
                                address=where,
                                gap_s=round(time.monotonic() - disconnected_at, 1),
                            )
                        backoff.reset()
                        await client.wait_closed()
                    except asyncio.CancelledError:
                        # Stopping: take no more, commit what we read, acknowledge it,
                        # then the context exit disconnects cleanly (acks go out first).
                        client.pause_reading()
                        await acks.flush()
                        raise
                    finally:
                        acks.close()
                        self._acks = None
            except (aiomqtt.MqttError, ssl.SSLError, OSError) as err:
                if self.stats.state == "connected":
                    disconnected_at = time.monotonic()
                self.stats.state = "disconnected"
                self.stats.last_error = str(err)
                delay = backoff.next()
                # A broker that is away is routine; a TLS or socket setup error needs a fix.
                transient = isinstance(err, aiomqtt.MqttError)
                (self._log.warning if transient else self._log.error)(
                    "MQTT broker unreachable; reconnecting"
                    if transient
                    else "MQTT connection setup failed; retrying",
                    address=where,
                    error=_explain(err),
                    retry_in_s=round(delay, 1),
                )
                await asyncio.sleep(delay)

    def _on_message(self, message: paho.MQTTMessage) -> None:
        """paho's message callback, on the event loop: spool, then note the ack due."""
        try:
            topic = message.topic
        except UnicodeDecodeError:
            # Not valid MQTT (topics are UTF-8); nothing to route, nothing to keep.
            self.stats.messages += 1
            self.stats.unrouted += 1
        else:
            self._dispatch(topic, bytes(message.payload))
        acks = self._acks
        if message.qos and acks is not None:
            acks.received(message.mid, message.qos)

    def _dispatch(self, topic: str, payload: bytes) -> None:
        self.stats.messages += 1
        routes = self._cache.get(topic)
        if routes is None:
            routes = [r for r in self._routes if r.driver.topic_tags(topic) is not None]
            if len(self._cache) >= ROUTE_CACHE_SIZE:
                self._cache.clear()
            self._cache[topic] = routes
        if not routes:
            self.stats.unrouted += 1
            return
        for route in routes:
            entry = route.entry
            cap = route.driver.options.max_payload_bytes
            if len(payload) > cap:
                entry.reject(
                    RejectedInput(
                        f"payload of {len(payload)} bytes is over the "
                        f"{cap}-byte limit (max_payload_bytes)",
                        "too_large",
                    ),
                    topic=topic,
                )
                continue
            try:
                samples = list(route.driver.decode(topic, payload))
            except RejectedInput as err:
                entry.reject(err, topic=topic)
                continue
            except Exception as err:  # a driver bug must not take the connection down
                entry.reject(
                    RejectedInput(f"driver error: {type(err).__name__}: {err}", "driver_error"),
                    topic=topic,
                )
                continue
            if samples:
                entry.submit(samples, topic=topic)


class _Client(aiomqtt.Client):
    """aiomqtt's client with manual acknowledgements and messages handed over directly.

    aiomqtt 2.x puts every message on a queue and wakes a task per message, and paho
    acknowledges it as soon as it is queued. Here paho's callback calls ``deliver`` on
    the event loop and acknowledgements are ours (:meth:`ack`). It also remembers the
    CONNACK's session-present flag, which aiomqtt 2.x does not expose.
    """

    session_present = False

    def __init__(self, deliver: Any, /, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deliver = deliver
        self._client.manual_ack_set(True)
        self._sock_fd = -1

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge one received message (in the order received)."""
        self._client.ack(mid, qos)

    async def wait_closed(self) -> None:
        """Return when the connection ends; raise :class:`aiomqtt.MqttError` if it broke."""
        await asyncio.shield(self._disconnected)

    def pause_reading(self) -> None:
        """Read no more messages (stopping)."""
        if self._sock_fd >= 0:
            self._loop.remove_reader(self._sock_fd)

    def _on_connect(
        self,
        client: Any,
        userdata: Any,
        flags: Any,
        reason_code: Any,
        properties: Any = None,
    ) -> None:
        self.session_present = bool(getattr(flags, "session_present", False))
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        self._deliver(message)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        self._sock_fd = sock.fileno()
        super()._on_socket_open(client, userdata, sock)


def _explain(err: Exception) -> str:
    text = str(err)
    if "Not authorized" in text or "Bad user name or password" in text:
        return f"{text} — check brokers.*.username / password / password_file"
    return text
