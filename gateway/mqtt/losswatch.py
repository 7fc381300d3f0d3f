"""Evidence that the broker dropped messages meant for us, from what the broker says.

A subscriber cannot see a message the broker never sent. What it can see: mosquitto's
``$SYS/broker/publish/messages/dropped`` (a broker-wide counter: messages dropped
because a session queue was full, ``max_queued_messages``), and the broker not keeping
our session. The last counter value seen is kept in the state directory, so a rise while
the gateway was stopped is noticed at the next start.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import structlog

from gateway.service.statefile import write_atomic

DROPPED_TOPIC = "$SYS/broker/publish/messages/dropped"

log = structlog.get_logger("gateway.mqtt")


class LossWatch:
    """Compares the broker's dropped counter with the last value seen (kept on disk).

    Also keeps the topic filters our session was subscribed to, so filters no device
    uses any more can be unsubscribed (a persistent session keeps them otherwise).
    """

    def __init__(self, broker: str, state_dir: Path | None) -> None:
        self.broker = broker
        self._path = None if state_dir is None else state_dir / f"mqtt-{broker}-broker.json"
        doc = self._load()
        value = doc.get("dropped")
        self.last_seen: int | None = value if isinstance(value, int) else None
        rate, seen_at = doc.get("rate"), doc.get("seen_at")
        self.rate: float | None = float(rate) if isinstance(rate, int | float) else None
        self.seen_at: float | None = float(seen_at) if isinstance(seen_at, int | float) else None
        filters = doc.get("filters")
        self.filters: list[str] = (
            [f for f in filters if isinstance(f, str)] if isinstance(filters, list) else []
        )

    def note_alive(self, rate: float | None = None) -> None:
        """We are connected now (wall clock), receiving ``rate`` messages/s (if measured)."""
        self.seen_at = time.time()
        if rate is not None:
            self.rate = rate
        self._save()

    def away_estimate(self) -> tuple[float, float] | None:
        """(seconds since we were last connected, messages the broker queued meanwhile at
        the last measured rate), or None when either is unknown."""
        if self.seen_at is None or self.rate is None:
            return None
        gap = max(0.0, time.time() - self.seen_at)
        return gap, gap * self.rate

    def remember_filters(self, filters: list[str]) -> None:
        if filters != self.filters:
            self.filters = list(filters)
            self._save()

    def dropped(self, payload: bytes) -> int:
        """The counter's new value arrived; return how many drops are new (0 if none)."""
        try:
            value = int(payload.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            return 0
        previous, self.last_seen = self.last_seen, value
        if previous != value:
            self._save()
        # A smaller value: the broker restarted and counts from 0 again.
        if previous is None:
            return 0
        return value - previous if value > previous else 0

    def _load(self) -> dict[str, Any]:
        if self._path is None:
            return {}
        try:
            doc = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def _save(self) -> None:
        """Write the file off the event loop (when one runs): nothing blocks the loop."""
        if self._path is None:
            return
        text = json.dumps(
            {
                "dropped": self.last_seen,
                "filters": self.filters,
                "rate": self.rate,
                "seen_at": self.seen_at,
            }
        )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(self._path, text)
        else:
            loop.run_in_executor(None, self._write, self._path, text)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        try:
            write_atomic(path, text.encode())
        except OSError as err:
            log.warning("cannot keep the broker's state", path=str(path), error=str(err))
