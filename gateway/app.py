"""The running gateway: wires config into spool, sinks, hubs and devices, and runs them.

Every long-lived part is a service of the :class:`~gateway.supervisor.Supervisor`: one per
serial device, per MQTT broker, per sink, the spool's group commit, the status socket;
housekeeping is a few periodic jobs (status file, field-type pins, clock check,
self-metrics). A failing part is logged, counted and retried; it never stops the others.
Only a spool that cannot take readings at all stops the gateway, through the same
graceful path as SIGTERM.

Shutdown (SIGTERM/SIGINT): stop the readers (bounded), commit what they produced, give
the sinks ``shutdown_grace`` seconds to deliver, leave the rest in the spool, exit. A
second signal skips the wait for the sinks: what was read is already on disk.

SIGHUP reloads the configuration (:mod:`gateway.service.reload`): only the devices,
broker connections and sinks whose settings changed are restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway import __version__
from gateway.config import DEFAULT_STATE_DIR, BrokerSection, Config, DeviceSpec
from gateway.delivery.loop import DeliveryLoop
from gateway.delivery.spool import Spool
from gateway.discovery.store import DiscoveredStore
from gateway.driver import MqttDriver, SerialDriver
from gateway.mqtt.hub import MqttHub
from gateway.pipeline.fieldtypes import FieldTypes
from gateway.pipeline.intake import DeviceInput, Pipeline
from gateway.pipeline.lineprotocol import encode
from gateway.pipeline.normalize import NormalizeConfig
from gateway.pipeline.timesource import TimeSource
from gateway.pipeline.unitcatalog import UnitCatalog
from gateway.serial.runner import run_serial_device
from gateway.serial.supervise import supervise_device
from gateway.service.http import HttpEndpoint, parse_listen
from gateway.service.lock import StateDirLock
from gateway.service.notify import Notifier
from gateway.service.reload import ReloadStats, broker_of, reload_gateway
from gateway.service.rundir import socket_path, status_path
from gateway.service.statedir import user_state_dir
from gateway.service.statefile import save_snapshot, write_atomic
from gateway.service.statusd import StatusServer
from gateway.sinks.base import Sink
from gateway.supervisor import Supervisor
from gateway.telemetry.report import (
    DeviceRates,
    LastReadings,
    LossEstimate,
    OldestAge,
    ReadingRate,
    live_document,
    self_metric_readings,
    status_document,
    status_line,
)

if TYPE_CHECKING:
    from gateway.discovery.registry import Discovery

log = structlog.get_logger("gateway")

STATUS_SOCKET_WAIT_S = 2.0

STATUS_INTERVAL_S = 2.0
FIELD_TYPES_INTERVAL_S = 2.0
CLOCK_CHECK_INTERVAL_S = 30.0
# A broker connection restarted by a reload waits this long before reconnecting.
BROKER_HANDOVER_S = 0.5
# How often sink failures are sampled for /healthz's threshold.
HEALTH_SAMPLE_INTERVAL_S = 1.0
# Readers (serial ports, MQTT disconnects) get this long to stop; a broker that does not
# answer our DISCONNECT must not hold up the shutdown.
READERS_STOP_TIMEOUT_S = 5.0
# Sinks and jobs get this long after the grace time to finish their cleanup.
SERVICES_STOP_TIMEOUT_S = 5.0


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


def _serial_runner(driver: SerialDriver[Any], entry: DeviceInput) -> Callable[[], Awaitable[None]]:
    def run() -> Awaitable[None]:
        return run_serial_device(driver, entry)

    return run


class Gateway:
    """Everything that runs, built from a validated :class:`~gateway.config.Config`."""

    def __init__(
        self,
        config: Config,
        *,
        time_source: TimeSource | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.notify = notifier or Notifier()
        """systemd's notification socket (does nothing when not run by systemd)."""
        self._rate = ReadingRate()
        self.time = time_source or TimeSource(check_sync=config.gateway.clock_sync_check)
        spool_cfg = config.spool
        self.sinks = build_sinks(config, self.time)
        self.spool = Spool(
            config.spool_path,
            [s.name for s in self.sinks],
            inactive_sinks=config.disabled_sinks,
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
            units=UnitCatalog(config.state_dir),
        )
        self.loops = [DeliveryLoop(sink, self.spool) for sink in self.sinks]
        self.hubs: dict[str, MqttHub] = {}
        self.supervisor = Supervisor(on_fatal=self._fatal)
        self.loss = LossEstimate()
        self.rates = DeviceRates()
        self.oldest = OldestAge()
        self.last_readings = LastReadings()
        self.pipeline.taps.append(self.last_readings.note)
        self.started_at = time.time()
        self.host = socket.gethostname()
        self.status_path = status_path(config.state_dir)
        self.status_server = StatusServer(
            socket_path(config.state_dir), lambda: live_document(self), config.gateway.status_group
        )
        """``sensor-gateway status`` asks this (see :mod:`gateway.service.statusd`)."""
        self.fatal_reason: str | None = None
        """Why the gateway stopped by itself (the spool became unusable), else None."""
        self.reloads = ReloadStats()
        self.http: HttpEndpoint | None = None
        """The /healthz and /metrics endpoint when ``gateway.http_listen`` is set."""
        self._serial: dict[str, tuple[SerialDriver[Any], DeviceInput]] = {}
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._running = False
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self._reload_at_start = False
        self._lock = StateDirLock(config.state_dir)
        for spec in config.devices.values():
            if spec.section.enabled:
                self._place_device(spec)
        self.discovered_store = DiscoveredStore(config.state_dir)
        """Discovery configs accepted (``discovered.json``), replayed at start."""
        self.discovery: dict[str, Discovery] = {}
        """Discovery per broker that has it on (docs/discovery.md)."""
        for broker, section in config.brokers.items():
            if section.discovery:
                self._start_discovery(broker, section)

    def _make_hub(self, name: str, config: BrokerSection) -> MqttHub:
        return MqttHub(name, config, state_dir=self.config.state_dir, spool=self.spool)

    def _hub(self, broker: str) -> MqttHub:
        if broker not in self.hubs:
            self.hubs[broker] = self._make_hub(broker, self.config.brokers[broker])
        return self.hubs[broker]

    def _start_discovery(self, broker: str, section: BrokerSection) -> None:
        """Route ``broker``'s discovery topics to a new :class:`Discovery` and bring back
        the devices it found before (from the state directory)."""
        # Imported here: discovery is off by default, and its modules cost about 1 MB of
        # RSS on a Pi that does not use it.
        from gateway.discovery.registry import Discovery

        hub = self._hub(broker)
        found = Discovery(broker, section, self, self.discovered_store, self.config.devices)
        for topic_filter in found.filters:
            hub.add_listener(topic_filter, found.handle)
        self.discovery[broker] = found
        found.restore()

    def add_discovered(self, name: str, driver: MqttDriver[Any], config: NormalizeConfig) -> None:
        """Add (or replace, keeping its counters) a discovered device at run time."""
        from gateway.discovery.registry import place_discovered  # see _start_discovery

        hub = self._hub(driver.options.broker)
        place_discovered(self.pipeline, hub, name, driver, config, self._running)

    def remove_discovered(self, name: str) -> None:
        """Stop and forget a discovered device (what it read stays in the spool)."""
        for hub in self.hubs.values():
            hub.remove_device(name)
        self.pipeline.remove_device(name)

    @property
    def discovered(self) -> dict[str, str]:
        """Discovered device name → the broker it was found on."""
        return {name: b for b, d in self.discovery.items() for name in d.devices}

    def _place_device(self, spec: DeviceSpec, entry: DeviceInput | None = None) -> None:
        """Wire one device into the pipeline and its serial runner or broker hub (not
        started). ``entry`` reuses a device's pipeline entry (a hub rebuilt on reload)."""
        driver = spec.build_driver()
        if entry is None:
            entry = self.pipeline.device(spec.name, spec.section, driver.units)
        if isinstance(driver, SerialDriver):
            self._serial[spec.name] = (driver, entry)
        elif isinstance(driver, MqttDriver):
            broker = driver.options.broker
            if broker not in self.hubs:
                self.hubs[broker] = self._make_hub(broker, self.config.brokers[broker])
            self.hubs[broker].add_device(driver, entry)

    def stop(self) -> None:
        """Ask the gateway to shut down; a second call stops waiting for the sinks.

        Safe to call from a signal handler.
        """
        if self._stop.is_set():
            if not self._hurry.is_set():
                self._hurry.set()
                log.warning(
                    "second stop signal: not waiting for the sinks; everything read is "
                    "committed to the spool and is delivered after the next start",
                    spool=str(self.spool.path),
                )
            return
        self._stop.set()

    def reload(self) -> None:
        """SIGHUP: re-read the configuration and apply what changed (see
        :mod:`gateway.service.reload`); an invalid one is logged and the old one kept.

        Safe to call from a signal handler; a SIGHUP during a reload runs one more after it.
        """
        if self._stop.is_set():
            log.warning("SIGHUP ignored: the gateway is stopping")
            return
        if not self._running:
            # Devices and sinks are still being started: reload right after.
            self._reload_at_start = True
            log.info("SIGHUP while starting: the configuration is reloaded once started")
            return
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return
        self._reload_task = asyncio.create_task(self._reload(), name="reload")

    async def _reload(self) -> None:
        while True:
            self._reload_again = False
            try:
                await reload_gateway(self)
            except Exception as err:  # a bug here must not take the gateway down
                self.reloads.failed(f"{type(err).__name__}: {err}")
                log.exception("configuration reload failed")
            self.notify.ready(status_line(self, None))
            if not self._reload_again or self._stop.is_set():
                return

    # --- devices, brokers and sinks at run time (reload; discovered devices) ------------

    def _start_serial(self, name: str) -> None:
        driver, entry = self._serial[name]
        self.supervisor.service(f"device-{name}", self._device_service(driver, entry))

    def _start_hub(self, hub: MqttHub) -> None:
        self.supervisor.service(f"mqtt-{hub.name}", hub.run)
        for entry in hub.devices:
            entry.stats.state = "running"

    def _readers(self) -> list[str]:
        return [f"device-{n}" for n in self._serial] + [f"mqtt-{h}" for h in self.hubs]

    async def apply_devices(
        self,
        specs: dict[str, DeviceSpec],
        brokers: dict[str, BrokerSection],
        restart: list[str],
        restart_brokers: list[str],
    ) -> None:
        """Make the running devices ``specs``: stop the ``restart`` devices (changed or
        removed) and the ``restart_brokers`` connections, start the added and changed ones.

        Devices not named keep running untouched, except MQTT devices of a restarted
        broker, which reconnect with it (their broker keeps their persistent session).
        A changed device keeps its counters. What any device read is in the spool already.
        """
        gone = [n for n in restart if n in self.pipeline.devices]
        stopping = [f"device-{n}" for n in gone if n in self._serial] + [
            f"mqtt-{b}" for b in restart_brokers if b in self.hubs
        ]
        await self.supervisor.stop(stopping, within=READERS_STOP_TIMEOUT_S)
        self.config = replace(self.config, brokers=brokers)
        for discovery in self.discovery.values():
            discovery.set_configured(specs)  # a newly configured name wins over a discovered one
        kept = {}
        for name in gone:
            self._serial.pop(name, None)
            entry = self.pipeline.remove_device(name)
            if entry is None:
                continue
            if name in specs:
                kept[name] = entry.stats
            log.info(
                "device stopped" if name in specs else "device removed",
                device=name,
                readings=entry.stats.readings,
            )
        for broker in restart_brokers:
            self.hubs.pop(broker, None)
        if any(f"mqtt-{b}" in stopping for b in restart_brokers):
            # The old connection's last PUBACKs and DISCONNECT must be read by the broker
            # before the new connection takes the session over (same client id), or the
            # broker drops them with the old socket and redelivers those messages.
            await asyncio.sleep(BROKER_HANDOVER_S)
        for name, spec in specs.items():
            if name in self.pipeline.devices and broker_of(spec) not in restart_brokers:
                continue  # untouched
            reuse = self.pipeline.devices.get(name)
            self._place_device(spec, reuse)
            if name in kept:
                self.pipeline.devices[name].stats = kept[name]
            if name in self._serial:
                self._start_serial(name)
        for broker in restart_brokers:
            found = self.discovery.get(broker)
            if found is not None:
                # The new connection routes the discovery topics and the devices found.
                hub = self._hub(broker)
                for topic_filter in found.filters:
                    hub.add_listener(topic_filter, found.handle)
                found.replay_devices()
            if broker in self.hubs:
                self._start_hub(self.hubs[broker])

    async def replace_sinks(self, config: Config, names: list[str]) -> None:
        """Rebuild the named sinks from ``config``; each keeps its spool position (what it
        has not confirmed is sent again by the new one) and its counters."""
        fresh = {s.name: s for s in build_sinks(config, self.time) if s.name in names}
        for i, loop in enumerate(self.loops):
            sink = fresh.get(loop.sink.name)
            if sink is None:
                continue
            try:
                await sink.start()
            except Exception as err:  # e.g. the token file went away since validation
                log.error(
                    "sink could not start with the new settings; the old one runs on",
                    sink=sink.name,
                    error=f"{type(err).__name__}: {err}",
                )
                with contextlib.suppress(Exception):
                    await sink.close()
                continue
            await self.supervisor.stop([f"sink-{sink.name}"], within=SERVICES_STOP_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await loop.sink.close()
            new_loop = DeliveryLoop(sink, self.spool)
            new_loop.stats = loop.stats
            self.loops[i] = new_loop
            self.sinks = [sink if s.name == sink.name else s for s in self.sinks]
            self.supervisor.service(f"sink-{sink.name}", new_loop.run)

    def _device_service(
        self, driver: SerialDriver[Any], entry: DeviceInput
    ) -> Callable[[], Awaitable[None]]:
        cfg = self.config.gateway

        def run() -> Awaitable[None]:
            return supervise_device(
                entry,
                _serial_runner(driver, entry),
                cfg.restart_backoff_initial,
                cfg.restart_backoff_max,
            )

        return run

    def _fatal(self, reason: str) -> None:
        if self.fatal_reason is None:
            self.fatal_reason = reason
        self._stop.set()

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Run until :meth:`stop` (or an unusable spool); then shut down gracefully."""
        if self.config.state_dir == user_state_dir() and self.config.state_dir != Path(
            DEFAULT_STATE_DIR
        ):
            log.info(
                "keeping state in the user's state directory: no gateway.state_dir is set "
                f"and {DEFAULT_STATE_DIR} is not writable by this user",
                state_dir=str(self.config.state_dir),
            )
        self._lock.acquire(
            {
                "status": str(self.status_path),
                "socket": str(self.status_server.path),
                "version": __version__,
            }
        )
        try:
            await self.spool.open()
            try:
                await self._run(ready)
            finally:
                await self._close()
        finally:
            self._lock.release()

    async def _run(self, ready: Callable[[], None] | None) -> None:
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
            status=str(self.status_path),
        )
        sup = self.supervisor
        cfg = self.config.gateway
        for name in self._serial:
            self._start_serial(name)
        for hub in self.hubs.values():
            self._start_hub(hub)
        sup.service("spool-commits", self.spool.run_commits)
        for loop in self.loops:
            sup.service(f"sink-{loop.sink.name}", loop.run)
        sup.every("status", STATUS_INTERVAL_S, self._write_status_job)
        sup.service("status-socket", self.status_server.run)
        sup.every("field-types", FIELD_TYPES_INTERVAL_S, self._save_field_types)
        sup.every("units", FIELD_TYPES_INTERVAL_S, self._save_units)
        if self.discovery:
            sup.every("discovered", FIELD_TYPES_INTERVAL_S, self._save_discovered)
        # Also notices clock steps while no readings arrive (asks the kernel only when
        # clock_sync_check is on).
        sup.every("clock-check", CLOCK_CHECK_INTERVAL_S, self._check_clock)
        sup.every("self-metrics", cfg.metrics_interval, self._emit_self_metrics)
        if self.notify.watchdog_s is not None:
            # From the loop itself: a blocked or stopped loop stops the pings and systemd
            # restarts the process after WatchdogSec.
            sup.every("watchdog", self.notify.watchdog_s / 2, self._watchdog)
        if self.notify.enabled:
            sup.every("notify-status", STATUS_INTERVAL_S, self._notify_status)
        if cfg.http_listen is not None:
            host, port = parse_listen(cfg.http_listen)
            self.http = HttpEndpoint(self, host, port, cfg.health_sink_failing)
            sup.service("http", self.http.run)
            sup.every("health", HEALTH_SAMPLE_INTERVAL_S, self.http.sample)
        # A bind that fails is logged and retried by the supervisor; readiness waits no
        # longer than this for it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STATUS_SOCKET_WAIT_S):
                await self.status_server.wait_listening()
        self.notify.ready(status_line(self, None))
        self.notify.watchdog()
        self._running = True
        if ready is not None:
            ready()
        if self._reload_at_start:
            self.reload()
        await self._stop.wait()
        self.notify.stopping()
        if self._reload_task is not None:
            # A reload half done would leave devices stopped and not restarted.
            await asyncio.wait({self._reload_task}, timeout=READERS_STOP_TIMEOUT_S)
        if self.fatal_reason is not None:
            log.error("stopping because the spool is unusable", reason=self.fatal_reason)
        else:
            log.info(
                "stopping: readers first, then delivering within the grace time",
                grace_s=cfg.shutdown_grace,
            )
        # Self-metrics are readings too: made during the drain, they would wait in the
        # spool for the next start after every clean stop.
        await sup.stop([*self._readers(), "self-metrics"], within=READERS_STOP_TIMEOUT_S)
        await sup.stop(["spool-commits"])
        await self._last_commit()
        if self.fatal_reason is None:
            await self._drain(cfg.shutdown_grace)
        await sup.stop(within=SERVICES_STOP_TIMEOUT_S)

    async def _last_commit(self) -> None:
        try:
            await self.spool.commit()
        except Exception as err:
            log.error("last spool commit failed", error=str(err))
        if self.spool.pending:
            log.error(
                "readings could not be committed to the spool before stopping and are lost",
                lost=self.spool.pending,
                spool=str(self.spool.path),
            )

    async def _close(self) -> None:
        try:
            await self.spool.save_field_types(self.pipeline.field_types.take_new())
        except Exception as err:
            log.warning("could not save pinned field types", error=str(err))
        try:
            await self._save_units()
        except Exception as err:
            log.warning("could not save the unit catalog", error=str(err))
        try:
            await self._save_discovered()
        except Exception as err:
            log.warning("could not save the discovered devices", error=str(err))
        for sink in self.sinks:
            with contextlib.suppress(Exception):
                await sink.close()
        oldest = None
        with contextlib.suppress(Exception):
            await self.spool.commit()  # the last self-metrics, so the figures below count them
            oldest = await self.spool.oldest_age()  # what `status` shows until the next start
        left = {loop.sink.name: self.spool.behind(loop.sink.name) for loop in self.loops}
        await self.spool.close()
        with contextlib.suppress(Exception):
            data = json.dumps(status_document(self, False, oldest), indent=1).encode()
            await asyncio.to_thread(write_atomic, self.status_path, data)
        log.info("gateway stopped", left_in_spool=left)

    async def _drain(self, grace: float) -> None:
        """Wait (bounded, and cut short by a second signal) until the sinks caught up."""
        try:
            async with asyncio.timeout(grace):
                # Polling is simplest here: the condition spans several sinks' counters.
                while any(self.spool.behind(s.name) for s in self.sinks):
                    if self._hurry.is_set():
                        break
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.warning(
                "grace time over; the rest stays in the spool for the next start",
                left={s.name: self.spool.behind(s.name) for s in self.sinks},
            )

    # --- periodic jobs --------------------------------------------------------------

    async def _write_status_job(self) -> None:
        now = time.monotonic()
        readings = sum(e.stats.readings for e in self.pipeline.devices.values())
        self.loss.sample(self.spool, now, readings)
        self.rates.sample(self, now)
        self.last_readings.keep(self.pipeline.devices)
        oldest = await self.spool.oldest_age()
        self.oldest.measured(oldest, time.monotonic())
        # Built and serialized on the loop (the counters change only here); written off it.
        # No indent: json's C encoder only serializes without one (~10× faster).
        data = json.dumps(status_document(self, True, oldest)).encode()
        await asyncio.to_thread(write_atomic, self.status_path, data)

    async def _save_field_types(self) -> None:
        pins = self.pipeline.field_types.take_new()
        if not pins:
            return
        try:
            await self.spool.save_field_types(pins)
        except BaseException:
            self.pipeline.field_types.give_back(pins)
            raise

    async def _save_units(self) -> None:
        await save_snapshot(self.pipeline.units)

    async def _save_discovered(self) -> None:
        await save_snapshot(self.discovered_store)

    async def _watchdog(self) -> None:
        self.notify.watchdog()

    async def _notify_status(self) -> None:
        self.notify.status(status_line(self, self._rate.sample(self, time.monotonic())))

    async def _check_clock(self) -> None:
        self.time.refresh_sync()

    async def _emit_self_metrics(self) -> None:
        oldest = await self.spool.oldest_age()
        for reading in self_metric_readings(self, oldest):
            self.spool.add(encode(reading))

    # --- for tests and tools ----------------------------------------------------------

    @property
    def stopping(self) -> bool:
        """Shutting down: readers stopped or stopping, sinks delivering what they can."""
        return self._stop.is_set()

    def status(self, running: bool = True, oldest_age: float | None = None) -> dict[str, Any]:
        """A snapshot of every counter, as written to the status file."""
        return status_document(self, running, oldest_age)
