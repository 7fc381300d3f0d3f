"""A quiet gateway does not wake its host for nothing: the spool's commit loop waits for a
line instead of ticking every commit interval, and a sink waiting to fill a batch is
woken by commits instead of a 50 ms timer. Each wake-up of an idle host costs CPU (and
power on a Pi); these were 25 a second.

Counted on a real event loop: every timer it schedules."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from gateway.clockgrid import next_tick
from gateway.delivery.loop import DeliveryLoop
from gateway.delivery.spool import Spool
from gateway.sinks.local import LocalSink, LocalStore
from gateway.supervisor import Supervisor


class CountingLoop(asyncio.SelectorEventLoop):
    """An event loop that counts the timers scheduled on it."""

    timers = 0

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)


def _run(main: Any) -> Any:
    with asyncio.Runner(loop_factory=CountingLoop) as runner:
        return runner.run(main())


async def _timers_while_idle(seconds: float) -> int:
    """Timers others schedule on the running CountingLoop while this sleeps ``seconds``."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, CountingLoop)
    before = loop.timers
    await asyncio.sleep(seconds)
    return loop.timers - before - 1  # the sleep's own timer


def test_an_idle_spool_schedules_no_commit_timers(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        spool = Spool(tmp_path / "spool.db", ["local"], commit_interval=0.05)
        await spool.open()
        commits = asyncio.create_task(spool.run_commits())
        try:
            await asyncio.sleep(0.1)
            idle = await _timers_while_idle(1.0)  # nothing to commit: 20 ticks of the old loop
            spool.add("m v=1 1")
            async with asyncio.timeout(5):
                while spool.behind("local") == 0:
                    await asyncio.sleep(0.01)
            return idle, spool.behind("local")
        finally:
            commits.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await commits
            await spool.close()

    idle, committed = _run(main)
    assert idle == 0, f"{idle} timers while idle"
    assert committed == 1  # and a line that comes is committed as before


def test_a_sink_waiting_to_fill_a_batch_is_woken_by_commits_not_a_timer(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[int, int]:
        spool = Spool(tmp_path / "spool.db", ["local"], commit_interval=0.05)
        await spool.open()
        store = LocalStore(tmp_path / "readings.db")
        sink = LocalSink(store, batch_size=3, flush_interval=30.0)
        await sink.start()
        delivery = asyncio.create_task(DeliveryLoop(sink, spool).run())
        try:
            spool.add("m v=1 1")
            await spool.commit()
            await asyncio.sleep(0.1)
            waiting = await _timers_while_idle(1.0)  # one line of a batch of 3, 30 s to wait
            spool.add("m v=2 2")
            spool.add("m v=3 3")
            await spool.commit()  # the batch is full: written now, not in 30 s
            async with asyncio.timeout(5):
                while spool.behind("local"):
                    await asyncio.sleep(0.01)
            return waiting, spool.behind("local")
        finally:
            delivery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await delivery
            await sink.close()
            await spool.close()

    waiting, behind = _run(main)
    assert waiting == 0, f"{waiting} timers while waiting for a batch"
    assert behind == 0


def test_next_tick_is_the_next_multiple_of_the_interval() -> None:
    assert next_tick(0.0, 0.05) == pytest.approx(0.05)
    assert next_tick(1.23, 0.2) == pytest.approx(1.4)
    assert next_tick(1.3995, 0.2) == pytest.approx(1.6)  # not within a millisecond


async def test_periodic_jobs_of_one_interval_run_in_the_same_wake_up_after_their_first() -> None:
    loop = asyncio.get_running_loop()
    runs: dict[str, list[float]] = {"a": [], "b": []}

    def job(name: str) -> Any:
        async def run() -> None:
            runs[name].append(loop.time())

        return run

    supervisor = Supervisor(on_fatal=lambda *_: None)
    supervisor.every("a", 0.2, job("a"))
    await asyncio.sleep(0.07)  # started apart, they still fall due together
    supervisor.every("b", 0.2, job("b"))
    try:
        async with asyncio.timeout(5):
            while len(runs["a"]) < 5 or len(runs["b"]) < 4:
                await asyncio.sleep(0.01)
    finally:
        await supervisor.stop(within=1.0)
    # Each first run comes one interval after the job's start; after it, the grid.
    pairs = [(a, b) for a in runs["a"][1:] for b in runs["b"][1:] if abs(a - b) < 0.1]
    assert len(pairs) >= 3
    # Due at the same instant, so run by one turn of the loop (70 ms apart before).
    assert all(abs(a - b) < 0.005 for a, b in pairs), pairs
