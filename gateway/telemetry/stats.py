"""Counters the gateway keeps about itself: per device, per sink, for the spool.

Plain integers in dicts: cheap enough for the per-reading path. ``status`` and the
``sensor_gateway`` self-metric measurement are built from these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class DeviceStats:
    """What happened to one device's input."""

    frames: int = 0
    readings: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dropped_fields: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    state: str = "starting"
    last_error: str = ""
    last_reading_at: float = 0.0
    stale: bool = False

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def drop_field(self, reason: str) -> None:
        self.dropped_fields[reason] = self.dropped_fields.get(reason, 0) + 1


class RateLimit:
    """Allows ``burst`` events per ``interval`` per key; counts what it suppressed."""

    def __init__(self, burst: int = 5, interval: float = 60.0) -> None:
        self.burst = burst
        self.interval = interval
        self._windows: dict[str, tuple[float, int]] = {}
        self.suppressed: dict[str, int] = {}

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= self.interval:
            start, count = now, 0
        count += 1
        self._windows[key] = (start, count)
        if count <= self.burst:
            return True
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False

    def take_suppressed(self, key: str) -> int:
        return self.suppressed.pop(key, 0)
