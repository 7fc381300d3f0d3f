"""From driver output to the spool: normalize, pin types, encode, enqueue.

This is the per-reading hot path. It runs on the event loop and never blocks: the
spool only appends to an in-memory list here; the group commit happens elsewhere.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace

import structlog

from gateway.delivery.spool import Spool
from gateway.errors import RejectedInput
from gateway.pipeline.clock import UNSYNCED_TAG
from gateway.pipeline.fieldtypes import FieldTypes
from gateway.pipeline.lineprotocol import LineProtocolError, encode
from gateway.pipeline.normalize import NormalizeConfig, Normalizer
from gateway.pipeline.reading import RawSample, Reading
from gateway.pipeline.timesource import TimeSource
from gateway.pipeline.unitcatalog import UnitCatalog
from gateway.telemetry.stats import DeviceStats, RateLimit

Tap = Callable[[str, Reading], None]
RejectionTap = Callable[[str, str, str, Mapping[str, object]], None]
"""``(device, reason, message, where)`` for every rejected input or reading and every
dropped field, before the log's rate limit (``run --test`` prints each one)."""

# Series per device whose last arrival time is remembered (see DeviceInput.submit).
MAX_SERIES_TRACKED = 10_000


class Pipeline:
    """Shared state of the hot path: the spool, pinned field types, clock state, units,
    taps."""

    def __init__(
        self,
        spool: Spool,
        field_types: FieldTypes | None = None,
        time_step_ns: int = 1_000_000,
        time_source: TimeSource | None = None,
        units: UnitCatalog | None = None,
    ) -> None:
        self.spool = spool
        self.time_step_ns = time_step_ns
        self.field_types = field_types or FieldTypes()
        self.time = time_source or TimeSource()
        self.units = units or UnitCatalog()
        self.taps: list[Tap] = []
        self.rejection_taps: list[RejectionTap] = []
        self.devices: dict[str, DeviceInput] = {}

    def device(
        self, name: str, config: NormalizeConfig, units: Mapping[str, str] | None = None
    ) -> DeviceInput:
        """The entry point for one device's samples (created once per device).

        ``units`` are the driver's (``Driver.units``); the config's override them.
        """
        entry = self.devices.get(name)
        if entry is None:
            entry = self.devices[name] = DeviceInput(self, name, config, units)
            self.units.set_device(name, entry.normalizer.units)
        return entry

    def remove_device(self, name: str) -> DeviceInput | None:
        """Forget a device removed at run time; what it produced stays in the spool."""
        return self.devices.pop(name, None)


class DeviceInput:
    """Where one device's samples and rejections enter the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        name: str,
        config: NormalizeConfig,
        units: Mapping[str, str] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.name = name
        self.normalizer = Normalizer(name, config, units)
        self.stats = DeviceStats()
        self.log = structlog.get_logger("gateway.device").bind(device=name)
        self._limit = RateLimit()
        # Last arrival stamp per series of this device, keyed by the driver's tags (a
        # device with a {sensor} topic level is many series). Bounded like the routes.
        # Forgotten when the wall clock steps (the time source counts steps).
        self._last_arrival: dict[tuple[tuple[str, str], ...], int] = {}
        self._steps_seen = pipeline.time.steps

    def submit(self, samples: Iterable[RawSample], now_ns: int | None = None, **where: str) -> int:
        """Normalize and spool ``samples``; return how many readings were accepted.

        ``now_ns`` is the arrival time (from ``pipeline.time.now_ns()``, read once per
        serial read); by default the time source is read here.
        """
        stats = self.stats
        pipeline = self.pipeline
        clock = pipeline.time
        if now_ns is None:
            now_ns = clock.now_ns()
        if clock.steps != self._steps_seen:
            # The wall clock was set: spacing after stamps from before the step would
            # put an hour of readings 1 ms apart after a step back.
            self._steps_seen = clock.steps
            self._last_arrival.clear()
        unsynced = clock.unsynced
        stats.frames += 1
        accepted = 0
        for sample in samples:
            stamp = now_ns
            if sample.time_ns is None:
                stamp = self._arrival(sample, now_ns)
            # While the gateway's clock is not synchronized, a device's own clock (GPS,
            # RTC) is the better one: keep its time rather than judge it by ours.
            result = self.normalizer.apply(sample, stamp, check_skew=not unsynced)
            for field_name, reason in result.dropped:
                stats.drop_field(reason)
                self._warn(reason, "field dropped", field=field_name, reason=reason, **where)
            reading = result.reading
            if result.clock_skew:
                stats.drop_field("clock_skew")
                offset_s = round(result.clock_offset_ns / 1e9, 1)
                self._warn(
                    "clock_skew",
                    f"device time {offset_s:+.1f} s off the gateway clock, beyond "
                    f"max_clock_skew_s = {self.normalizer.config.max_clock_skew_s:g}; "
                    "arrival time used instead",
                    offset_s=offset_s,
                    **where,
                )
                if reading is not None:
                    # Several lines of one read must not share (and overwrite) one stamp.
                    reading = replace(reading, time_ns=self._arrival(sample, now_ns))
            if reading is None:
                stats.reject("no_valid_fields")
                self._warn("no_valid_fields", "reading rejected: no valid field left", **where)
                continue
            reading, problems = pipeline.field_types.check(reading)
            for field_name, message in problems:
                stats.drop_field("type_conflict")
                self._warn("type_conflict", message, field=field_name, **where)
            if reading is None:
                stats.reject("type_conflict")
                continue
            if unsynced and sample.time_ns is None:
                # Only stamps from the unsynchronized gateway clock are suspect.
                reading = replace(reading, tags={**reading.tags, UNSYNCED_TAG[0]: UNSYNCED_TAG[1]})
            try:
                line = encode(reading)
            except LineProtocolError as err:
                stats.reject(err.reason)
                self._warn(err.reason, f"reading rejected: {err}", **where)
                continue
            pipeline.spool.add(line)
            accepted += 1
            for tap in pipeline.taps:
                tap(self.name, reading)
        if accepted:
            stats.readings += accepted
            stats.last_reading_at = time.monotonic()
            if stats.stale:
                stats.stale = False
                self.log.info("device sending again")
        return accepted

    def _arrival(self, sample: RawSample, now_ns: int) -> int:
        """An arrival stamp for ``sample``'s series: ``now_ns``, or just past its last one.

        Several readings of one series can arrive in one read (a burst of lines, a
        backlog of messages); a point's identity is measurement + tags + time, so each
        gets its own instant, at least time_resolution after the previous one.
        """
        key = tuple(sample.tags.items()) if sample.tags else ()
        last = self._last_arrival.get(key, 0)
        stamp = now_ns
        if stamp < last + self.pipeline.time_step_ns:
            stamp = last + self.pipeline.time_step_ns
        elif len(self._last_arrival) >= MAX_SERIES_TRACKED:
            self._last_arrival.clear()
        self._last_arrival[key] = stamp
        return stamp

    def reject(self, err: RejectedInput, **where: str) -> None:
        """Count and report input the driver could not decode."""
        self.stats.frames += 1
        self.stats.reject(err.reason)
        self._warn(err.reason, f"input rejected: {err}", reason=err.reason, **where)

    def _warn(self, key: str, message: str, **fields: object) -> None:
        for tap in self.pipeline.rejection_taps:
            tap(self.name, key, message, fields)
        # A broken sensor can produce thousands of bad frames a minute; say it a few
        # times, then once a minute with how many were not logged. The counters count all.
        if self._limit.allow(key):
            suppressed = self._limit.take_suppressed(key)
            if suppressed:
                fields["suppressed_since_last"] = suppressed
            # Every warning names its counter key, so logs and status.json line up.
            fields.setdefault("reason", key)
            self.log.warning(message, **fields)
