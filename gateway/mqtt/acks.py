"""Acknowledge QoS 1 messages only once the spool commit holding them is done.

Each received message is stamped with the spool's ``added`` count after its readings
were handed over; it may be acknowledged once the spool's ``settled`` count reaches that
mark. Marks grow with arrival order, so acknowledgements go out in order (MQTT requires
PUBACKs in the order the PUBLISHes came, MQTT 3.1.1 §4.6).

The broker sends at most ``window`` unacknowledged messages (MQTT 5 Receive Maximum, or
mosquitto's max_inflight_messages for 3.1.1); when half of them wait, the spool is asked
to commit now rather than at the end of its commit window, so the broker never stalls
waiting for acknowledgements.
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import TYPE_CHECKING, Protocol

from gateway.delivery.spool import Spool

if TYPE_CHECKING:
    from gateway.mqtt.hub import BrokerStats


class Acker(Protocol):
    def ack(self, mid: int, qos: int) -> None: ...


class AckWindow:
    """The messages of one connection received but not yet acknowledged."""

    def __init__(self, client: Acker, spool: Spool | None, window: int, stats: BrokerStats):
        self._client = client
        self._spool = spool
        self._stats = stats
        # Half the window: the other half keeps arriving while the commit runs.
        self.early_at = max(1, window // 2)
        self._waiting: deque[tuple[int, int, int]] = deque()
        self._closed = False
        if spool is not None:
            spool.add_commit_listener(self._settled)

    def __len__(self) -> int:
        return len(self._waiting)

    def received(self, mid: int, qos: int) -> None:
        """A QoS > 0 message was handed to the pipeline (call right after)."""
        spool = self._spool
        waiting = self._waiting
        if spool is None or (not waiting and spool.added <= spool.settled):
            # Nothing of it (or before it) waits for a commit.
            self._ack(mid, qos)
            return
        waiting.append((spool.added, mid, qos))
        self._stats.unacked = len(waiting)
        if len(waiting) >= self.early_at and spool.request_commit():
            self._stats.early_commits += 1

    async def flush(self) -> None:
        """Commit what is pending and acknowledge it (before a clean disconnect)."""
        if self._spool is not None and self._waiting:
            with contextlib.suppress(Exception):
                await self._spool.commit()

    def close(self) -> None:
        """The connection ended: what is unacknowledged is the broker's to resend."""
        self._closed = True
        self._waiting.clear()
        self._stats.unacked = 0
        if self._spool is not None:
            self._spool.remove_commit_listener(self._settled)

    def _settled(self, settled: int) -> None:
        waiting = self._waiting
        while waiting and waiting[0][0] <= settled:
            _, mid, qos = waiting.popleft()
            self._ack(mid, qos)
        self._stats.unacked = len(waiting)

    def _ack(self, mid: int, qos: int) -> None:
        if not self._closed:
            self._client.ack(mid, qos)
            self._stats.acked += 1
