"""One grid on the event loop's clock for periodic work, so timers of related periods
fall due together and cost one wake-up of the host, not one each."""

from __future__ import annotations

__all__ = ["next_tick"]


def next_tick(now: float, interval: float) -> float:
    """The first multiple of ``interval`` more than a millisecond after ``now``."""
    tick = (now // interval + 1) * interval
    return tick if tick - now > 0.001 else tick + interval
