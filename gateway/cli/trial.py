"""``sensor-gateway run --test``: try the configured devices and store nothing.

The devices run on the daemon's own code path — the serial runner and its supervision,
the MQTT hub, :class:`~gateway.pipeline.intake.DeviceInput` with its normalization, the
type checks against pinned field types, line-protocol encoding — so what is printed is
what the daemon would store. Only the ends differ:

- the spool is a :class:`TrialOutbox` that keeps nothing (the line of each reading is
  printed with it) and counts every line as committed at once;
- no sink, no status file, no unit catalog file, no MQTT loss-watch file, and not the
  state directory's lock: a trial runs beside a running gateway on the same config;
- field types are checked against the pins the gateway has saved in its spool, read
  without writing; pins the trial makes stay in memory;
- each broker gets a throw-away session (``MqttHub(persistent=False)``): the production client id
  plus ``-test-<random>``, clean start, expiring at disconnect. The production session
  is never taken over or extended, and nothing is left at the broker.

A serial port is exclusive: when the running gateway has a device's port open, the trial
says so for that device and keeps trying the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import structlog

from gateway.config import BrokerSection, Config, default_client_id
from gateway.delivery.spool import Spool
from gateway.discovery.registry import Discovery, place_discovered
from gateway.discovery.store import DiscoveredStore
from gateway.driver import MqttDriver, SerialDriver
from gateway.errors import DeviceUnavailable
from gateway.mqtt.clientid import ID_FILE
from gateway.mqtt.hub import MqttHub
from gateway.pipeline.fieldtypes import FieldTypes
from gateway.pipeline.intake import DeviceInput, Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.pipeline.reading import Reading
from gateway.pipeline.timesource import TimeSource
from gateway.pipeline.unitcatalog import UnitCatalog
from gateway.serial.runner import run_serial_device
from gateway.serial.supervise import supervise_device
from gateway.service.lock import read_lock_info
from gateway.supervisor import Supervisor

__all__ = [
    "DEFAULT_DURATION_S",
    "Trial",
    "TrialEvents",
    "TrialOutbox",
    "read_pinned_types",
    "run_trial",
    "trial_client_id",
]

log = structlog.get_logger("gateway.trial")

DEFAULT_DURATION_S = 30.0
# How often broker and port states are looked at for the notices (state changes only).
STATE_POLL_S = 0.1
# Readers get this long to stop (the daemon's READERS_STOP_TIMEOUT_S).
STOP_TIMEOUT_S = 5.0


class TrialOutbox:
    """Stands in for the :class:`~gateway.delivery.spool.Spool` in a trial: keeps nothing.

    The pipeline hands it each reading's line just before it calls its taps, so the tap
    prints :attr:`last_line` with the reading. Every line counts as committed at once, so
    the hub's acknowledgement window acknowledges QoS 1 messages at once.
    """

    def __init__(self) -> None:
        self.last_line = ""
        self.added = 0
        self.settled = 0
        self.pending = 0

    def add(self, line: str) -> None:
        """Take one line: remembered until the next one, never written anywhere."""
        self.last_line = line
        self.added += 1
        self.settled = self.added

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Nothing ever waits for a commit here."""

    def remove_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Nothing ever waits for a commit here."""

    def request_commit(self) -> bool:
        return False

    async def commit(self) -> int:
        return 0


def trial_client_id(broker: BrokerSection, state_dir: Path) -> str:
    """The production client id (configured, or the one the gateway keeps in its state
    directory, read only) plus ``-test-<6 hex digits>``."""
    base = broker.client_id
    if not base:
        try:
            base = (state_dir / ID_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            base = ""
    return f"{base or default_client_id()}-test-{secrets.token_hex(3)}"


def read_pinned_types(spool_path: Path) -> dict[tuple[str, str], str] | None:
    """The field types the gateway pinned, read without writing anything; None when the
    spool does not exist yet. Blocking: run it off the event loop.

    A spool with a WAL file (the gateway runs, or did not stop cleanly) is opened read
    only, which uses the gateway's ``-shm`` file; one without is opened immutable, which
    creates no file at all (a read-only open would leave ``-wal``/``-shm`` behind).

    Raises:
        sqlite3.Error, OSError: the spool cannot be read.
    """
    if not spool_path.exists():
        return None
    wal = spool_path.with_name(spool_path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    db = sqlite3.connect(f"{spool_path.resolve().as_uri()}?{mode}", uri=True)
    try:
        try:
            rows = db.execute("SELECT measurement, field, type FROM field_type").fetchall()
        except sqlite3.OperationalError as err:
            if "no such table" in str(err):
                return {}
            raise
    finally:
        db.close()
    return {(str(m), str(f)): str(t) for m, f, t in rows}


class TrialEvents:
    """What a trial reports; :mod:`gateway.cli.trial_output` prints it."""

    def start(self, devices: list[str], duration: float, pins: int | None) -> None:
        """The trial begins (``pins``: field types pinned by the gateway, None: no spool)."""

    def notice(self, text: str, device: str | None = None) -> None:
        """A state change worth a line: a broker connected, a port opened or busy."""

    def unavailable(self, device: str, reason: str) -> None:
        """A device could not be reached (it is tried again with backoff)."""

    def reading(self, device: str, reading: Reading, line: str) -> None:
        """A normalized reading and the line protocol the gateway would store."""

    def rejection(
        self, device: str, reason: str, message: str, where: Mapping[str, object]
    ) -> None:
        """Input, a reading or a field the gateway would not store, and why."""

    def summary(self, entries: list[DeviceInput], elapsed: float) -> None:
        """The trial ended: per-device counters."""


@dataclass(slots=True)
class _Seen:
    state: str = ""
    error: str = ""


class Trial:
    """The named devices of ``config`` wired for a trial (nothing started yet)."""

    def __init__(self, config: Config, devices: list[str], events: TrialEvents) -> None:
        self.config = config
        self.events = events
        self.time = TimeSource(check_sync=config.gateway.clock_sync_check)
        self.outbox = TrialOutbox()
        # Duck-typed: the pipeline only adds lines, the hub's ack window reads added and
        # settled and registers commit listeners; TrialOutbox does all of that.
        self.pipeline = Pipeline(
            cast(Spool, self.outbox),
            time_step_ns=max(1, round(config.gateway.time_resolution * 1e9)),
            time_source=self.time,
            units=UnitCatalog(),  # no state directory: never saved
        )
        self.pipeline.taps.append(self._reading)
        self.pipeline.rejection_taps.append(self._rejection)
        self.hubs: dict[str, MqttHub] = {}
        self.client_ids: dict[str, str] = {}
        self._serial: dict[str, tuple[SerialDriver[Any], DeviceInput]] = {}
        self._seen: dict[str, _Seen] = {}
        self._stop = asyncio.Event()
        self._closed = False
        self.supervisor = Supervisor(on_fatal=lambda _reason: self._stop.set())
        for name in devices:
            self._place(name)
        if set(devices) == {n for n, d in config.devices.items() if d.section.enabled}:
            self._discover()  # not when -d picked some devices

    def _place(self, name: str) -> None:
        spec = self.config.devices[name]
        driver = spec.build_driver()
        entry = self.pipeline.device(name, spec.section, driver.units)
        if isinstance(driver, SerialDriver):
            self._serial[name] = (driver, entry)
        elif isinstance(driver, MqttDriver):
            self._hub(driver.options.broker).add_device(driver, entry)

    def _hub(self, broker: str) -> MqttHub:
        if broker not in self.hubs:
            section = self.config.brokers[broker]
            client_id = trial_client_id(section, self.config.state_dir)
            self.client_ids[broker] = client_id
            trial_section = section.model_copy(update={"client_id": client_id})
            self.hubs[broker] = MqttHub(broker, trial_section, persistent=False)
        return self.hubs[broker]

    def _discover(self) -> None:
        """Discovered devices too (docs/discovery.md): those the gateway kept in its
        state directory and those announced during the trial; the file is not written."""
        store = DiscoveredStore(self.config.state_dir)
        for broker, section in self.config.brokers.items():
            if section.discovery:
                found = Discovery(broker, section, self, store, self.config.devices)
                for topic_filter in found.filters:
                    self._hub(broker).add_listener(topic_filter, found.handle)
                found.restore()

    def add_discovered(self, name: str, driver: MqttDriver[Any], config: NormalizeConfig) -> None:
        """A discovered device joins the trial (see :class:`DeviceHost`)."""
        place_discovered(
            self.pipeline, self._hub(driver.options.broker), name, driver, config, True
        )

    def remove_discovered(self, name: str) -> None:
        """A discovered device was removed (an empty config payload)."""
        for hub in self.hubs.values():
            hub.remove_device(name)
        self.pipeline.remove_device(name)

    @property
    def entries(self) -> list[DeviceInput]:
        """The devices tried, in the order given."""
        return list(self.pipeline.devices.values())

    def stop(self) -> None:
        """End the trial (safe from a signal handler)."""
        self._stop.set()

    def _reading(self, device: str, reading: Reading) -> None:
        if not self._closed:
            try:
                self.events.reading(device, reading, self.outbox.last_line)
            except BrokenPipeError:
                self._reader_gone()

    def _rejection(
        self, device: str, reason: str, message: str, where: Mapping[str, object]
    ) -> None:
        if not self._closed:
            try:
                self.events.rejection(device, reason, message, where)
            except BrokenPipeError:
                self._reader_gone()

    def _reader_gone(self) -> None:
        """stdout was closed (``run --test | head``): end the trial quietly."""
        self._closed = True
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # the exit's flush must not fail again
            os.close(devnull)
        self.stop()

    async def run(self, duration: float) -> None:
        """Run until ``duration`` seconds passed or :meth:`stop`; then report the summary."""
        started = time.monotonic()
        pins: dict[tuple[str, str], str] | None = None
        try:
            pins = await asyncio.to_thread(read_pinned_types, self.config.spool_path)
        except (sqlite3.Error, OSError) as err:  # e.g. the service user's 0700 state dir
            self.events.notice(
                f"the field types pinned by the gateway cannot be read from "
                f"{self.config.spool_path} ({err}): type checks start from none"
            )
        self.pipeline.field_types = FieldTypes(pins)
        self.time.refresh_sync()
        self.events.start(
            list(self.pipeline.devices), duration, None if pins is None else len(pins)
        )
        cfg = self.config.gateway
        sup = self.supervisor
        for name, (driver, entry) in self._serial.items():
            sup.service(
                f"device-{name}",
                self._serial_service(
                    driver, entry, cfg.restart_backoff_initial, cfg.restart_backoff_max
                ),
            )
        for hub in self.hubs.values():
            sup.service(f"mqtt-{hub.name}", hub.run)
            for entry in hub.devices:
                entry.stats.state = "running"
        sup.every("states", STATE_POLL_S, self._watch_states)
        try:
            async with asyncio.timeout(duration):
                await self._stop.wait()
        except TimeoutError:
            pass
        finally:
            await sup.stop(within=STOP_TIMEOUT_S)
            await self._watch_states()
            if not self._closed:
                with contextlib.suppress(BrokenPipeError):
                    self.events.summary(self.entries, time.monotonic() - started)

    def _serial_service(
        self, driver: SerialDriver[Any], entry: DeviceInput, initial: float, maximum: float
    ) -> Callable[[], Any]:
        async def run_once() -> None:
            try:
                await run_serial_device(driver, entry)
            except DeviceUnavailable as err:
                self._unavailable(entry.name, str(err))
                raise

        def run() -> Any:
            return supervise_device(entry, run_once, initial, maximum)

        return run

    def _unavailable(self, device: str, reason: str) -> None:
        seen = self._seen.setdefault(f"device-{device}", _Seen())
        if reason == seen.error:
            return  # retried with backoff: said once is enough
        seen.error = reason
        if "in use by another program" in reason:
            reason += "; " + self._busy_hint()
        self.events.unavailable(device, reason)

    def _busy_hint(self) -> str:
        pid = read_lock_info(self.config.state_dir).get("pid")
        holder = "another program"
        if isinstance(pid, int) and _alive(pid):
            holder = f"the running gateway (pid {pid})"
        return (
            f"a serial port is exclusive and {holder} has it open: stop it to try this "
            "device (the other devices are tried meanwhile)"
        )

    async def _watch_states(self) -> None:
        """Notices for brokers connecting or going away and ports opening."""
        for name, hub in self.hubs.items():
            stats = hub.stats
            seen = self._seen.setdefault(f"mqtt-{name}", _Seen())
            if stats.state == seen.state and stats.last_error == seen.error:
                continue
            where = f"{hub.config.host}:{hub.config.port}"
            if stats.state == "connected" and seen.state != "connected":
                self.events.notice(
                    f"broker {name}: connected to {where} as {self.client_ids[name]} "
                    "(a trial session: clean start, ends at disconnect); subscribed to "
                    + ", ".join(stats.subscriptions)
                )
                for topic, reason in stats.refused.items():
                    self.events.notice(f"broker {name}: subscription {topic!r} refused: {reason}")
            elif stats.state == "disconnected" and stats.last_error != seen.error:
                self.events.notice(f"broker {name} ({where}): {stats.last_error}; retrying")
            seen.state, seen.error = stats.state, stats.last_error
        for name, (driver, entry) in self._serial.items():
            seen = self._seen.setdefault(f"device-{name}", _Seen())
            if entry.stats.state == "running" and seen.state != "running":
                self.events.notice(f"reading {driver.options.port}", device=name)
                seen.error = ""  # a later failure is news again
            seen.state = entry.stats.state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (the service user's)
    return True


def run_trial(config: Config, devices: list[str], duration: float, events: TrialEvents) -> None:
    """Run a trial of ``devices`` until ``duration`` seconds passed or SIGINT/SIGTERM."""

    async def _main() -> None:
        trial = Trial(config, devices, events)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, trial.stop)
        await trial.run(duration)

    asyncio.run(_main())
