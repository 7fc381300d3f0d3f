"""Run a serial driver through the gateway's own serial runner and see what it stored.

:func:`run_serial_driver` is what a driver's end-to-end test needs without a whole
gateway: the same port handling, framing, ``on_open``, polling, normalization and
counting as in production, on a throwaway spool; the readings are collected as they
are accepted::

    run = await run_serial_driver(driver, readings=10)
    assert [r.fields["count"] for r in run.readings] == list(range(10))
    assert run.stats.rejected == {}
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.delivery.spool import Spool
from gateway.driver import SerialDriver
from gateway.errors import DeviceUnavailable
from gateway.pipeline.intake import Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.pipeline.reading import Reading
from gateway.serial.runner import run_serial_device
from gateway.telemetry.stats import DeviceStats

__all__ = ["SerialRun", "run_serial_driver"]


@dataclass
class SerialRun:
    """What a run produced: the accepted readings, the device's counters, how it ended."""

    readings: list[Reading] = field(default_factory=list)
    stats: DeviceStats = field(default_factory=DeviceStats)
    ended: BaseException | None = None  # DeviceUnavailable if the device went away

    def fields(self, name: str) -> list[Any]:
        """The values of field ``name`` in reading order (readings without it skipped)."""
        return [r.fields[name] for r in self.readings if name in r.fields]


async def run_serial_driver(
    driver: SerialDriver[Any],
    *,
    readings: int | None = None,
    until: Callable[[SerialRun], bool] | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - the run's bound, not a wrapper's
    normalize: NormalizeConfig | None = None,
) -> SerialRun:
    """Run ``driver`` until ``readings`` readings were accepted (or ``until(run)``);
    ``run.readings`` then holds the first ``readings`` of them.

    Returns early if the device goes away (``run.ended`` says why). Raises
    ``TimeoutError`` naming the counters when ``timeout`` seconds pass first.
    """
    if readings is None and until is None:
        raise ValueError("give readings=N or until=<predicate>")
    done = until or (lambda run: len(run.readings) >= (readings or 0))
    with tempfile.TemporaryDirectory(prefix="sg-driver-run-") as tmp:
        spool = Spool(Path(tmp) / "spool.db", ["local"])
        try:
            pipeline = Pipeline(spool)
            run = SerialRun()
            pipeline.taps.append(lambda _device, reading: run.readings.append(reading))
            entry = pipeline.device(driver.device, normalize or NormalizeConfig())
            run.stats = entry.stats
            task = asyncio.create_task(run_serial_device(driver, entry))
            try:
                async with asyncio.timeout(timeout):
                    # Polled: ``until`` may look at counters, which signal nothing.
                    while not done(run) and not task.done():  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            except TimeoutError:
                msg = f"{len(run.readings)} readings after {timeout:g} s; stats {run.stats}"
                raise TimeoutError(msg) from None
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, DeviceUnavailable):
                    await task
            if task.done() and not task.cancelled():
                run.ended = task.exception()
            if until is None and readings is not None:
                # One read can bring several frames (a burst, or lines read in turns).
                del run.readings[readings:]
            return run
        finally:
            await spool.close()
