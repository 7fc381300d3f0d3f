"""Renders the running gateway's counters: the status document and the self-metrics.

Both are built on the event loop from the components' own counters (nothing is copied
or kept twice); only the finished bytes of ``status.json`` are written off the loop.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Container
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway import __version__
from gateway.pipeline.reading import Reading

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.delivery.spool import Spool

SELF_MEASUREMENT = "sensor_gateway"
# The window over which spool growth is measured for the time-to-loss estimate.
GROWTH_WINDOW_S = 60.0
# Readings per second of a device are counted over about this long.
RATE_WINDOW_S = 10.0
# A rate over less than this is mostly noise: shown as unknown.
MIN_RATE_SPAN_S = 1.0
# The intake counts a device time it replaced by the arrival time among the dropped fields
# (DeviceStats.drop_field); it is not a lost field, so the documents show it on its own.
CLOCK_SKEW = "clock_skew"
SINK_FAILING = ("retrying", "blocked")


def metric_key(text: str) -> str:
    """A field-name-safe form of a failure reason (``"HTTP 503"`` → ``"http_503"``)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "other"


@dataclass(slots=True)
class LossEstimate:
    """How long until readings are dropped at the current growth.

    While commits succeed the limit is the spool's byte cap; while they fail (disk full)
    readings wait in memory and the limit is the in-memory cap, which is much closer.
    """

    _samples: list[tuple[float, int, int, int]] = field(default_factory=list)

    def sample(self, spool: Spool, now: float, readings: int = -1) -> None:
        """Record the spool's size and in-memory backlog at ``now`` (monotonic seconds),
        and ``readings``, the devices' total so far (-1: not known)."""
        self._samples.append((now, spool.size_bytes, spool.pending, readings))
        while self._samples and now - self._samples[0][0] > GROWTH_WINDOW_S:
            self._samples.pop(0)

    def seconds(self, spool: Spool) -> float | None:
        """Seconds until the first drop (None: not filling, or no device reading came in
        during the window: the self-metrics alone fill a spool in centuries, which says
        nothing)."""
        if len(self._samples) < 2:
            return None
        (t0, b0, p0, r0), (t1, b1, p1, r1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or (r0 >= 0 and r1 <= r0):
            return None
        if spool.commit_failing:
            rate, room = (p1 - p0) / (t1 - t0), spool.max_pending - spool.pending
        else:
            rate, room = (b1 - b0) / (t1 - t0), spool.max_bytes - spool.size_bytes
        if rate <= 0:
            return None
        return max(0.0, room / rate)


@dataclass(slots=True)
class DeviceRates:
    """Readings per second of each device over the last :data:`RATE_WINDOW_S`, from
    samples of its counter taken by the status job."""

    _samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def sample(self, gw: Gateway, now: float) -> None:
        """Note every device's reading count at ``now`` (monotonic seconds)."""
        devices = gw.pipeline.devices
        for name, entry in devices.items():
            kept = self._samples.setdefault(name, deque())
            if kept and entry.stats.readings < kept[-1][1]:
                kept.clear()  # new counters (the device was replaced)
            kept.append((now, entry.stats.readings))
            while len(kept) > 1 and now - kept[0][0] > RATE_WINDOW_S:
                kept.popleft()
        for name in [n for n in self._samples if n not in devices]:
            del self._samples[name]

    def per_second(self, name: str, readings: int, now: float) -> float | None:
        """The device's rate from its oldest kept sample to ``readings`` now (None: unknown)."""
        kept = self._samples.get(name)
        if not kept or now - kept[0][0] < MIN_RATE_SPAN_S:
            return None
        t0, r0 = kept[0]
        return max(0, readings - r0) / (now - t0)


@dataclass(slots=True)
class LastReadings:
    """The newest reading of each device: a pipeline tap, one dict store per reading."""

    by_device: dict[str, Reading] = field(default_factory=dict)

    def note(self, device: str, reading: Reading) -> None:
        """The tap (see :attr:`gateway.pipeline.intake.Pipeline.taps`)."""
        self.by_device[device] = reading

    def keep(self, devices: Container[str]) -> None:
        """Forget devices no longer there (removed, or discovered and gone)."""
        for name in [n for n in self.by_device if n not in devices]:
            del self.by_device[name]


@dataclass(slots=True)
class OldestAge:
    """The age of the spool's oldest undelivered reading as last measured (a query on the
    spool thread, every 2 s by the status job), aged since, so that a document built
    between two measurements needs no query of its own."""

    age: float | None = None
    at: float = 0.0

    def measured(self, age: float | None, now: float) -> None:
        """Keep a fresh measurement taken at ``now`` (monotonic seconds)."""
        self.age, self.at = age, now

    def at_time(self, now: float) -> float | None:
        """The age at ``now``, as if nothing was delivered since the measurement."""
        return None if self.age is None else self.age + max(0.0, now - self.at)


def _device_condition(state: str, stale: bool, broker_state: str | None) -> str:
    """connected, connecting, reconnecting, stale or refused: what a user asks first."""
    if stale:
        return "stale"
    if state == "refused":
        return "refused"
    if broker_state is not None and state == "running":
        # An MQTT device is as connected as its broker connection.
        return {"connected": "connected", "connecting": "connecting"}.get(
            broker_state, "reconnecting"
        )
    return {"running": "connected", "waiting": "reconnecting", "starting": "connecting"}.get(
        state, state
    )


def _last_reading(reading: Reading | None) -> dict[str, Any] | None:
    if reading is None:
        return None
    return {
        "measurement": reading.measurement,
        "tags": dict(reading.tags),
        "fields": dict(reading.fields),
        "time_ns": reading.time_ns,
    }


def status_document(
    gw: Gateway, running: bool = True, oldest_age: float | None = None
) -> dict[str, Any]:
    """A snapshot of every counter, as written to ``status.json`` and served on the
    status socket.

    Every mutable mapping is copied here, on the loop, so serializing it elsewhere is safe.
    A device's ``condition`` is what ``status`` shows (connected, connecting, reconnecting,
    stale, refused); ``state`` is its runner's own word. A sink's or broker's ``error``
    is its current problem ("" once it works again); ``last_error`` the latest ever.
    """
    spool = gw.spool
    now_mono = time.monotonic()
    broker_of = {entry.name: h.stats.state for h in gw.hubs.values() for entry in h.devices}
    behind = {loop.sink.name: spool.behind(loop.sink.name) for loop in gw.loops}
    waiting = max(behind.values(), default=0) + spool.pending
    discovered = gw.discovered
    return {
        "version": __version__,
        "pid": os.getpid(),
        "running": running,
        "stopping": gw.stopping,
        "started_at": gw.started_at,
        "updated_at": time.time(),
        "clock_unsynced": gw.time.unsynced,
        "clock_steps": gw.time.steps,
        "clock_last_step_s": gw.time.last_step_s,
        "devices": {
            name: {
                "condition": _device_condition(e.stats.state, e.stats.stale, broker_of.get(name)),
                "state": "stale" if e.stats.stale else e.stats.state,
                "frames": e.stats.frames,
                "readings": e.stats.readings,
                "readings_per_s": _round(gw.rates.per_second(name, e.stats.readings, now_mono), 2),
                "rejected": dict(e.stats.rejected),
                "dropped_fields": {
                    k: v for k, v in e.stats.dropped_fields.items() if k != CLOCK_SKEW
                },
                "clock_skew": e.stats.dropped_fields.get(CLOCK_SKEW, 0),
                "restarts": e.stats.restarts,
                "last_error": e.stats.last_error,
                "last_reading_age_s": (
                    round(now_mono - e.stats.last_reading_at, 1)
                    if e.stats.last_reading_at
                    else None
                ),
                "last_reading": _last_reading(gw.last_readings.by_device.get(name)),
                "discovered": name in discovered,
            }
            for name, e in list(gw.pipeline.devices.items())
        },
        "brokers": {
            name: {
                "state": h.stats.state,
                "error": "" if h.stats.state == "connected" else h.stats.last_error,
                "connects": h.stats.connects,
                "messages": h.stats.messages,
                "unrouted": h.stats.unrouted,
                "sessions_lost": h.stats.sessions_lost,
                "acked": h.stats.acked,
                "unacked": h.stats.unacked,
                "early_commits": h.stats.early_commits,
                "possible_loss": h.stats.possible_loss,
                "broker_dropped": h.stats.broker_dropped,
                "takeovers": h.stats.takeovers,
                "refused": dict(h.stats.refused),
                "last_error": h.stats.last_error,
            }
            for name, h in gw.hubs.items()
        },
        "sinks": {
            loop.sink.name: {
                "state": loop.stats.state,
                "behind": spool.behind(loop.sink.name),
                "points_written": loop.stats.points_written,
                "batches_ok": loop.stats.batches_ok,
                "batches_failed": dict(loop.stats.batches_failed),
                "dead_lettered": loop.stats.dead_lettered,
                "error": loop.stats.last_error if loop.stats.state in SINK_FAILING else "",
                "last_error": loop.stats.last_error,
                "write_latency_s": round(loop.stats.last_latency_s, 4),
            }
            for loop in gw.loops
        },
        "spool": {
            "path": str(spool.path),
            "waiting": waiting,
            "bytes": spool.size_bytes,
            "max_bytes": spool.max_bytes,
            "pending": spool.pending,
            "max_pending": spool.max_pending,
            "commit_failing": spool.commit_failing,
            "committed": spool.stats.committed,
            "commits": spool.stats.commits,
            "dropped": dict(spool.stats.dropped),
            "write_errors": spool.stats.write_errors,
            "damaged_chunks_lost": spool.stats.recovered_lost_chunks,
            "oldest_age_s": None if oldest_age is None or not waiting else round(oldest_age, 1),
            "time_to_loss_s": _round(gw.loss.seconds(spool), 1),
        },
        "tasks": {
            name: {
                "state": s.state,
                "failures": s.failures,
                "last_error": s.last_error,
                "last_failed_at": s.last_failed_at,
            }
            for name, s in list(gw.supervisor.stats.items())
            if s.failures
        },
        "reloads": {
            "done": gw.reloads.done,
            "rejected": gw.reloads.rejected,
            "last_error": gw.reloads.last_error,
        },
        "discovery": {broker: d.status() for broker, d in gw.discovery.items()},
    }


def live_document(gw: Gateway) -> dict[str, Any]:
    """The status document of the running gateway, as the status socket serves it."""
    return status_document(gw, True, gw.oldest.at_time(time.monotonic()))


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def self_metric_readings(gw: Gateway, oldest_age: float | None) -> list[Reading]:
    """Our own counters as measurement ``sensor_gateway`` (like Telegraf's internal)."""
    now = gw.time.now_ns()
    host = {"host": gw.host}
    readings: list[Reading] = []
    for name, e in gw.pipeline.devices.items():
        s = e.stats
        readings.append(
            Reading(
                SELF_MEASUREMENT,
                {**host, "kind": "device", "name": name},
                {
                    "frames": s.frames,
                    "readings": s.readings,
                    "rejected": sum(s.rejected.values()),
                    "dropped_fields": sum(
                        n for k, n in s.dropped_fields.items() if k != CLOCK_SKEW
                    ),
                    "clock_skew": s.dropped_fields.get(CLOCK_SKEW, 0),
                    "restarts": s.restarts,
                },
                now,
            )
        )
    for loop in gw.loops:
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
                    "behind": gw.spool.behind(loop.sink.name),
                    "write_latency_s": float(st.last_latency_s),
                    **{
                        f"batches_failed_{metric_key(reason)}": count
                        for reason, count in st.batches_failed.items()
                    },
                },
                now,
            )
        )
    spool = gw.spool
    fields: dict[str, float | int] = {
        "bytes": spool.size_bytes,
        "committed": spool.stats.committed,
        "dropped": sum(spool.stats.dropped.values()),
        "pending": spool.pending,
        "write_errors": spool.stats.write_errors,
    }
    if oldest_age is not None:
        fields["oldest_age_s"] = float(oldest_age)
    ttl = gw.loss.seconds(spool)
    if ttl is not None:
        fields["time_to_loss_s"] = float(ttl)
    readings.append(
        Reading(SELF_MEASUREMENT, {**host, "kind": "spool", "name": "spool"}, fields, now)
    )
    clock: dict[str, float | int] = {"steps": gw.time.steps, "unsynced": int(gw.time.unsynced)}
    if gw.time.last_step_s is not None:
        clock["last_step_s"] = float(gw.time.last_step_s)
    readings.append(
        Reading(SELF_MEASUREMENT, {**host, "kind": "clock", "name": "clock"}, clock, now)
    )
    failures = {
        f"failures_{metric_key(name)}": s.failures for name, s in gw.supervisor.stats.items()
    }
    if failures:
        readings.append(
            Reading(SELF_MEASUREMENT, {**host, "kind": "tasks", "name": "tasks"}, failures, now)
        )
    return readings


@dataclass(slots=True)
class ReadingRate:
    """Readings per second between two samples of the devices' counters."""

    _last: tuple[float, int] | None = None

    def sample(self, gw: Gateway, now: float) -> float | None:
        """The rate since the previous call (None on the first)."""
        total = sum(e.stats.readings for e in gw.pipeline.devices.values())
        last, self._last = self._last, (now, total)
        if last is None or now <= last[0]:
            return None
        return max(0, total - last[1]) / (now - last[0])


def status_line(gw: Gateway, rate: float | None) -> str:
    """One line for ``systemctl status``: devices up, readings/s, spool depth."""
    devices = gw.pipeline.devices.values()
    up = sum(1 for e in devices if e.stats.state == "running" and not e.stats.stale)
    waiting = max((gw.spool.behind(loop.sink.name) for loop in gw.loops), default=0)
    per_s = "-" if rate is None else f"{rate:.1f}"
    return (
        f"{up}/{len(devices)} devices up, {per_s} readings/s, "
        f"spool {waiting + gw.spool.pending} waiting"
    )
