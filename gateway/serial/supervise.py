"""Keeps one serial device running: restart it with capped, jittered backoff when it fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.backoff import Backoff
from gateway.errors import DeviceUnavailable
from gateway.pipeline.intake import DeviceInput

# A device that ran this long before failing starts its backoff from the beginning.
STABLE_RUN_S = 60.0


async def supervise_device(
    entry: DeviceInput,
    run: Callable[[], Awaitable[None]],
    backoff_initial: float,
    backoff_max: float,
) -> None:
    """Run one device forever; restart it with capped, jittered backoff when it fails."""
    backoff = Backoff(backoff_initial, backoff_max)
    while True:
        started = time.monotonic()
        try:
            await run()
            reason = "device runner returned"
        except DeviceUnavailable as err:
            reason = str(err)
        except Exception as err:  # a driver bug: report it, keep the others running
            reason = f"{type(err).__name__}: {err}"
            entry.log.exception("device task crashed")
        if time.monotonic() - started > STABLE_RUN_S:
            backoff.reset()
        delay = backoff.next()
        entry.stats.restarts += 1
        entry.stats.state = "waiting"
        entry.stats.last_error = reason
        entry.log.warning("device unavailable; retrying", reason=reason, retry_in_s=round(delay, 1))
        await asyncio.sleep(delay)
