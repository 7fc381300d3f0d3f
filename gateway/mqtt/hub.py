"""One MQTT connection per broker, shared by every device on that broker.

aiomqtt 2.x does not reconnect by itself: :meth:`MqttHub.run` loops around the client
context, backs off with jitter on :class:`aiomqtt.MqttError`, and resubscribes every
device's topics on each connection. Messages are routed to the devices whose topic
patterns match; a device's bad payload is counted and reported for that device only.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import structlog

from gateway.backoff import Backoff
from gateway.config import BrokerSection, default_client_id
from gateway.driver import MqttDriver
from gateway.errors import RejectedInput
from gateway.pipeline.intake import DeviceInput

# Routing results are cached per topic; a gateway sees a bounded set of topics, but a
# misbehaving publisher could invent endless ones, so the cache is capped.
ROUTE_CACHE_SIZE = 10_000


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


class MqttHub:
    """Owns one broker connection and routes its messages to devices."""

    def __init__(self, name: str, config: BrokerSection) -> None:
        self.name = name
        self.config = config
        self.stats = BrokerStats()
        self._routes: list[_Route] = []
        self._cache: dict[str, list[_Route]] = {}
        self._log = structlog.get_logger("gateway.mqtt").bind(broker=name)

    def add_device(self, driver: MqttDriver[Any], entry: DeviceInput) -> None:
        """Route matching messages to ``driver`` (before :meth:`run`)."""
        self._routes.append(_Route(driver, entry))
        self._cache.clear()

    @property
    def devices(self) -> list[DeviceInput]:
        """The devices this hub routes messages to."""
        return [route.entry for route in self._routes]

    def _client(self) -> _Client:
        cfg = self.config
        tls_context = None
        if cfg.tls or cfg.ca_file or cfg.cert_file:
            tls_context = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.cert_file:
                tls_context.load_cert_chain(cfg.cert_file, cfg.key_file)
        return _Client(
            hostname=cfg.host,
            port=cfg.port,
            username=cfg.username,
            password=cfg.resolved_password(),
            identifier=cfg.client_id or default_client_id(),
            keepalive=cfg.keepalive,
            # A stable client id with a persistent session lets the broker keep QoS 1
            # messages for us while we are away (see docs/delivery.md).
            clean_session=False,
            tls_context=tls_context,
        )

    async def run(self) -> None:
        """Connect, subscribe, route messages; reconnect with backoff forever."""
        cfg = self.config
        backoff = Backoff(cfg.reconnect_initial, cfg.reconnect_max)
        filters: dict[str, int] = {}
        for route in self._routes:
            for topic in route.driver.subscriptions():
                filters[topic] = max(filters.get(topic, 0), route.driver.options.qos)
        self.stats.subscriptions = sorted(filters)
        where = f"{cfg.host}:{cfg.port}"
        disconnected_at = time.monotonic()
        while True:
            try:
                client = self._client()
                async with client:
                    for topic, qos in filters.items():
                        await client.subscribe(topic, qos=qos)
                    self.stats.state = "connected"
                    self.stats.connects += 1
                    self._log.info(
                        "connected to MQTT broker",
                        address=where,
                        subscriptions=len(filters),
                        session_present=client.session_present,
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
                    async for message in client.messages:
                        self._dispatch(message)
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

    def _dispatch(self, message: aiomqtt.Message) -> None:
        self.stats.messages += 1
        topic = message.topic.value
        routes = self._cache.get(topic)
        if routes is None:
            routes = [r for r in self._routes if r.driver.topic_tags(topic) is not None]
            if len(self._cache) >= ROUTE_CACHE_SIZE:
                self._cache.clear()
            self._cache[topic] = routes
        if not routes:
            self.stats.unrouted += 1
            return
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode() if payload is not None else b""
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
                samples = list(route.driver.decode(topic, bytes(payload)))
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
    """aiomqtt's client, remembering the CONNACK's session-present flag.

    aiomqtt 2.x does not expose it; without it a broker that lost our session (restarted
    without persistence) would silently lose the messages queued for us.
    """

    session_present = False

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


def _explain(err: Exception) -> str:
    text = str(err)
    if "Not authorized" in text or "Bad user name or password" in text:
        return f"{text} — check brokers.*.username / password / password_file"
    return text
