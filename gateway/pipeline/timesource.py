"""Every clock decision of the gateway in one place: the time source.

Readings get their timestamps here, the spool and the local store judge ages here, and
the kernel's "is the clock synchronized" answer is read here. Tests inject their own
clocks.

Clock steps. The wall clock can jump: NTP setting a Raspberry Pi's clock after boot
(no real-time clock: it starts at its last shutdown time, or in 1970), ``date -s``, a
resume from suspend. The monotonic clock never jumps, and NTP's gradual corrections
move both clocks alike, so their difference changes only when the wall clock is
stepped. :meth:`TimeSource.now_ns` compares the two on every call (two vDSO clock
reads, no system call); a change larger than ``step_threshold_s`` is a step: logged
once with its size, counted in :attr:`TimeSource.steps`, and remembered in
:attr:`TimeSource.last_step_s`. Whoever keeps state derived from the wall clock (the
per-series spacing of arrival stamps) watches :attr:`TimeSource.steps` and starts
afresh when it changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from gateway.pipeline.clock import clock_synchronized

log = structlog.get_logger("gateway.time")

STEP_THRESHOLD_S = 1.0
"""A jump of the wall clock against the monotonic clock larger than this is a step."""


class TimeSource:
    """The gateway's clock: wall time for stamps, step detection, sync state.

    Args:
        check_sync: ask the kernel whether the clock is synchronized (see
            :meth:`refresh_sync`); False keeps :attr:`unsynced` False.
        wall_ns: the wall clock (ns since the epoch); injectable for tests.
        monotonic_ns: the monotonic clock (ns); injectable for tests.
        synchronized: the kernel's answer (True/False/None); injectable for tests.
        step_threshold_s: the smallest jump counted as a step.

    Attributes:
        unsynced: the kernel says the clock is not synchronized (as of the last
            :meth:`refresh_sync`).
        steps: wall-clock steps seen since start (a counter for status and metrics).
        last_step_s: the size of the last step in seconds (negative: backwards), or
            None before the first.
    """

    def __init__(
        self,
        *,
        check_sync: bool = True,
        wall_ns: Callable[[], int] = time.time_ns,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
        synchronized: Callable[[], bool | None] | None = None,
        step_threshold_s: float = STEP_THRESHOLD_S,
    ) -> None:
        self.check_sync = check_sync
        self._wall_ns = wall_ns
        self._monotonic_ns = monotonic_ns
        self._synchronized = synchronized
        self._threshold_ns = round(step_threshold_s * 1e9)
        self._offset_ns = wall_ns() - monotonic_ns()
        self.unsynced = False
        self.steps = 0
        self.last_step_s: float | None = None

    def now_ns(self) -> int:
        """Wall-clock time in ns, for stamping readings; notices a clock step."""
        wall = self._wall_ns()
        offset = wall - self._monotonic_ns()
        jump = offset - self._offset_ns
        if jump > self._threshold_ns or -jump > self._threshold_ns:
            self._stepped(jump, wall)
        self._offset_ns = offset
        return wall

    def wall_ns(self) -> int:
        """Wall-clock time in ns without step bookkeeping (safe from worker threads)."""
        return self._wall_ns()

    def monotonic_ns(self) -> int:
        """Monotonic time in ns, for durations and ages (never jumps)."""
        return self._monotonic_ns()

    def refresh_sync(self) -> None:
        """Look for a clock step; ask the kernel whether the clock is synchronized.

        Called by a timer, so a step is noticed even while no reading arrives.
        """
        self.now_ns()
        if not self.check_sync:
            return
        ask = self._synchronized or clock_synchronized
        unsynced = ask() is False
        if unsynced == self.unsynced:
            return
        self.unsynced = unsynced
        if unsynced:
            log.warning(
                "system clock is not synchronized; readings stamped by the gateway are "
                "tagged clock=unsynced until it is (set gateway.clock_sync_check = false "
                "to turn this off)"
            )
        else:
            log.info("system clock synchronized; readings no longer tagged")

    def _stepped(self, jump_ns: int, wall_ns: int) -> None:
        self.steps += 1
        self.last_step_s = jump_ns / 1e9
        log.warning(
            "system clock stepped",
            step_s=self.last_step_s,
            direction="forward" if jump_ns > 0 else "backward",
            now=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall_ns / 1e9)),
            steps=self.steps,
            effect=(
                "arrival stamps restart from the new time; spool and local-store ages "
                "are measured on the monotonic clock and not affected"
            ),
        )
