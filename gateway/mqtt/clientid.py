"""The default MQTT client id: unique per installation, stable across restarts.

The broker keeps a persistent session per client id, so the id must not change between
runs, and two gateways must never share one (each would throw the other out). Hostnames
alone collide (many Raspberry Pis are called ``raspberrypi``), so a new installation
gets ``sensor-gateway-<hostname>-<6 random hex digits>``, kept in the state directory.
An installation from before this (a spool already there, no id file) keeps the old
``sensor-gateway-<hostname>``: its session at the broker holds its queued messages.
"""

from __future__ import annotations

import secrets
import socket
import time
from pathlib import Path

import structlog

from gateway.config import default_client_id
from gateway.service.statefile import write_atomic

ID_FILE = "mqtt-client-id"
# Anything in the state directory older than this process is from an earlier run.
_STARTED = time.time()

log = structlog.get_logger("gateway.mqtt")


def installation_client_id(state_dir: Path | None) -> str:
    """The stored id, or a new one stored now; the hostname-only id when none can be kept."""
    if state_dir is None:
        return default_client_id()
    path = state_dir / ID_FILE
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    except OSError as err:
        log.warning(
            "cannot read the MQTT client id file; using the hostname",
            path=str(path),
            error=str(err),
        )
        return default_client_id()
    if stored:
        return stored
    if _earlier_install(state_dir):
        new = default_client_id()
    else:
        new = f"sensor-gateway-{socket.gethostname()}-{secrets.token_hex(3)}"
    try:
        write_atomic(path, f"{new}\n".encode())
    except OSError as err:
        log.warning(
            "cannot store the MQTT client id; it will differ after a restart unless "
            "brokers.*.client_id is set",
            path=str(path),
            error=str(err),
        )
    return new


def _earlier_install(state_dir: Path) -> bool:
    spool = state_dir / "spool.db"
    try:
        return spool.stat().st_mtime < _STARTED
    except OSError:
        return False
