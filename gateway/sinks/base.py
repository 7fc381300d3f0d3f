"""What a sink is: it writes a batch of line-protocol lines and classifies the answer.

The policy (batching, retries, Retry-After, splitting, dead letters, cursor moves) is
the delivery loop's, in :mod:`gateway.delivery.loop`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum


class Verdict(Enum):
    """How a write went, as far as the delivery loop needs to know."""

    OK = "ok"
    """Everything written."""
    PARTIAL = "partial"
    """The server wrote the good points and named the rejected ones (``rejected``)."""
    REJECTS_SOME = "rejects_some"
    """Some line(s) are bad but the server did not say which: bisect to find them.
    (InfluxDB 2.x 400 rejects the whole batch; 422 / 1.x partial writes wrote the rest,
    so resending good halves is harmless — the points merge.)"""
    TOO_LARGE = "too_large"
    """HTTP 413: split the batch; a single line this large is dead-lettered."""
    RETRY = "retry"
    """Transient (network, timeout, 5xx, 429): try the same batch again later."""
    CONFIG = "config"
    """Credentials, permissions, database or bucket missing: keep spooling, say what to
    fix, check again with a long backoff, resume by itself when fixed."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """The classified answer to one write."""

    verdict: Verdict
    reason: str = ""
    retry_after: float | None = None
    rejected: Sequence[tuple[int, str]] = field(default=())
    """(index into the batch, server's reason) for PARTIAL."""
    resend_rest: bool = False
    """PARTIAL only: the server's list may be cut short, so the lines it did not name are
    written again (those it stored merge; more rejects get named)."""


class Sink(ABC):
    """A destination for spooled lines."""

    name: str
    batch_size: int
    flush_interval: float
    retry_max_interval: float = 60.0
    retry_after_max: float = 300.0

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare (connect lazily; must not fail because the server is down)."""

    @abstractmethod
    async def write(self, lines: list[str]) -> Outcome:
        """Write one batch and classify the answer. Must not raise for server trouble."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
