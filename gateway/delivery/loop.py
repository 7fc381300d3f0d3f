"""The delivery loop: drains the spool into one sink.

A sink only knows how to write a batch and classify the answer (:class:`Outcome`).
Policy lives here, once: batching by size and age, retries with backoff, honouring
Retry-After, splitting batches the server finds too large or unparseable,
dead-lettering what it refuses for good, and moving the spool cursor only after the
batch is settled.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import structlog

from gateway.backoff import Backoff
from gateway.delivery.spool import Position, Spool
from gateway.sinks.base import Sink, Verdict

log = structlog.get_logger("gateway.sink")

# How often a sink that cannot write because of its configuration (token, bucket, URL)
# repeats an unchanged error message, so the journal is not flooded during a long outage.
CONFIG_ERROR_LOG_INTERVAL_S = 600.0


@dataclass(slots=True)
class SinkStats:
    """Per-sink counters for status and self-metrics."""

    batches_ok: int = 0
    points_written: int = 0
    batches_failed: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    last_error: str = ""
    last_latency_s: float = 0.0
    state: str = "starting"


class DeliveryLoop:
    """Drains the spool into one sink until cancelled."""

    def __init__(self, sink: Sink, spool: Spool) -> None:
        self.sink = sink
        self.spool = spool
        self.stats = SinkStats()
        self._log = log.bind(sink=sink.name)
        self._backoff = Backoff(1.0, sink.retry_max_interval)
        self._config_backoff = Backoff(5.0, max(sink.retry_max_interval, 300.0))
        self._last_config_log = -CONFIG_ERROR_LOG_INTERVAL_S
        self._config_logged = ""

    async def run(self) -> None:
        """Deliver forever: wait for data, batch by size or age, settle each batch."""
        name = self.sink.name
        self.stats.state = "idle"
        while True:
            await self.spool.wait_for_data(name)
            await self._wait_for_batch()
            start = self.spool.position(name)
            batch = await self.spool.read(name, self.sink.batch_size)
            if batch is None:
                continue
            if await self._settle(batch.lines, start):
                await self.spool.ack(name, batch)

    async def drain(self) -> None:
        """Deliver until nothing is left (used at shutdown, under a timeout)."""
        name = self.sink.name
        while self.spool.behind(name):
            start = self.spool.position(name)
            batch = await self.spool.read(name, self.sink.batch_size)
            if batch is None:
                return
            if await self._settle(batch.lines, start):
                await self.spool.ack(name, batch)

    async def _wait_for_batch(self) -> None:
        """Wait until a full batch is there or the oldest line is ``flush_interval`` old."""
        name = self.sink.name
        # Jitter spreads the writes of several gateways started together.
        deadline = self.spool.waiting_since(name) + self.sink.flush_interval * random.uniform(
            0.9, 1.1
        )
        while self.spool.behind(name) < self.sink.batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Woken by each commit to look at the count again, not by a timer: a timer
            # would wake a quiet host tens of times a second for nothing.
            await self.spool.wait_for_more(name, remaining)

    async def _settle(self, lines: list[str], start: Position | None = None) -> bool:
        """Write ``lines`` until each one is either written or dead-lettered.

        Returns False, leaving the batch unacknowledged, when the spool dropped lines of
        it (cap or age) while it was being retried: those are counted as dropped, so they
        are not sent any more; the loop reads on from the cursor, which the drop moved.
        """
        pending: list[list[str]] = [lines]
        while pending:
            part = pending.pop()
            started = time.monotonic()
            outcome = await self.sink.write(part)
            self.stats.last_latency_s = time.monotonic() - started
            verdict = outcome.verdict
            if verdict is Verdict.OK:
                self._ok(len(part))
            elif verdict is Verdict.PARTIAL:
                bad = {i for i, _ in outcome.rejected}
                rejected = [(part[i], reason) for i, reason in outcome.rejected if i < len(part)]
                await self._dead_letter(rejected)
                rest = [ln for i, ln in enumerate(part) if i not in bad]
                if outcome.resend_rest and rest:
                    pending.append(rest)
                else:
                    self._ok(len(part) - len(bad))
            elif verdict in (Verdict.REJECTS_SOME, Verdict.TOO_LARGE):
                self._failed(verdict.value)
                if len(part) == 1:
                    await self._dead_letter([(part[0], outcome.reason)])
                else:
                    half = len(part) // 2
                    # Pop order: first half first, to keep per-series order.
                    pending += [part[half:], part[:half]]
                    self._log.warning(
                        "splitting batch",
                        verdict=verdict.value,
                        size=len(part),
                        reason=outcome.reason,
                    )
            elif verdict is Verdict.RETRY:
                self._failed(outcome.reason or "retry")
                delay = self._backoff.next()
                if outcome.retry_after is not None:
                    delay = min(outcome.retry_after, self.sink.retry_after_max)
                self.stats.state = "retrying"
                self._log.warning(
                    "write failed; retrying",
                    reason=outcome.reason,
                    retry_in_s=round(delay, 2),
                    batch=len(part),
                )
                pending.append(part)
                await asyncio.sleep(delay)
                if self._dropped_meanwhile(start):
                    return False
            else:  # CONFIG: the request, credentials or path are wrong, not the data
                self._failed("config")
                # What to fix, for `sensor-gateway status`: the log says it only rarely.
                self.stats.last_error = outcome.reason or "config"
                self.stats.state = "blocked"
                delay = self._config_backoff.next()
                now = time.monotonic()
                # Said once, again when the answer changes, and as a reminder now and then.
                if (
                    outcome.reason != self._config_logged
                    or now - self._last_config_log >= CONFIG_ERROR_LOG_INTERVAL_S
                ):
                    self._last_config_log = now
                    self._config_logged = outcome.reason
                    self._log.error(
                        "sink cannot write; readings stay spooled until fixed",
                        reason=outcome.reason,
                        recheck_in_s=round(delay, 1),
                        spooled=self.spool.behind(self.sink.name),
                    )
                pending.append(part)
                await asyncio.sleep(delay)
                if self._dropped_meanwhile(start):
                    return False
        return True

    def _dropped_meanwhile(self, start: Position | None) -> bool:
        if start is None or self.spool.position(self.sink.name) == start:
            return False
        self._log.info(
            "readings of the batch being retried were dropped from the spool meanwhile; "
            "reading on from what is left",
            batch_start=f"{start.chunk_id}:{start.line}",
        )
        return True

    def _ok(self, count: int) -> None:
        if self.stats.state in ("blocked", "retrying"):
            self._log.info("sink writing again", after=self.stats.last_error)
        self.stats.state = "ok"
        self.stats.batches_ok += 1
        self.stats.points_written += count
        self._backoff.reset()
        self._config_backoff.reset()
        self._last_config_log = -CONFIG_ERROR_LOG_INTERVAL_S
        self._config_logged = ""

    def _failed(self, reason: str) -> None:
        key = reason.split(":", 1)[0][:40]
        self.stats.batches_failed[key] = self.stats.batches_failed.get(key, 0) + 1
        self.stats.last_error = reason

    async def _dead_letter(self, rejected: list[tuple[str, str]]) -> None:
        if not rejected:
            return
        await self.spool.dead_letter(self.sink.name, rejected)
        self.stats.dead_lettered += len(rejected)
        self._log.error(
            "points rejected by the server moved to the dead-letter table",
            count=len(rejected),
            reason=rejected[0][1][:300],
            first_line=rejected[0][0][:200],
        )
