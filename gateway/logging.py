"""structlog set-up: JSON lines for journald (with ``<N>`` priorities), readable output on a
terminal."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

from gateway.logconsole import ConsoleLines
from gateway.service.journal import PriorityPrefix, is_journal


def configure(
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    libraries: bool = False,
) -> None:
    """Route structlog and the stdlib loggers of libraries through one renderer to stderr
    (stdout stays for command output).

    Libraries log at ``level`` only with ``libraries`` (``run -vv``); otherwise only their
    warnings come through: at debug, the MQTT library logs every packet.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        # Fits the terminal's width; one line per event when journald reads it.
        renderer = ConsoleLines(wrap=not is_journal(sys.stderr))
        shared.append(structlog.processors.format_exc_info)
    numeric = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    if is_journal(handler.stream):
        formatter = PriorityPrefix(formatter)  # `journalctl -p warning` filters
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Libraries are chatty at INFO; their warnings still come through. aiomqtt logs
    # paho's per-packet lines as "mqtt".
    for name in ("aiomqtt", "mqtt", "paho", "influxdb_client", "asyncio"):
        logging.getLogger(name).setLevel(numeric if libraries else max(numeric, logging.WARNING))


LEVELS = ("debug", "info", "warning", "error")


def level_from_flags(
    configured: str, log_level: str | None = None, verbose: int = 0, quiet: int = 0
) -> tuple[str, bool]:
    """(level, libraries too) from the config and ``run``'s ``--log-level``/``-v``/``-q``.

    ``--log-level`` replaces the configured level; each ``-v`` is one level more verbose,
    each ``-q`` one less; ``-vv`` from debug also lets the libraries' debug lines through.
    """
    index = LEVELS.index(log_level or configured) - verbose + quiet
    libraries = index < 0
    return LEVELS[min(max(index, 0), len(LEVELS) - 1)], libraries
