"""Runs the gateway's long-lived services and periodic jobs, and keeps them running.

A service (a sink's delivery loop, an MQTT hub, the readers, the spool's commits) that
fails is logged (rate-limited), counted and restarted with capped backoff; a periodic
job (status file, field-type pins, clock check, self-metrics) that fails is logged,
counted and simply runs again at its next tick. Neither ever stops the gateway. The one
exception is :class:`~gateway.errors.SpoolError` — a spool that cannot take readings at
all — which asks the gateway to stop through its graceful path with an exit code that
says why.

Tasks are not in a TaskGroup on purpose: stopping must be bounded in time, and a
TaskGroup waits for every child however long its cleanup takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gateway.backoff import Backoff
from gateway.clockgrid import next_tick
from gateway.errors import SpoolError
from gateway.telemetry.stats import RateLimit

log = structlog.get_logger("gateway.supervisor")

# Restart delays of a failed service: quick first retry, then at most a minute apart.
RESTART_BACKOFF_INITIAL_S = 1.0
RESTART_BACKOFF_MAX_S = 60.0
# A cancelled task gets this long to finish its cleanup before it is cancelled again.
CANCEL_GRACE_S = 1.0

Fatal = Callable[[str], None]


@dataclass(slots=True)
class ServiceStats:
    """What happened to one service or job, for status and self-metrics."""

    state: str = "starting"
    failures: int = 0
    last_error: str = ""
    last_failed_at: float = 0.0


class Supervisor:
    """Owns named tasks; restarts failed services; reports a fatal spool error once."""

    def __init__(self, on_fatal: Fatal) -> None:
        self._on_fatal = on_fatal
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.stats: dict[str, ServiceStats] = {}
        self._limit = RateLimit(burst=3, interval=60.0)

    def service(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        backoff_initial: float = RESTART_BACKOFF_INITIAL_S,
        backoff_max: float = RESTART_BACKOFF_MAX_S,
    ) -> None:
        """Start ``run`` as a service: restarted with backoff whenever it fails or returns."""
        stats = self.stats[name] = ServiceStats()
        self._tasks[name] = asyncio.create_task(
            self._keep(name, run, stats, Backoff(backoff_initial, backoff_max)), name=name
        )

    def every(self, name: str, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run ``job`` every ``interval`` seconds; a failed run is reported, not fatal."""
        stats = self.stats[name] = ServiceStats()
        self._tasks[name] = asyncio.create_task(self._tick(name, interval, job, stats), name=name)

    async def stop(self, names: list[str] | None = None, within: float = 5.0) -> list[str]:
        """Cancel the named tasks (all when None); wait at most ``within`` seconds.

        A task whose cleanup does not end in time is cancelled again every
        :data:`CANCEL_GRACE_S` until then. Returns the names still running at the end.
        """
        chosen = list(self._tasks) if names is None else [n for n in names if n in self._tasks]
        tasks = {self._tasks.pop(n): n for n in chosen}
        for task in tasks:
            task.cancel()
        deadline = time.monotonic() + within
        pending = set(tasks)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, CANCEL_GRACE_S))
            for task in pending:
                task.cancel()
        for task, name in tasks.items():
            if task not in pending:
                self.stats[name].state = "stopped"
        stuck = [tasks[t] for t in pending]
        if stuck:
            log.warning("tasks did not stop in time; left behind", tasks=stuck, within_s=within)
        return stuck

    def running(self, name: str) -> bool:
        """Whether the named task exists and has not ended."""
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def _keep(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        stats: ServiceStats,
        backoff: Backoff,
    ) -> None:
        while True:
            stats.state = "running"
            try:
                await run()
                reason = "returned unexpectedly"
            except SpoolError as err:
                self._fatal(name, stats, err)
                return
            except Exception as err:
                reason = _describe(err)
            delay = backoff.next()
            self._failed(name, stats, reason, "service failed; restarting", retry_in_s=delay)
            stats.state = "restarting"
            await asyncio.sleep(delay)

    async def _tick(
        self, name: str, interval: float, job: Callable[[], Awaitable[None]], stats: ServiceStats
    ) -> None:
        stats.state = "running"
        loop = asyncio.get_running_loop()
        # The first run one interval after the start (self-metrics, for one, are
        # readings: none in the first minute); then on a grid of the loop's clock, so
        # jobs of one interval run in one wake-up.
        due = loop.time() + interval
        while True:
            await asyncio.sleep(due - loop.time())
            due = next_tick(loop.time(), interval)
            try:
                await job()
            except SpoolError as err:
                self._fatal(name, stats, err)
                return
            except Exception as err:
                self._failed(name, stats, _describe(err), "periodic job failed; runs again")

    def _failed(
        self, name: str, stats: ServiceStats, reason: str, message: str, **fields: float
    ) -> None:
        stats.failures += 1
        stats.last_error = reason
        stats.last_failed_at = time.time()
        # A full disk fails every status write; say it a few times a minute, not 30.
        if self._limit.allow(name):
            suppressed = self._limit.take_suppressed(name)
            extra: dict[str, object] = {k: round(v, 1) for k, v in fields.items()}
            if suppressed:
                extra["suppressed_since_last"] = suppressed
            log.error(message, task=name, error=reason, failures=stats.failures, **extra)

    def _fatal(self, name: str, stats: ServiceStats, err: SpoolError) -> None:
        stats.state = "failed"
        stats.failures += 1
        stats.last_error = str(err)
        log.critical("spool unusable; stopping the gateway", task=name, error=str(err))
        with contextlib.suppress(Exception):
            self._on_fatal(str(err))


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
