"""Every log line reaches journald with its own priority: ``journalctl -p warning`` filters.

The journald is real: ``systemd-journald <namespace>`` (a journal namespace of its own,
so the host's journal is untouched) with our process's stdout connected to its stream
socket the way systemd connects a service's, ``$JOURNAL_STREAM`` set as systemd sets it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from servers import wait_until

from gateway.service.journal import PriorityPrefix, is_journal, priority

JOURNALD = Path("/lib/systemd/systemd-journald")

LOG_SCRIPT = """
import logging, structlog
from gateway.logging import configure
configure("debug", "json")
log = structlog.get_logger("test")
log.debug("tag-debug")
log.info("tag-info", device="boiler")
log.warning("tag-warning")
log.error("tag-error")
log.critical("tag-critical")
logging.getLogger("aiomqtt").warning("tag-library-warning")
"""


@dataclass
class Journald:
    namespace: str

    @property
    def stdout_socket(self) -> str:
        return f"/run/systemd/journal.{self.namespace}/stdout"

    def connect(self, identifier: str) -> socket.socket:
        """A stream like the one systemd gives a service's stdout (journald-stream.c)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(self.stdout_socket)
        sock.shutdown(socket.SHUT_RD)
        # identifier, unit, default priority, level prefix on, no syslog/kmsg/console.
        sock.sendall(f"{identifier}\n\n6\n1\n0\n0\n0\n".encode())
        return sock

    def entries(self, identifier: str, *args: str) -> list[dict[str, str]]:
        out = subprocess.run(
            [
                "journalctl",
                f"--namespace={self.namespace}",
                f"SYSLOG_IDENTIFIER={identifier}",
                "-o",
                "json",
                "--no-pager",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def journald(unique_name: str) -> Iterator[Journald]:
    if os.geteuid() != 0:
        pytest.fail("this test starts a journald (namespace) and must run as root, as CI does")
    if not JOURNALD.exists() or shutil.which("journalctl") is None:
        pytest.fail("systemd-journald/journalctl missing: install the Debian package systemd")
    namespace = f"sgw{unique_name[-6:]}"
    proc = subprocess.Popen([str(JOURNALD), namespace], stderr=subprocess.DEVNULL)
    jd = Journald(namespace)
    try:
        wait_until(lambda: Path(jd.stdout_socket).exists(), timeout=10, what="journald socket")
        yield jd
    finally:
        proc.terminate()
        proc.wait(10)
        machine = Path("/etc/machine-id").read_text().strip()
        for path in (
            Path(f"/run/systemd/journal.{namespace}"),
            Path(f"/var/log/journal/{machine}.{namespace}"),
            Path(f"/run/log/journal/{machine}.{namespace}"),
        ):
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.integration
def test_journalctl_p_warning_filters(journald: Journald, unique_name: str) -> None:
    ident = f"sgw-{unique_name}"
    sock = journald.connect(ident)
    st = os.fstat(sock.fileno())
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}", "PYTHONPATH": str(root)}
    with sock:
        subprocess.run(
            [sys.executable, "-c", LOG_SCRIPT],
            stdout=sock,
            stderr=sock,  # logs go to stderr; systemd connects both to the journal
            env=env,
            timeout=60,
            check=True,
        )

    def tags(entries: list[dict[str, str]]) -> dict[str, int]:
        return {
            json.loads(e["MESSAGE"])["event"]: int(e["PRIORITY"])
            for e in entries
            if e["MESSAGE"].startswith("{")
        }

    wait_until(lambda: len(journald.entries(ident)) >= 6, timeout=15, what="6 journal entries")
    assert tags(journald.entries(ident)) == {
        "tag-debug": 7,
        "tag-info": 6,
        "tag-warning": 4,
        "tag-error": 3,
        "tag-critical": 2,
        "tag-library-warning": 4,
    }
    assert set(tags(journald.entries(ident, "-p", "warning"))) == {
        "tag-warning",
        "tag-error",
        "tag-critical",
        "tag-library-warning",
    }


def test_no_prefix_unless_the_stream_is_journald(tmp_path: Path) -> None:
    with (tmp_path / "out").open("w") as f:
        st = os.fstat(f.fileno())
        assert is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not is_journal(f, {})
        assert not is_journal(f, {"JOURNAL_STREAM": "garbage"})


def test_every_line_of_a_record_gets_the_prefix() -> None:
    fmt = PriorityPrefix(logging.Formatter("%(message)s"))
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "one\ntwo", None, None)
    assert fmt.format(record) == "<3>one\n<3>two"
    assert [priority(n) for n in (5, 15, 25, 35, 45, 55)] == [7, 7, 6, 4, 3, 2]
