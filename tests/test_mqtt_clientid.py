"""The default MQTT client id: unique per installation, stable, legacy id kept on upgrade."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path

from gateway.mqtt import clientid


def test_a_new_installation_gets_a_unique_id_and_keeps_it(tmp_path: Path) -> None:
    first = clientid.installation_client_id(tmp_path)
    host = re.escape(socket.gethostname())
    assert re.fullmatch(rf"sensor-gateway-{host}-[0-9a-f]{{6}}", first)
    assert clientid.installation_client_id(tmp_path) == first
    assert (tmp_path / clientid.ID_FILE).read_text().strip() == first
    other = tmp_path / "other"
    other.mkdir()
    assert clientid.installation_client_id(other) != first


def test_an_installation_from_before_keeps_its_hostname_id(tmp_path: Path) -> None:
    spool = tmp_path / "spool.db"
    spool.write_bytes(b"")
    old = time.time() - 3600
    os.utime(spool, (old, old))
    assert clientid.installation_client_id(tmp_path) == f"sensor-gateway-{socket.gethostname()}"
    assert (tmp_path / clientid.ID_FILE).exists()


def test_an_unwritable_state_dir_still_gives_an_id(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    assert clientid.installation_client_id(missing).startswith("sensor-gateway-")
