"""Logs: to stderr, libraries quiet unless asked, ``run``'s level flags, and console lines
that fit an 80-column terminal."""

from __future__ import annotations

import logging
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.cli import _parser
from gateway.logconsole import INDENT, ConsoleLines
from gateway.logging import configure, level_from_flags

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    libraries = {n: logging.getLogger(n).level for n in ("aiomqtt", "mqtt", "paho")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lib_level in libraries.items():
        logging.getLogger(name).setLevel(lib_level)


def test_logs_go_to_stderr_and_stdout_stays_clean() -> None:
    script = (
        "import structlog\nfrom gateway.logging import configure\n"
        'configure("info", "json")\nstructlog.get_logger("t").info("hello", device="boiler")\n'
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.stdout == ""
    assert '"event": "hello"' in proc.stderr


@pytest.mark.usefixtures("restore_logging")
def test_mqtt_packet_lines_stay_out_at_debug_unless_asked() -> None:
    configure("debug", "json")
    # aiomqtt hands paho's per-packet lines ("Sending PUBLISH …") to the "mqtt" logger.
    assert not logging.getLogger("mqtt").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("mqtt").isEnabledFor(logging.WARNING)
    assert logging.getLogger("gateway").isEnabledFor(logging.DEBUG)
    configure("debug", "json", libraries=True)
    assert logging.getLogger("mqtt").isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize(
    ("configured", "flag", "verbose", "quiet", "expected"),
    [
        ("info", None, 0, 0, ("info", False)),
        ("info", "error", 0, 0, ("error", False)),
        ("info", None, 1, 0, ("debug", False)),
        ("info", None, 2, 0, ("debug", True)),
        ("debug", None, 1, 0, ("debug", True)),
        ("info", None, 0, 1, ("warning", False)),
        ("info", None, 0, 5, ("error", False)),
        ("error", "warning", 1, 0, ("info", False)),
    ],
)
def test_run_level_flags(
    configured: str, flag: str | None, verbose: int, quiet: int, expected: tuple[str, bool]
) -> None:
    assert level_from_flags(configured, flag, verbose, quiet) == expected


def test_run_accepts_the_level_flags() -> None:
    args = _parser().parse_args(["run", "-c", "g.toml", "-vv", "--log-level", "warning"])
    assert (args.verbose, args.quiet, args.log_level) == (2, 0, "warning")
    assert _parser().parse_args(["run", "-q"]).quiet == 1


def render(width: int, **event: object) -> list[str]:
    return ConsoleLines(width)(None, "info", {"level": "info", **event}).split("\n")


def test_a_short_console_line() -> None:
    [line] = render(80, event="serial port opened", device="boiler", line="9600 8N1")
    assert line.endswith(' info serial port opened  device=boiler line="9600 8N1"')
    assert len(line.split(" ")[0]) == len("14:03:07")


def test_console_lines_fit_80_columns() -> None:
    lines = render(
        80,
        event="delivery failed, retrying",
        sink="influxdb",
        reason="HTTP 503 from http://influxdb.example.org:8086/api/v2/write: service unavailable",
        retry_in_s=12.5,
        path="/var/lib/sensor-gateway/" + "x" * 120,
    )
    assert len(lines) > 2
    assert all(len(line) <= 80 for line in lines), lines
    assert all(line.startswith(INDENT) for line in lines[1:])
    assert "retry_in_s=12.5" in "\n".join(lines)


def test_a_traceback_follows_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        text = traceback.format_exc()
    lines = render(80, event="task failed", exception=text)
    assert lines[0].endswith("task failed")
    assert lines[-1] == "ValueError: boom"


def test_one_line_per_event_when_not_wrapping() -> None:
    long = "x" * 200
    text = ConsoleLines(80, wrap=False)(None, "info", {"level": "info", "event": "e", "k": long})
    assert "\n" not in text
    assert text.endswith(f"e  k={long}")
