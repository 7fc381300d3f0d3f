"""The running gateway: one TaskGroup with a supervised task per device, per broker and
per sink, the spool's group commit, and housekeeping (status file, self-metrics).

Shutdown order (SIGTERM/SIGINT): stop the readers, commit what they produced, give the
sinks ``shutdown_grace`` seconds to deliver, leave the rest in the spool, exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from gateway import __version__
from gateway.config import Config
from gateway.delivery.loop import DeliveryLoop
from gateway.delivery.spool import Spool
from gateway.driver import MqttDriver, SerialDriver
from gateway.mqtt.hub import MqttHub
from gateway.pipeline.fieldtypes import FieldTypes
from gateway.pipeline.intake import DeviceInput, Pipeline
from gateway.pipeline.lineprotocol import encode
from gateway.pipeline.reading import Reading
from gateway.pipeline.timesource import TimeSource
from gateway.serial.runner import run_serial_device
from gateway.serial.supervise import supervise_device
from gateway.sinks.base import Sink

log = structlog.get_logger("gateway")

STATUS_INTERVAL_S = 2.0
CLOCK_CHECK_INTERVAL_S = 30.0
SELF_MEASUREMENT = "sensor_gateway"


def build_sinks(config: Config, time_source: TimeSource | None = None) -> list[Sink]:
    """The sinks the configuration turns on."""
    sinks: list[Sink] = []
    if config.influx is not None:
        from gateway.sinks.influxdb import InfluxSink

        sinks.append(InfluxSink(config.influx))
    if config.local_enabled:
        from gateway.sinks.local import LocalSink

        sinks.append(LocalSink.from_config(config, time_source))
    return sinks


def _metric_key(text: str) -> str:
    """A field-name-safe form of a failure reason (``"HTTP 503"`` → ``"http_503"``)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "other"


def _serial_runner(driver: SerialDriver[Any], entry: DeviceInput) -> Callable[[], Awaitable[None]]:
    def run() -> Awaitable[None]:
        return run_serial_device(driver, entry)

    return run


class Gateway:
    """Everything that runs, built from a validated :class:`~gateway.config.Config`."""

    def __init__(self, config: Config, *, time_source: TimeSource | None = None) -> None:
        self.config = config
        self.time = time_source or TimeSource(check_sync=config.gateway.clock_sync_check)
        spool_cfg = config.spool
        self.sinks = build_sinks(config, self.time)
        self.spool = Spool(
            config.spool_path,
            [s.name for s in self.sinks],
            commit_interval=spool_cfg.commit_interval,
            max_bytes=spool_cfg.max_bytes,
            max_age=spool_cfg.max_age,
            synchronous=spool_cfg.synchronous,
            time_source=self.time,
        )
        self.pipeline = Pipeline(
            self.spool,
            time_step_ns=max(1, round(config.gateway.time_resolution * 1e9)),
            time_source=self.time,
        )
        self.loops = [DeliveryLoop(sink, self.spool) for sink in self.sinks]
        self.hubs: dict[str, MqttHub] = {}
        self._serial: list[tuple[SerialDriver[Any], DeviceInput]] = []
        self._stop = asyncio.Event()
        self._started = time.time()
        self._host = socket.gethostname()
        self._growth: list[tuple[float, int]] = []
        for name, spec in config.devices.items():
            if not spec.section.enabled:
                continue
            driver = spec.build_driver()
            entry = self.pipeline.device(name, spec.section)
            if isinstance(driver, SerialDriver):
                self._serial.append((driver, entry))
            elif isinstance(driver, MqttDriver):
                broker = driver.options.broker
                if broker not in self.hubs:
                    self.hubs[broker] = MqttHub(broker, config.brokers[broker])
                self.hubs[broker].add_device(driver, entry)

    def stop(self) -> None:
        """Ask the gateway to shut down (safe to call from a signal handler)."""
        self._stop.set()

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Run until :meth:`stop`; then shut down gracefully."""
        await self.spool.open()
        self.pipeline.field_types = FieldTypes(await self.spool.load_field_types())
        self.time.refresh_sync()
        for sink in self.sinks:
            await sink.start()
        log.info(
            "gateway started",
            version=__version__,
            devices=len(self.pipeline.devices),
            sinks=[s.name for s in self.sinks],
            spool=str(self.spool.path),
        )
        try:
            async with asyncio.TaskGroup() as tg:
                readers = tg.create_task(self._run_readers(), name="readers")
                commits = tg.create_task(self.spool.run_commits(), name="spool-commits")
                sinks = [
                    tg.create_task(loop.run(), name=f"sink-{loop.sink.name}") for loop in self.loops
                ]
                house = tg.create_task(self._housekeeping(), name="housekeeping")
                if ready is not None:
                    ready()
                await self._stop.wait()
                log.info(
                    "stopping: readers first, then delivering within the grace time",
                    grace_s=self.config.gateway.shutdown_grace,
                )
                readers.cancel()
                await asyncio.wait([readers])
                commits.cancel()
                await self.spool.commit()
                await self._drain(self.config.gateway.shutdown_grace)
                for task in [*sinks, house]:
                    task.cancel()
        finally:
            await self._close()

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await self.spool.save_field_types(self.pipeline.field_types.take_new())
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()
        left = {
            s.name: self.spool.behind(s.name) for s in self.sinks if s.name in self.spool._sinks
        }
        await self.spool.close()
        with contextlib.suppress(Exception):
            self._write_status(running=False)
        log.info("gateway stopped", left_in_spool=left)

    async def _drain(self, grace: float) -> None:
        """Wait (bounded) until every sink has delivered everything spooled."""
        try:
            async with asyncio.timeout(grace):
                # Polling is simplest here: the condition spans several sinks' counters.
                while any(self.spool.behind(s.name) for s in self.sinks):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.warning(
                "grace time over; the rest stays in the spool for the next start",
                left={s.name: self.spool.behind(s.name) for s in self.sinks},
            )

    async def _run_readers(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for driver, entry in self._serial:
                tg.create_task(
                    supervise_device(
                        entry,
                        _serial_runner(driver, entry),
                        self.config.gateway.restart_backoff_initial,
                        self.config.gateway.restart_backoff_max,
                    ),
                    name=f"device-{entry.name}",
                )
            for hub in self.hubs.values():
                tg.create_task(hub.run(), name=f"mqtt-{hub.name}")
                for route in hub._routes:
                    route.entry.stats.state = "running"

    # --- housekeeping ---------------------------------------------------------------

    async def _housekeeping(self) -> None:
        last_metrics = time.monotonic()
        last_clock = time.monotonic()
        while True:
            await asyncio.sleep(STATUS_INTERVAL_S)
            now = time.monotonic()
            await self.spool.save_field_types(self.pipeline.field_types.take_new())
            if now - last_clock >= CLOCK_CHECK_INTERVAL_S:
                last_clock = now
                self.time.refresh_sync()
            self._growth.append((now, self.spool.size_bytes))
            self._growth = [(t, b) for t, b in self._growth if now - t <= 60.0]
            oldest = await self.spool.oldest_age()
            await asyncio.to_thread(self._write_status, True, oldest)
            if now - last_metrics >= self.config.gateway.metrics_interval:
                last_metrics = now
                self._emit_self_metrics(oldest)

    def time_to_loss(self) -> float | None:
        """Seconds until the spool cap is reached at the current net growth (None: not filling)."""
        if len(self._growth) < 2:
            return None
        (t0, b0), (t1, b1) = self._growth[0], self._growth[-1]
        rate = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        if rate <= 0:
            return None
        return max(0.0, (self.spool.max_bytes - self.spool.size_bytes) / rate)

    def status(self, running: bool = True, oldest_age: float | None = None) -> dict[str, Any]:
        """A snapshot of every counter, as written to ``status.json``."""
        spool = self.spool
        return {
            "version": __version__,
            "pid": os.getpid(),
            "running": running,
            "started_at": self._started,
            "updated_at": time.time(),
            "clock_unsynced": self.time.unsynced,
            "devices": {
                name: {
                    "state": "stale" if e.stats.stale else e.stats.state,
                    "frames": e.stats.frames,
                    "readings": e.stats.readings,
                    "rejected": e.stats.rejected,
                    "dropped_fields": e.stats.dropped_fields,
                    "restarts": e.stats.restarts,
                    "last_error": e.stats.last_error,
                    "last_reading_age_s": (
                        round(time.monotonic() - e.stats.last_reading_at, 1)
                        if e.stats.last_reading_at
                        else None
                    ),
                }
                for name, e in self.pipeline.devices.items()
            },
            "brokers": {
                name: {
                    "state": h.stats.state,
                    "connects": h.stats.connects,
                    "messages": h.stats.messages,
                    "unrouted": h.stats.unrouted,
                    "sessions_lost": h.stats.sessions_lost,
                    "last_error": h.stats.last_error,
                }
                for name, h in self.hubs.items()
            },
            "sinks": {
                loop.sink.name: {
                    "state": loop.stats.state,
                    "behind": spool.behind(loop.sink.name),
                    "points_written": loop.stats.points_written,
                    "batches_ok": loop.stats.batches_ok,
                    "batches_failed": loop.stats.batches_failed,
                    "dead_lettered": loop.stats.dead_lettered,
                    "last_error": loop.stats.last_error,
                    "write_latency_s": round(loop.stats.last_latency_s, 4),
                }
                for loop in self.loops
            },
            "spool": {
                "path": str(spool.path),
                "bytes": spool.size_bytes,
                "max_bytes": spool.max_bytes,
                "pending": spool.pending,
                "committed": spool.stats.committed,
                "dropped": spool.stats.dropped,
                "write_errors": spool.stats.write_errors,
                "damaged_chunks_lost": spool.stats.recovered_lost_chunks,
                "oldest_age_s": None if oldest_age is None else round(oldest_age, 1),
                "time_to_loss_s": self.time_to_loss(),
            },
        }

    def _write_status(self, running: bool = True, oldest_age: float | None = None) -> None:
        path = self.config.state_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(self.status(running, oldest_age), indent=1))
        os.replace(tmp, path)

    def _emit_self_metrics(self, oldest_age: float | None) -> None:
        """Write our own counters as measurement ``sensor_gateway`` (like Telegraf's internal)."""
        now = time.time_ns()
        host = {"host": self._host}
        readings: list[Reading] = []
        for name, e in self.pipeline.devices.items():
            s = e.stats
            readings.append(
                Reading(
                    SELF_MEASUREMENT,
                    {**host, "kind": "device", "name": name},
                    {
                        "frames": s.frames,
                        "readings": s.readings,
                        "rejected": sum(s.rejected.values()),
                        "dropped_fields": sum(s.dropped_fields.values()),
                        "restarts": s.restarts,
                    },
                    now,
                )
            )
        for loop in self.loops:
            st = loop.stats
            readings.append(
                Reading(
                    SELF_MEASUREMENT,
                    {**host, "kind": "sink", "name": loop.sink.name},
                    {
                        "points_written": st.points_written,
                        "batches_ok": st.batches_ok,
                        "batches_failed": sum(st.batches_failed.values()),
                        "dead_lettered": st.dead_lettered,
                        "behind": self.spool.behind(loop.sink.name),
                        "write_latency_s": float(st.last_latency_s),
                        **{
                            f"batches_failed_{_metric_key(reason)}": count
                            for reason, count in st.batches_failed.items()
                        },
                    },
                    now,
                )
            )
        fields: dict[str, float | int] = {
            "bytes": self.spool.size_bytes,
            "committed": self.spool.stats.committed,
            "dropped": sum(self.spool.stats.dropped.values()),
            "pending": self.spool.pending,
        }
        if oldest_age is not None:
            fields["oldest_age_s"] = float(oldest_age)
        ttl = self.time_to_loss()
        if ttl is not None:
            fields["time_to_loss_s"] = float(ttl)
        readings.append(
            Reading(SELF_MEASUREMENT, {**host, "kind": "spool", "name": "spool"}, fields, now)
        )
        for reading in readings:
            self.spool.add(encode(reading))
