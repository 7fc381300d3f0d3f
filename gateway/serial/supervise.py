"""Keeps one serial device running: reopen it when it goes away, with backoff while it fails.

A device that delivered at least one good frame since it was opened had a healthy run.
When it goes away (the runner raises :class:`DeviceLost`), the backoff starts again from
the beginning and the port is reopened at once, then every :data:`REOPEN_POLL_S` for
:data:`REOPEN_WINDOW_S`: a USB adapter that drops off the bus (a loose connector, a hub
reset) is usually back within a second or two, and every frame it sends before the port
is open again is lost. A device that never gets as far as a good frame (missing, busy,
wrong baud rate, garbage, a driver crash) is retried with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateway.backoff import Backoff
from gateway.errors import DeviceUnavailable
from gateway.pipeline.intake import DeviceInput

# How often a device lost after a healthy run is tried again, and for how long, before
# the backoff takes over. 50 ms is quick next to USB re-enumeration (hundreds of ms)
# and cheap: a failed open is one system call in an executor thread.
REOPEN_POLL_S = 0.05
REOPEN_WINDOW_S = 5.0


class DeviceLost(DeviceUnavailable):
    """A device that had delivered good frames since it was opened went away.

    Raised by the device runner instead of a plain :class:`DeviceUnavailable`; the
    supervisor resets its backoff and reopens the port at once.
    """


async def supervise_device(
    entry: DeviceInput,
    run: Callable[[], Awaitable[None]],
    backoff_initial: float,
    backoff_max: float,
) -> None:
    """Run one device forever; reopen it when it goes away (see the module docstring)."""
    backoff = Backoff(backoff_initial, backoff_max)
    quick_until = 0.0  # time.monotonic() until which a failed reopen is retried quickly
    while True:
        lost = False
        try:
            await run()
            reason = "device runner returned"
        except DeviceLost as err:
            reason = str(err)
            lost = True
        except DeviceUnavailable as err:
            reason = str(err)
        except Exception as err:  # a driver bug: report it, keep the others running
            reason = f"{type(err).__name__}: {err}"
            entry.log.exception("device task crashed")
            quick_until = 0.0  # a crash loop is never retried quickly
        entry.stats.restarts += 1
        entry.stats.state = "waiting"
        entry.stats.last_error = reason
        if lost:
            backoff.reset()
            quick_until = time.monotonic() + REOPEN_WINDOW_S
            entry.log.warning(
                "device unavailable; retrying",
                reason=reason,
                retry_in_s=REOPEN_POLL_S,
                was_working=True,
            )
            delay = REOPEN_POLL_S
        elif time.monotonic() < quick_until:
            # Still waiting for a lost device to come back: the loss was logged above.
            entry.log.debug("device unavailable; retrying", reason=reason, retry_in_s=REOPEN_POLL_S)
            delay = REOPEN_POLL_S
        else:
            delay = backoff.next()
            entry.log.warning(
                "device unavailable; retrying", reason=reason, retry_in_s=round(delay, 1)
            )
        await asyncio.sleep(delay)
