"""Log lines for a person at a terminal: short, and wrapped to fit its width (80 columns
on a Pi console).

``14:03:07 warn  serial port lost  device=boiler reason="read failed"``: local time to
the second, a four-letter level, the event, then its context. A line longer than the
width continues on the next lines, indented, broken between ``key=value`` pairs (a
value longer than a whole line is broken inside). A traceback follows unwrapped.
"""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from collections.abc import MutableMapping
from typing import Any

_LEVELS = {
    "debug": "dbug",
    "info": "info",
    "warning": "warn",
    "error": "err ",
    "critical": "crit",
    "exception": "err ",
}
INDENT = " " * 9
# Keys every line has, or that the line shows in its own place.
_SKIP = ("timestamp", "level", "event", "logger", "exception", "stack")


class ConsoleLines:
    """A structlog renderer: one event as short lines of at most ``width`` columns.

    ``width`` None: the terminal's width at each line (80 when it cannot be known).
    ``wrap`` False: one line per event however long (journald makes each line an entry).
    """

    def __init__(self, width: int | None = None, wrap: bool = True) -> None:
        self.width = width
        self.wrap = wrap

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
        width = self.width or shutil.get_terminal_size((80, 24)).columns
        if not self.wrap:
            width = 1 << 30
        level = _LEVELS.get(str(event.get("level", "info")), str(event.get("level"))[:4])
        head = f"{time.strftime('%H:%M:%S')} {level} {event.get('event', '')}"
        pairs = [f"{k}={_show(v)}" for k, v in event.items() if k not in _SKIP]
        lines = _wrap(head, pairs, max(width, 40))
        for key in ("exception", "stack"):
            if event.get(key):
                lines.append(str(event[key]).rstrip("\n"))
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value if value and not any(c in value for c in ' "=\n\t') else json.dumps(value)
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    return _show(str(value)) if not isinstance(value, list | dict) else json.dumps(value)


def _wrap(head: str, pairs: list[str], width: int) -> list[str]:
    lines = textwrap.wrap(head, width, subsequent_indent=INDENT) or [""]
    for i, pair in enumerate(pairs):
        joined = f"{lines[-1]}{'  ' if i == 0 else ' '}{pair}"
        if len(joined) <= width:
            lines[-1] = joined
        elif len(INDENT) + len(pair) <= width:
            lines.append(INDENT + pair)
        else:
            lines += textwrap.wrap(
                pair, width, initial_indent=INDENT, subsequent_indent=INDENT, break_on_hyphens=False
            )
    return lines
