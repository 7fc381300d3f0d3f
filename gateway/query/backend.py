"""What every query backend shares: the request, the answer, the errors, the interface.

A backend (``local``: the local SQLite store; ``influxql``: InfluxDB over ``/query``)
answers a :class:`QueryRequest` with :class:`Row` values, one per stored field value,
oldest first. Times are nanoseconds since the epoch; a range is ``start_ns <= time < end_ns``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from gateway.errors import GatewayError
from gateway.pipeline.reading import FieldValue

__all__ = [
    "AGGREGATES",
    "Aggregate",
    "Backend",
    "QueryArgumentError",
    "QueryAuthError",
    "QueryConnectError",
    "QueryDatabaseMissing",
    "QueryError",
    "QueryRequest",
    "Row",
    "SeriesSummary",
    "checked_range",
]

Aggregate = Literal["mean", "min", "max", "last", "count", "sum"]
AGGREGATES: tuple[Aggregate, ...] = ("mean", "min", "max", "last", "count", "sum")


class QueryError(GatewayError):
    """A query cannot be answered: no store, an unreadable store, a bad argument.

    ``exit_code`` is what ``sensor-gateway query`` exits with (README, "Exit codes").
    """

    exit_code = 1


class QueryArgumentError(QueryError):
    """An argument is invalid; the message names it."""

    exit_code = 2


class QueryConnectError(QueryError):
    """The server cannot be reached (refused, timed out, DNS, TLS)."""

    exit_code = 4


class QueryAuthError(QueryError):
    """The server refused the credentials (HTTP 401/403)."""

    exit_code = 5


class QueryDatabaseMissing(QueryError):
    """The database (or bucket) asked for does not exist on the server."""

    exit_code = 6


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """What to read. Every filter is optional; ``fields`` None or empty means all fields."""

    device: str | None = None
    measurement: str | None = None
    fields: Sequence[str] | None = None
    start_ns: int | None = None
    """Inclusive lower bound."""
    end_ns: int | None = None
    """Exclusive upper bound."""
    limit: int | None = 1000
    """At most this many rows: the most recent ones, returned oldest first. ``None``: all."""
    latest: bool = False
    """Only the newest value of each series + field (within the range, if one is given)."""
    every_ns: int | None = None
    """Windows of this length (aligned to the epoch); each row is one window's aggregate,
    timed at the window's start. Needs ``agg`` and ``start_ns``."""
    agg: Aggregate | None = None
    """The aggregate per window: mean, sum (numbers only), min, max, last, count."""


class Row(NamedTuple):
    """One stored value (or one window's aggregate)."""

    time_ns: int
    measurement: str
    device: str | None
    tags: dict[str, str]
    """All tags of the series, ``device`` included."""
    field: str
    value: FieldValue


@dataclass(frozen=True, slots=True)
class SeriesSummary:
    """What is stored for one measurement + device + field (``query --list``)."""

    measurement: str
    device: str | None
    field: str
    count: int
    first_ns: int
    last_ns: int


class Backend(Protocol):
    """Where readings are read from."""

    @property
    def description(self) -> str:
        """What answers, for the user: ``local store /var/lib/...``, ``InfluxDB http://...``."""
        ...

    def rows(self, req: QueryRequest) -> list[Row]:
        """The rows ``req`` selects, oldest first. Raises :class:`QueryError`."""
        ...

    def summary(self) -> list[SeriesSummary]:
        """Per measurement + device + field: count, first and last time."""
        ...


def checked_range(req: QueryRequest) -> tuple[int, int]:
    """``req``'s time range with open ends filled in, once its arguments are checked.

    Raises:
        QueryArgumentError: naming the argument that is wrong.
    """
    from gateway.query.timespec import MAX_NS, MIN_NS, rfc3339

    if req.limit is not None and req.limit < 1:
        raise QueryArgumentError(f"--limit: must be at least 1, got {req.limit}")
    start = MIN_NS if req.start_ns is None else req.start_ns
    end = MAX_NS if req.end_ns is None else req.end_ns
    if start >= end:
        raise QueryArgumentError(
            f"--since/--until: the start ({rfc3339(start)}) is not before the end ({rfc3339(end)})"
        )
    if (req.every_ns is None) != (req.agg is None):
        raise QueryArgumentError("--every and --agg go together: give both or neither")
    if req.every_ns is not None:
        if req.every_ns <= 0:
            raise QueryArgumentError(f"--every: must be longer than 0, got {req.every_ns} ns")
        if req.start_ns is None:
            raise QueryArgumentError(
                "--every needs --since (where the first window starts), e.g. --since -1h"
            )
        if req.latest:
            raise QueryArgumentError("--latest and --every cannot be combined")
    return start, end
