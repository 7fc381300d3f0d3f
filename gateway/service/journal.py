"""Log priorities for journald: a ``<N>`` syslog prefix on each line.

A service's stdout/stderr reach journald as a stream in which a line starting with
``<N>`` (0 = emerg … 7 = debug) gets priority N (``SyslogLevelPrefix=``, on by default);
without it every line has the default level and ``journalctl -p warning`` shows all or
nothing. systemd says a stream is journald's by setting ``$JOURNAL_STREAM`` to its
``device:inode``; only then are the prefixes added (a terminal or a file never sees them).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import IO, Any

# syslog(3) priorities.
_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def priority(levelno: int) -> int:
    """The syslog priority of a logging level (levels between two round down in severity)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return _PRIORITY[logging.DEBUG]


def is_journal(stream: IO[Any], env: Mapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journald stream ``$JOURNAL_STREAM`` names."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


class PriorityPrefix(logging.Formatter):
    """Wraps a formatter; prefixes every line of its output with the record's priority.

    Every line, because journald makes each line its own entry (a console traceback).
    """

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{priority(record.levelno)}>"
        text = self.inner.format(record)
        return "\n".join(prefix + line for line in text.split("\n"))
