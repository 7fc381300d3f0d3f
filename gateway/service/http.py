"""The optional HTTP endpoint (``gateway.http_listen``, off by default): ``/healthz`` and
``/metrics``.

Both are views of the same counters as ``status.json`` and the self-metrics
(:func:`gateway.telemetry.report.status_document`), read on the event loop at request
time. ``/healthz`` answers 200 while the loop runs and no sink has been failing longer
than ``gateway.health_sink_failing``, else 503 with the reasons. ``/metrics`` is the
Prometheus text format, rendered by prometheus-client (the ``metrics`` extra) when it is
installed; without it ``/metrics`` answers 501 saying so.

The server is deliberately tiny (asyncio streams, one request per connection, bounded
reads): two GETs do not justify a web framework on a Pi.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import structlog

from gateway.service.connections import Connections
from gateway.telemetry.report import status_document

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("gateway.http")

FAILING_STATES = ("retrying", "blocked")
# A request line plus headers; anything longer is not one of ours.
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT_S = 5.0
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9273"`` / ``"[::1]:9273"`` / ``"9273"`` (localhost) → (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        host, port_text = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f'expected "host:port", got "{value}"') from None
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1..65535, got {port}")
    return host, port


class SinkFailures:
    """Since when each sink has been failing (retrying or blocked), sampled every second."""

    def __init__(self) -> None:
        self._since: dict[str, float] = {}

    def sample(self, gw: Gateway, now: float) -> None:
        for loop in gw.loops:
            name = loop.sink.name
            if loop.stats.state in FAILING_STATES:
                self._since.setdefault(name, now)
            else:
                self._since.pop(name, None)

    def problems(self, gw: Gateway, now: float, threshold: float) -> list[str]:
        found = []
        for loop in gw.loops:
            since = self._since.get(loop.sink.name)
            if since is not None and now - since >= threshold:
                found.append(
                    f"sink {loop.sink.name} {loop.stats.state} for {now - since:.0f} s: "
                    f"{loop.stats.last_error or 'no error text'}"
                )
        return found


class HttpEndpoint:
    """Serves ``/healthz`` and ``/metrics`` for one gateway."""

    def __init__(self, gw: Gateway, host: str, port: int, threshold: float) -> None:
        self.gw = gw
        self.host = host
        self.port = port
        self.threshold = threshold
        self.failures = SinkFailures()
        self._connections = Connections()

    async def run(self) -> None:
        """Serve until cancelled (a supervisor service)."""
        server = await asyncio.start_server(self._serve, self.host, self.port)
        log.info("http endpoint listening", address=f"{self.host}:{self.port}")
        try:
            async with server:
                await server.serve_forever()
        finally:
            await self._connections.end_all(REQUEST_TIMEOUT_S)

    async def sample(self) -> None:
        """The periodic job that keeps :class:`SinkFailures` current."""
        self.failures.sample(self.gw, time.monotonic())

    def health(self) -> tuple[int, str]:
        problems = self.failures.problems(self.gw, time.monotonic(), self.threshold)
        if self.gw.fatal_reason is not None:
            problems.insert(0, f"spool unusable: {self.gw.fatal_reason}")
        if problems:
            return 503, "\n".join(problems) + "\n"
        return 200, "ok\n"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._connections.serving(writer):
            await self._handle(reader, writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            writer.close()
            return
        if len(head) > MAX_REQUEST_BYTES:
            await _respond(writer, 431, "text/plain", "request too large\n")
            return
        parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        method, path = (parts[0], parts[1].split("?", 1)[0]) if len(parts) >= 2 else ("", "")
        if method not in ("GET", "HEAD"):
            await _respond(writer, 405, "text/plain", "only GET\n")
        elif path == "/healthz":
            code, body = self.health()
            await _respond(writer, code, "text/plain; charset=utf-8", body, method == "HEAD")
        elif path == "/metrics":
            code, ctype, body = render_metrics(self.gw)
            await _respond(writer, code, ctype, body, method == "HEAD")
        else:
            await _respond(writer, 404, "text/plain", "not found: try /healthz or /metrics\n")


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 431: "Request Header Fields Too Large", 501: "Not Implemented", 503: "Service Unavailable"}  # fmt: skip


async def _respond(
    writer: asyncio.StreamWriter, code: int, ctype: str, body: str, head_only: bool = False
) -> None:
    data = body.encode()
    header = (
        f"HTTP/1.1 {code} {_REASONS.get(code, '')}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(OSError):
        writer.write(header if head_only else header + data)
        await writer.drain()
    writer.close()


def render_metrics(gw: Gateway) -> tuple[int, str, str]:
    """(status code, content type, body): the status document as Prometheus metrics."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
    except ImportError:
        return 501, "text/plain", "install the metrics extra: pip install 'sensor-gateway[metrics]'\n"  # fmt: skip
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StatusCollector(status_document(gw)))
    return 200, PROMETHEUS_CONTENT_TYPE, generate_latest(registry).decode()


class _StatusCollector:
    """Turns one status document into metric families (collected once per scrape)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        doc = self.doc
        p = "sensor_gateway_"

        def counter(name: str, help_: str, label: str, rows: dict[str, Any], key: str) -> Any:
            m = CounterMetricFamily(p + name, help_, labels=[label])
            for item, row in rows.items():
                m.add_metric([item], float(row[key]))
            return m

        devices = doc["devices"]
        yield counter("device_frames", "Frames or messages read.", "device", devices, "frames")
        yield counter("device_readings", "Readings accepted into the spool.", "device", devices, "readings")  # fmt: skip
        yield counter("device_restarts", "Times the device was reopened.", "device", devices, "restarts")  # fmt: skip
        rejected = CounterMetricFamily(p + "device_rejected", "Input rejected, by reason.", labels=["device", "reason"])  # fmt: skip
        for name, row in devices.items():
            for reason, n in row["rejected"].items():
                rejected.add_metric([name, reason], float(n))
        yield rejected
        up = GaugeMetricFamily(p + "device_up", "1 while the device is connected (an MQTT device: its broker too) and not stale.", labels=["device"])  # fmt: skip
        for name, row in devices.items():
            up.add_metric([name], 1.0 if row["condition"] == "connected" else 0.0)
        yield up
        sinks = doc["sinks"]
        yield counter("sink_points_written", "Points the sink confirmed.", "sink", sinks, "points_written")  # fmt: skip
        yield counter("sink_dead_lettered", "Points the server refused for good.", "sink", sinks, "dead_lettered")  # fmt: skip
        behind = GaugeMetricFamily(p + "sink_behind", "Committed lines the sink has not confirmed.", labels=["sink"])  # fmt: skip
        for name, row in sinks.items():
            behind.add_metric([name], float(row["behind"]))
        yield behind
        failed = CounterMetricFamily(p + "sink_batches_failed", "Failed batches, by reason.", labels=["sink", "reason"])  # fmt: skip
        for name, row in sinks.items():
            for reason, n in row["batches_failed"].items():
                failed.add_metric([name, reason], float(n))
        yield failed
        spool = doc["spool"]
        yield GaugeMetricFamily(
            p + "spool_bytes", "Size of the spool.", value=float(spool["bytes"])
        )
        yield GaugeMetricFamily(p + "spool_pending", "Readings waiting for the next commit.", value=float(spool["pending"]))  # fmt: skip
        yield CounterMetricFamily(p + "spool_committed", "Readings committed to the spool.", value=float(spool["committed"]))  # fmt: skip
        dropped = CounterMetricFamily(p + "spool_dropped", "Readings dropped by the spool, by reason.", labels=["reason"])  # fmt: skip
        for reason, n in spool["dropped"].items():
            dropped.add_metric([reason], float(n))
        yield dropped
        brokers = doc["brokers"]
        yield counter("broker_messages", "MQTT messages received.", "broker", brokers, "messages")
        yield counter("broker_connects", "MQTT connections made.", "broker", brokers, "connects")
        yield CounterMetricFamily(p + "reloads", "Configuration reloads applied.", value=float(doc["reloads"]["done"]))  # fmt: skip
        yield CounterMetricFamily(p + "reloads_rejected", "Configuration reloads rejected.", value=float(doc["reloads"]["rejected"]))  # fmt: skip
