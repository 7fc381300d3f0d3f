"""One MQTT connection per broker, shared by every device on that broker.

:meth:`MqttHub.run` connects (:class:`~gateway.mqtt.client.MqttConnection`), subscribes
every device's topics, and reconnects with backoff and jitter when the connection ends.
Messages are routed to the devices whose topic patterns match; a device's bad payload is
counted and reported for that device only.

Messages are decoded and spooled as the connection parses them, on the event loop (no
queue, no task per message). A QoS 1 message is acknowledged only once the spool commit
holding its readings is done (:class:`~gateway.mqtt.acks.AckWindow`): until then the
broker keeps it, so neither kill -9 nor a stop loses it; the broker's in-flight window
is the only buffer, and TCP flow control holds what we cannot take yet.

Devices and listeners (discovery) can be added and removed while the hub runs:
:meth:`MqttHub.add_device` / :meth:`MqttHub.remove_device` change the routes at once and
bring the live connection's subscriptions in line (SUBSCRIBE what is new, UNSUBSCRIBE
what no device uses any more) in one background task per connection. Discovered devices
use this; a configuration reload can use the same calls instead of restarting the
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gateway.backoff import Backoff
from gateway.config import BrokerSection
from gateway.delivery.spool import Spool
from gateway.driver import MqttDriver, TopicPattern
from gateway.errors import RejectedInput
from gateway.mqtt.acks import AckWindow
from gateway.mqtt.client import MqttConnection
from gateway.mqtt.clientid import installation_client_id
from gateway.mqtt.losswatch import DROPPED_TOPIC, LossWatch
from gateway.mqtt.wire import MqttError, reason_text
from gateway.pipeline.intake import DeviceInput

# Routing results are cached per topic; a gateway sees a bounded set of topics, but a
# misbehaving publisher could invent endless ones, so the cache is capped.
ROUTE_CACHE_SIZE = 10_000
# A connection the broker closes this soon after it began counts as short-lived; this
# many in a row are reported as a probable client-id takeover.
SHORT_LIVED_S = 5.0
SUSPECT_TAKEOVER_AFTER = 3
# The message rate, for the estimate of what queues at the broker while we are away,
# is measured over this long (and the time we were last connected noted).
RATE_WINDOW_S = 60.0
RATE_WINDOWS = 10
# How often devices with stale_after are checked.
STALE_CHECK_S = 1.0
# MQTT 5 session expiry meaning "never": the broker keeps our session and its queue like
# a 3.1.1 clean_session = false session.
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
# MQTT 5 session expiry of a throw-away session: it ends with the connection.
SESSION_ENDS_AT_DISCONNECT = 0


@dataclass(slots=True)
class _Route:
    driver: MqttDriver[Any]
    entry: DeviceInput


Listener = Callable[[str, bytes], None]
"""Receives ``(topic, payload)`` of every message matching its filter, on the loop."""


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
    takeovers: int = 0
    possible_loss: int = 0
    broker_dropped: int | None = None
    refused: dict[str, str] = field(default_factory=dict)


class MqttHub:
    """Owns one broker connection and routes its messages to devices.

    ``persistent=False`` gives a throw-away session (clean start, expiring at
    disconnect), for ``run --test``: the broker keeps nothing for it.
    """

    def __init__(
        self,
        name: str,
        config: BrokerSection,
        state_dir: Path | None = None,
        spool: Spool | None = None,
        persistent: bool = True,
    ) -> None:
        self.name = name
        self.config = config
        self.state_dir = state_dir
        self.persistent = persistent
        self.stats = BrokerStats()
        self._spool_given = spool
        self._routes: list[_Route] = []
        self._listeners: list[tuple[TopicPattern, Listener]] = []
        self._cache: dict[str, tuple[list[_Route], list[Listener]]] = {}
        # While connected: the connection, what it is subscribed to, the task that
        # brings its subscriptions in line with the routes.
        self._conn: MqttConnection | None = None
        self._subscribed: dict[str, int] = {}
        self._resync: asyncio.Task[None] | None = None
        self._log = structlog.get_logger("gateway.mqtt").bind(broker=name)
        self._acks: AckWindow | None = None
        self._loss = LossWatch(name, state_dir)
        self._default_id: str | None = None

    def add_device(self, driver: MqttDriver[Any], entry: DeviceInput) -> None:
        """Route matching messages to ``driver``; while connected, subscribe its topics."""
        self._routes.append(_Route(driver, entry))
        self._changed()

    def remove_device(self, name: str) -> DeviceInput | None:
        """Stop routing to the device ``name``; while connected, unsubscribe the filters
        no other device uses. Its messages already spooled stay spooled."""
        gone = [r for r in self._routes if r.entry.name == name]
        if not gone:
            return None
        self._routes = [r for r in self._routes if r.entry.name != name]
        self._changed()
        return gone[0].entry

    def add_listener(self, topic_filter: str, listener: Listener) -> None:
        """Hand every message matching ``topic_filter`` to ``listener`` (discovery)."""
        self._listeners.append((TopicPattern(topic_filter), listener))
        self._changed()

    def _filters(self) -> dict[str, int]:
        filters: dict[str, int] = {}
        for route in self._routes:
            for topic in route.driver.subscriptions():
                # QoS 2 would hand the message over (PUBREC) before it is spooled; QoS 1
                # acknowledged after the commit is the stronger promise, and redeliveries
                # are absorbed by fixed timestamps (docs/delivery.md).
                qos = min(route.driver.options.qos, 1)
                filters[topic] = max(filters.get(topic, 0), qos)
        for pattern, _ in self._listeners:
            filters[pattern.filter] = 1
        return filters

    def _changed(self) -> None:
        self._cache.clear()
        conn = self._conn
        if conn is not None and (self._resync is None or self._resync.done()):
            self._resync = asyncio.get_running_loop().create_task(
                self._sync_subscriptions(conn), name=f"mqtt-{self.name}-subscriptions"
            )

    async def _sync_subscriptions(self, conn: MqttConnection) -> None:
        """SUBSCRIBE / UNSUBSCRIBE on the live connection until it matches the routes
        (changes made meanwhile are picked up by the next round)."""
        try:
            while self._conn is conn:
                want = self._filters()
                new = {t: q for t, q in want.items() if self._subscribed.get(t) != q}
                unused = [t for t in self._subscribed if t not in want]
                if not new and not unused:
                    return
                if new:
                    granted = await conn.subscribe(list(new.items()))
                    self._subscribed.update(new)
                    self._check_subscriptions(new, granted, update=True)
                    self._log.info("subscribed at run time", filters=sorted(new))
                if unused:
                    await conn.unsubscribe(unused)
                    for topic in unused:
                        self._subscribed.pop(topic, None)
                    self._log.info("unsubscribed at run time", filters=sorted(unused))
                self.stats.subscriptions = sorted(self._subscribed)
                self._loss.remember_filters(sorted(self._subscribed))
        except MqttError as err:
            # The connection is ending; the next one subscribes to everything.
            self._log.debug("subscription change not sent", error=str(err))

    @property
    def devices(self) -> list[DeviceInput]:
        """The devices this hub routes messages to."""
        return [route.entry for route in self._routes]

    @property
    def window(self) -> int:
        """How many unacknowledged QoS 1 messages the broker sends us at most."""
        cfg = self.config
        return cfg.receive_maximum if cfg.protocol == "5" else cfg.inflight_window

    async def _open(self, conn: MqttConnection) -> None:
        cfg = self.config
        tls_context = None
        if cfg.tls or cfg.ca_file or cfg.cert_file:
            tls_context = ssl.create_default_context(cafile=cfg.ca_file)
            if cfg.cert_file:
                tls_context.load_cert_chain(cfg.cert_file, cfg.key_file)
        # A stable client id with a persistent session lets the broker keep QoS 1
        # messages for us while we are away (see docs/delivery.md).
        await conn.open(
            cfg.host,
            cfg.port,
            client_id=self._client_id(),
            keepalive=cfg.keepalive,
            username=cfg.username,
            password=cfg.resolved_password(),
            tls=tls_context,
            receive_maximum=cfg.receive_maximum,
            session_expiry=SESSION_NEVER_EXPIRES if self.persistent else SESSION_ENDS_AT_DISCONNECT,
            clean=not self.persistent,
        )

    def _client_id(self) -> str:
        if self.config.client_id:
            return self.config.client_id
        if self._default_id is None:  # read (or made) once: file I/O
            self._default_id = installation_client_id(self.state_dir)
        return self._default_id

    def _spool(self) -> Spool | None:
        if self._spool_given is not None:
            return self._spool_given
        return self._routes[0].entry.pipeline.spool if self._routes else None

    async def run(self) -> None:
        """Connect, subscribe, route messages; reconnect with backoff forever."""
        cfg = self.config
        backoff = Backoff(cfg.reconnect_initial, cfg.reconnect_max)
        self.stats.subscriptions = sorted(self._filters())
        where = f"{cfg.host}:{cfg.port}"
        stale = asyncio.create_task(self._watch())
        try:
            await self._run(backoff, where)
        finally:
            stale.cancel()

    async def _run(self, backoff: Backoff, where: str) -> None:
        cfg = self.config
        disconnected_at = time.monotonic()
        connected_at = 0.0
        short_lived = 0  # connections in a row the broker closed right after they began
        while True:
            try:
                conn = MqttConnection(self._on_message, v5=cfg.protocol == "5")
                # A resumed session's unacknowledged messages can come in the CONNACK's
                # own read: each must be tracked for its ack from the first byte, or its
                # in-flight slot stays taken and the broker stops sending.
                acks = self._acks = AckWindow(conn, self._spool(), self.window, self.stats)
                try:
                    await self._open(conn)
                    filters = self._filters()
                    self.stats.subscriptions = sorted(filters)
                    granted = await conn.subscribe(list(filters.items()))
                    self._check_subscriptions(filters, granted)
                    await self._unsubscribe_unused(conn, filters)
                    # From here on, devices added or removed change the subscriptions
                    # of this connection (and what came meanwhile is caught up now).
                    self._subscribed = dict(filters)
                    self._conn = conn
                    self._changed()
                    # Evidence of loss at the broker (mosquitto); other brokers may
                    # refuse or ignore it, which changes nothing else.
                    with contextlib.suppress(MqttError):
                        await conn.subscribe([(DROPPED_TOPIC, 0)])
                    self.stats.state = "connected"
                    self.stats.connects += 1
                    self._log.info(
                        "connected to MQTT broker",
                        address=where,
                        subscriptions=len(filters),
                        session_present=conn.session_present,
                        protocol=cfg.protocol,
                        window=self.window,
                    )
                    if self.stats.connects > 1 and not conn.session_present:
                        self.stats.sessions_lost += 1
                        self.stats.possible_loss += 1
                        self._log.warning(
                            "MQTT broker did not keep our session (restarted without "
                            "persistence?): QoS 1 messages published while we were "
                            "disconnected are lost",
                            address=where,
                            gap_s=round(time.monotonic() - disconnected_at, 1),
                        )
                    backoff.reset()
                    connected_at = time.monotonic()
                    self._check_time_away(conn.session_present)
                    await conn.wait_closed()
                    raise MqttError("the connection ended")
                except asyncio.CancelledError:
                    self._loss.note_alive()
                    # Stopping: take no more, commit what we read, acknowledge it, then
                    # disconnect cleanly (the acks go out first).
                    conn.pause_reading()
                    await acks.flush()
                    await conn.disconnect()
                    raise
                finally:
                    self._conn = None
                    if self._resync is not None:
                        self._resync.cancel()
                        self._resync = None
                    acks.close()
                    self._acks = None
                    conn.abort()
            except (MqttError, ssl.SSLError, OSError) as err:
                now = time.monotonic()
                if self.stats.state == "connected":
                    disconnected_at = now
                    self._loss.note_alive()
                    # mosquitto 2.0 closes a taken-over connection without saying why
                    # (MQTT 5 brokers may send reason 0x8E); two clients with one id
                    # then throw each other out again and again.
                    short_lived = short_lived + 1 if now - connected_at < SHORT_LIVED_S else 0
                self.stats.state = "disconnected"
                delay = backoff.next()
                taken_over = "session taken over" in str(err)
                if not taken_over and short_lived >= SUSPECT_TAKEOVER_AFTER:
                    short_lived = 0
                    taken_over = True
                    err = MqttError(
                        f"{err}; the broker closed our connection {SUSPECT_TAKEOVER_AFTER} times "
                        "right after it began: another client probably uses our client id "
                        "(brokers.*.client_id must be unique per gateway)"
                    )
                if taken_over:
                    self.stats.takeovers += 1
                self.stats.last_error = str(err)
                # A broker that is away is routine; a TLS or socket setup error, or
                # another client taking our session over, needs a fix.
                transient = isinstance(err, MqttError) and not taken_over
                if taken_over:
                    event = "MQTT session taken over by another client with our client id"
                elif transient:
                    event = "MQTT broker unreachable; reconnecting"
                else:
                    event = "MQTT connection setup failed; retrying"
                (self._log.warning if transient else self._log.error)(
                    event,
                    address=where,
                    error=_explain(err),
                    retry_in_s=round(delay, 1),
                )
                await asyncio.sleep(delay)

    def _on_message(self, topic: str | None, payload: bytes, qos: int, mid: int) -> None:
        """Each PUBLISH, on the event loop: spool it, then note the acknowledgement due."""
        if topic == DROPPED_TOPIC:
            self._broker_dropped(payload)
            return
        if topic is None:
            # Not valid MQTT (topics are UTF-8); nothing to route, nothing to keep.
            self.stats.messages += 1
            self.stats.unrouted += 1
        else:
            self._dispatch(topic, payload)
        if qos:
            acks = self._acks
            if acks is not None:
                acks.received(mid, qos)

    async def _unsubscribe_unused(self, conn: MqttConnection, filters: dict[str, int]) -> None:
        """Drop filters an earlier configuration subscribed: the session still has them."""
        unused = [f for f in self._loss.filters if f not in filters]
        if unused and conn.session_present:
            await conn.unsubscribe(unused)
            self._log.info("unsubscribed topic filters no device uses any more", filters=unused)
        self._loss.remember_filters(sorted(filters))

    def _check_time_away(self, session_present: bool) -> None:
        """Away longer than the broker's queue could hold at our usual rate: say so."""
        limit = self.config.broker_queue_limit
        estimate = self._loss.away_estimate()
        if not session_present or not limit or estimate is None:
            return
        gap, queued = estimate
        if queued > limit:
            self.stats.possible_loss += 1
            self._log.warning(
                "away longer than the MQTT broker's queue could hold (possible loss)",
                away_s=round(gap, 1),
                rate_per_s=round(self._loss.rate or 0.0, 1),
                estimated_queued=round(queued),
                broker_queue_limit=limit,
                evidence="time away x message rate before",
                hint="if the broker's max_queued_messages is larger, set "
                "brokers.*.broker_queue_limit to it (0: no limit)",
            )

    def _broker_dropped(self, payload: bytes) -> None:
        new = self._loss.dropped(payload)
        self.stats.broker_dropped = self._loss.last_seen
        if new:
            self.stats.possible_loss += 1
            self._log.warning(
                "MQTT broker dropped messages: some may have been ours (possible loss)",
                dropped=new,
                broker_dropped_total=self._loss.last_seen,
                evidence=DROPPED_TOPIC,
                hint="the broker's queue for a client was full: raise max_queued_messages "
                "(and max_queued_bytes) on the broker, see docs/delivery.md",
            )

    def _check_subscriptions(
        self, filters: dict[str, int], granted: list[int], update: bool = False
    ) -> None:
        """A refused filter makes its devices ``refused``, with the broker's reason
        (``update``: only ``filters`` were subscribed now; the others stay as they were)."""
        refused = {
            topic: reason_text(code, self.config.protocol == "5")
            for (topic, _), code in zip(filters.items(), granted, strict=True)
            if code >= 0x80
        }
        if update:
            refused = {
                **{t: r for t, r in self.stats.refused.items() if t not in filters},
                **refused,
            }
        self.stats.refused = refused
        for route in self._routes:
            stats = route.entry.stats
            mine = {t: r for t, r in refused.items() if t in route.driver.subscriptions()}
            if mine:
                stats.state = "refused"
                stats.last_error = "; ".join(
                    f"the broker refused the subscription {t!r}: {r}" for t, r in mine.items()
                )
                for topic, reason in mine.items():
                    route.entry.log.error(
                        "MQTT broker refused a subscription",
                        broker=self.name,
                        topic=topic,
                        reason=reason,
                        hint="check the broker's ACL for this user and topic",
                    )
            elif stats.state == "refused":
                stats.state = "running"
                stats.last_error = ""

    async def _watch(self) -> None:
        """Flag devices with ``stale_after`` that sent nothing for that long; note the
        message rate now and then (for the estimate of what queues while we are away)."""
        started = time.monotonic()
        rate_since, rate_count = started, self.stats.messages
        # The median of recent windows: one window draining a backlog is not the rate
        # at which messages are published for us.
        rates: deque[float] = deque(maxlen=RATE_WINDOWS)
        while True:
            await asyncio.sleep(STALE_CHECK_S)
            now = time.monotonic()
            if now - rate_since >= RATE_WINDOW_S:
                if self.stats.state == "connected":
                    rates.append((self.stats.messages - rate_count) / (now - rate_since))
                    self._loss.note_alive(statistics.median(rates))
                rate_since, rate_count = now, self.stats.messages
            for route in self._routes:
                limit = route.driver.options.stale_after
                stats = route.entry.stats
                if limit is None or stats.stale:
                    continue
                silent = now - (stats.last_reading_at or started)
                if silent >= limit:
                    stats.stale = True
                    route.entry.log.warning(
                        "device silent: no reading for longer than stale_after",
                        broker=self.name,
                        silent_s=round(silent, 1),
                        stale_after_s=limit,
                    )

    def _dispatch(self, topic: str, payload: bytes) -> None:
        self.stats.messages += 1
        cached = self._cache.get(topic)
        if cached is None:
            cached = (
                [r for r in self._routes if r.driver.topic_tags(topic) is not None],
                [listener for p, listener in self._listeners if p.match(topic) is not None],
            )
            if len(self._cache) >= ROUTE_CACHE_SIZE:
                self._cache.clear()
            self._cache[topic] = cached
        routes, listeners = cached
        for listener in listeners:
            try:
                listener(topic, payload)
            except Exception:  # a listener bug must not take the connection down
                self._log.exception("message listener failed", topic=topic)
        if not routes:
            if not listeners:
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


def _explain(err: Exception) -> str:
    text = str(err)
    if "Not authorized" in text or "Bad user name or password" in text:
        return f"{text} — check brokers.*.username / password / password_file"
    return text
