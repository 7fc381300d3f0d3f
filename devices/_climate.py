"""Believable indoor-climate values for the simulators, the demo and the benchmarks."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Climate", "ClimateValues"]


@dataclass(frozen=True, slots=True)
class ClimateValues:
    """One set of simulated readings."""

    temperature: float
    """°C, drifting within 18–24."""
    humidity: float
    """% relative humidity, drifting within 35–60."""
    pressure: float
    """hPa, wandering around 1013."""


class Climate:
    """A slow random walk kept within indoor bounds; seed it for repeatable values."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._t = self._rng.uniform(19.5, 22.5)
        self._h = self._rng.uniform(40.0, 55.0)
        self._p = self._rng.uniform(1008.0, 1018.0)

    def step(self) -> ClimateValues:
        """Move one step and return the new values, rounded like a real sensor reports."""
        self._t = self._walk(self._t, 0.05, 18.0, 24.0)
        self._h = self._walk(self._h, 0.2, 35.0, 60.0)
        self._p = self._walk(self._p, 0.05, 995.0, 1030.0)
        return ClimateValues(round(self._t, 2), round(self._h, 1), round(self._p, 1))

    def _walk(self, value: float, sigma: float, low: float, high: float) -> float:
        value += self._rng.gauss(0.0, sigma)
        if value < low:  # reflect at the bounds so values never stick to them
            value = 2 * low - value
        elif value > high:
            value = 2 * high - value
        return min(max(value, low), high)
