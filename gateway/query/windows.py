"""Windows and aggregates computed over rows (``--every 5m --agg mean``) for backends
that cannot compute them themselves (the local store).

Windows are aligned to the epoch, as InfluxQL's ``GROUP BY time()`` does, and each
result row is timed at its window's start. ``mean``, ``sum``, ``min`` and ``max`` take
numbers only (booleans and strings are left out, as InfluxDB does); ``last`` and
``count`` take every value. ``mean`` is always a float, ``count`` an integer, the others
keep the values' type.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from gateway.pipeline.reading import FieldValue
from gateway.query.backend import Aggregate, Row

__all__ = ["aggregate"]

_Reduce = Callable[[list[FieldValue]], FieldValue]


def _numbers(values: list[FieldValue]) -> list[int | float]:
    return [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def _mean(values: list[FieldValue]) -> FieldValue:
    nums = _numbers(values)
    return sum(nums) / len(nums)


def _sum(values: list[FieldValue]) -> FieldValue:
    return sum(_numbers(values))


def _min(values: list[FieldValue]) -> FieldValue:
    return min(_numbers(values))


def _max(values: list[FieldValue]) -> FieldValue:
    return max(_numbers(values))


_REDUCE: dict[str, tuple[bool, _Reduce]] = {
    # aggregate: (numbers only, reduce over the window's values, oldest first)
    "mean": (True, _mean),
    "sum": (True, _sum),
    "min": (True, _min),
    "max": (True, _max),
    "last": (False, lambda values: values[-1]),
    "count": (False, len),
}


def aggregate(rows: Iterable[Row], every_ns: int, agg: Aggregate) -> list[Row]:
    """One row per series + field + window that has values, oldest window first; within
    a window, in the order the series first appear in ``rows`` (oldest first)."""
    numeric, reduce = _REDUCE[agg]
    windows: dict[tuple[int, int], tuple[Row, list[FieldValue]]] = {}
    series: dict[tuple[str, tuple[tuple[str, str], ...], str], int] = {}
    for row in rows:
        if numeric and (isinstance(row.value, bool) or not isinstance(row.value, int | float)):
            continue
        key = (row.measurement, tuple(sorted(row.tags.items())), row.field)
        rank = series.setdefault(key, len(series))
        start = row.time_ns - row.time_ns % every_ns
        found = windows.get((start, rank))
        if found is None:
            windows[(start, rank)] = (row, [row.value])
        else:
            found[1].append(row.value)
    out: list[Row] = []
    for (start, _), (first, values) in sorted(windows.items()):
        out.append(first._replace(time_ns=start, value=reduce(values)))
    return out
