"""``query --plot``: the rows as a chart in the terminal, drawn by plotext.

plotext (an optional extra, ``pip install 'sensor-gateway[plot]'``) is imported only
here, when a plot is asked for. One line per series + field (numbers; booleans as 0/1;
strings are left out), a time axis in the local zone, each line labelled with its device,
field and unit, the y axis with the unit when all lines share one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta, tzinfo
from typing import Any

from gateway.query.backend import QueryArgumentError, Row
from gateway.query.formats import Units
from gateway.query.timespec import EPOCH, NS

__all__ = ["INSTALL_HINT", "plot", "require_plotext"]

INSTALL_HINT = (
    "--plot draws with plotext, which is not installed: "
    "pip install 'sensor-gateway[plot]' (or pip install 'plotext>=5.2,<6')"
)
_DATE_FORM = "Y-m-d H:M:S"
_STRFTIME = "%Y-%m-%d %H:%M:%S"
_MIN_HEIGHT = 10
_MARKERS = ("•", "x", "+", "o", "*", "#", "@", "%")


def require_plotext() -> Any:
    """The plotext module (5.x). Raises :class:`QueryArgumentError` saying how to install it."""
    try:
        import plotext  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        raise QueryArgumentError(INSTALL_HINT) from None
    if not hasattr(plotext, "clear_figure"):  # plotext 6 has another API
        raise QueryArgumentError(
            "--plot needs plotext 5 (6 changed its API): pip install 'plotext>=5.2,<6'"
        )
    return plotext


def _labels(firsts: Sequence[Row]) -> list[str]:
    """``device field`` per series; where two series share that, the tags in which they
    differ are added (``rooms sensor=s1 temperature``), then the measurement."""
    short = [f"{r.device or r.measurement} {r.field}" for r in firsts]
    out = []
    for row, label in zip(firsts, short, strict=True):
        group = [r for r, other in zip(firsts, short, strict=True) if other == label]
        if len(group) == 1:
            out.append(label)
            continue
        keys = sorted({k for r in group for k in r.tags} - {"device"})
        differ = [k for k in keys if len({r.tags.get(k) for r in group}) > 1]
        extra = [f"{k}={row.tags[k]}" for k in differ if k in row.tags]
        if len({r.measurement for r in group}) > 1:
            extra.insert(0, row.measurement)
        out.append(" ".join([row.device or row.measurement, *extra, row.field]))
    return out


def plot(
    rows: Sequence[Row],
    *,
    width: int,
    height: int,
    units: Units | None = None,
    tz: tzinfo | None = None,
    color: bool = True,
) -> str:
    """The chart of ``rows`` (oldest first) in ``width`` × ``height`` characters; ``""``
    when nothing is a number. ``color=False`` draws without ANSI colours."""
    plt = require_plotext()
    series: dict[tuple[Any, ...], tuple[Row, list[str], list[float]]] = {}
    for row in rows:
        value = row.value
        if isinstance(value, str):
            continue
        key = (row.measurement, tuple(sorted(row.tags.items())), row.field)
        found = series.setdefault(key, (row, [], []))
        seconds, _ = divmod(row.time_ns, NS)
        found[1].append((EPOCH + timedelta(seconds=seconds)).astimezone(tz).strftime(_STRFTIME))
        found[2].append(float(value))
    if not series:
        return ""
    labels = _labels([first for first, _, _ in series.values()])
    known = units or {}
    unit_of = [
        known.get(first.device or "", {}).get(first.field) for first, _, _ in series.values()
    ]
    plt.clear_figure()
    plt.date_form(_DATE_FORM)
    plt.plotsize(width, max(height, _MIN_HEIGHT))
    for index, ((_, times, values), unit) in enumerate(zip(series.values(), unit_of, strict=True)):
        label = labels[index] + (f" ({unit})" if unit else "")
        # Without colours, lines differ by their marker.
        marker = "hd" if color else _MARKERS[index % len(_MARKERS)]
        plt.plot(times, values, label=label, marker=marker)
    zone = (EPOCH.astimezone(tz).tzname() or "local") if tz is not None else "local"
    plt.xlabel(f"time ({zone})")
    if len(set(unit_of)) == 1 and unit_of[0] is not None:
        plt.ylabel(unit_of[0])
    plt.title(", ".join(sorted({first.measurement for first, _, _ in series.values()})))
    text: str = plt.build()
    plt.clear_figure()
    if not color:
        text = plt.uncolorize(text)
    return "".join(line.rstrip() + "\n" for line in text.rstrip("\n").split("\n"))
