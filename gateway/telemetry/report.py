"""Renders the running gateway's counters: the status document and the self-metrics.

Both are built on the event loop from the components' own counters (nothing is copied
or kept twice); only the finished bytes of ``status.json`` are written off the loop.
"""

from __future__ import annotations

import os
import re
import time
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


def metric_key(text: str) -> str:
    """A field-name-safe form of a failure reason (``"HTTP 503"`` → ``"http_503"``)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "other"


@dataclass(slots=True)
class LossEstimate:
    """How long until readings are dropped at the current growth.

    While commits succeed the limit is the spool's byte cap; while they fail (disk full)
    readings wait in memory and the limit is the in-memory cap, which is much closer.
    """

    _samples: list[tuple[float, int, int]] = field(default_factory=list)

    def sample(self, spool: Spool, now: float) -> None:
        """Record the spool's size and in-memory backlog at ``now`` (monotonic seconds)."""
        self._samples.append((now, spool.size_bytes, spool.pending))
        while self._samples and now - self._samples[0][0] > GROWTH_WINDOW_S:
            self._samples.pop(0)

    def seconds(self, spool: Spool) -> float | None:
        """Seconds until the first drop (None: not filling)."""
        if len(self._samples) < 2:
            return None
        (t0, b0, p0), (t1, b1, p1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        if spool.commit_failing:
            rate, room = (p1 - p0) / (t1 - t0), spool.max_pending - spool.pending
        else:
            rate, room = (b1 - b0) / (t1 - t0), spool.max_bytes - spool.size_bytes
        if rate <= 0:
            return None
        return max(0.0, room / rate)


def status_document(
    gw: Gateway, running: bool = True, oldest_age: float | None = None
) -> dict[str, Any]:
    """A snapshot of every counter, as written to ``status.json``.

    Every mutable mapping is copied here, on the loop, so serializing it elsewhere is safe.
    """
    spool = gw.spool
    now_mono = time.monotonic()
    discovered = gw.discovered
    return {
        "version": __version__,
        "pid": os.getpid(),
        "running": running,
        "started_at": gw.started_at,
        "updated_at": time.time(),
        "clock_unsynced": gw.time.unsynced,
        "clock_steps": gw.time.steps,
        "clock_last_step_s": gw.time.last_step_s,
        "devices": {
            name: {
                "state": "stale" if e.stats.stale else e.stats.state,
                "frames": e.stats.frames,
                "readings": e.stats.readings,
                "rejected": dict(e.stats.rejected),
                "dropped_fields": dict(e.stats.dropped_fields),
                "restarts": e.stats.restarts,
                "last_error": e.stats.last_error,
                "last_reading_age_s": (
                    round(now_mono - e.stats.last_reading_at, 1)
                    if e.stats.last_reading_at
                    else None
                ),
                "discovered": name in discovered,
            }
            for name, e in list(gw.pipeline.devices.items())
        },
        "brokers": {
            name: {
                "state": h.stats.state,
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
                "last_error": loop.stats.last_error,
                "write_latency_s": round(loop.stats.last_latency_s, 4),
            }
            for loop in gw.loops
        },
        "spool": {
            "path": str(spool.path),
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
            "oldest_age_s": None if oldest_age is None else round(oldest_age, 1),
            "time_to_loss_s": gw.loss.seconds(spool),
        },
        "tasks": {
            name: {"state": s.state, "failures": s.failures, "last_error": s.last_error}
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
                    "dropped_fields": sum(s.dropped_fields.values()),
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
    readings.append(Reading(SELF_MEASUREMENT, {**host, "kind": "spool", "name": "spool"}, fields, now))
    clock: dict[str, float | int] = {"steps": gw.time.steps, "unsynced": int(gw.time.unsynced)}
    if gw.time.last_step_s is not None:
        clock["last_step_s"] = float(gw.time.last_step_s)
    readings.append(Reading(SELF_MEASUREMENT, {**host, "kind": "clock", "name": "clock"}, clock, now))
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
