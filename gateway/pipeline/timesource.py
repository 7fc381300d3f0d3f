"""Every clock decision of the gateway in one place: the time source.

Readings get their timestamps here, the spool judges age here, and the kernel's
"is the clock synchronized" answer is read here. Tests inject their own clocks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from gateway.pipeline.clock import clock_synchronized

log = structlog.get_logger("gateway.time")


class TimeSource:
    """The gateway's clock: wall time for stamps, sync state, injectable for tests."""

    def __init__(
        self,
        *,
        check_sync: bool = True,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        synchronized: Callable[[], bool | None] | None = None,
    ) -> None:
        self.check_sync = check_sync
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._synchronized = synchronized
        self.unsynced = False

    def now_ns(self) -> int:
        """Wall-clock time in ns, for stamping readings."""
        return self._wall_ns()

    def monotonic_ns(self) -> int:
        """Monotonic time in ns, for durations and ages."""
        return self._monotonic_ns()

    def refresh_sync(self) -> None:
        """Ask the kernel whether the clock is synchronized; log a change."""
        if not self.check_sync:
            return
        ask = self._synchronized or clock_synchronized
        unsynced = ask() is False
        if unsynced == self.unsynced:
            return
        self.unsynced = unsynced
        if unsynced:
            log.warning(
                "system clock is not synchronized; readings are tagged clock=unsynced "
                "until it is (set gateway.clock_sync_check = false to turn this off)"
            )
        else:
            log.info("system clock synchronized; readings no longer tagged")
