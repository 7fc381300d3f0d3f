"""Where the often-rewritten runtime files go: RAM, not the SD card.

``status.json`` is rewritten every 2 s (~43,000 file replacements a day). It goes to the
runtime directory: ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``, a tmpfs),
else ``/run/sensor-gateway`` when that exists and is writable, else the state directory.
Several gateways may share ``/run/sensor-gateway``, so the file there is named after the
state directory. The CLI finds it through the state directory's lock file.

The status socket (:mod:`gateway.service.statusd`) goes beside it: ``status.sock``, or
``status-<tag>.sock`` in the shared directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gateway.service.lock import read_lock_info

SHARED_RUN_DIR = Path("/run/sensor-gateway")
STATUS_NAME = "status.json"
SOCKET_SUFFIX = ".sock"


def status_path(state_dir: Path, shared_run_dir: Path = SHARED_RUN_DIR) -> Path:
    """Where a gateway with this state directory writes its status document."""
    env = os.environ.get("RUNTIME_DIRECTORY")
    if env:
        # systemd may list several directories, separated by colons.
        return Path(env.split(":")[0]) / STATUS_NAME
    if shared_run_dir.is_dir() and os.access(shared_run_dir, os.W_OK | os.X_OK):
        tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        return shared_run_dir / f"status-{tag}.json"
    return state_dir / STATUS_NAME


def find_status(state_dir: Path) -> Path:
    """The status file of the gateway on ``state_dir`` (as its lock file names it)."""
    named = read_lock_info(state_dir).get("status")
    if isinstance(named, str) and Path(named).exists():
        return Path(named)
    old = state_dir / STATUS_NAME
    return old if old.exists() else status_path(state_dir)


def socket_path(state_dir: Path, shared_run_dir: Path = SHARED_RUN_DIR) -> Path:
    """Where a gateway with this state directory serves its status socket."""
    return status_path(state_dir, shared_run_dir).with_suffix(SOCKET_SUFFIX)


def find_socket(state_dir: Path, shared_run_dir: Path = SHARED_RUN_DIR) -> Path:
    """The status socket of the gateway on ``state_dir`` (as its lock file names it).

    A user outside the gateway's group cannot read the lock file; the socket is then
    most likely the systemd unit's, in ``/run/sensor-gateway`` (``$RUNTIME_DIRECTORY``),
    where that user is stopped too and told which group lets them in.
    """
    named = read_lock_info(state_dir).get("socket")
    if isinstance(named, str):
        return Path(named)
    unit = shared_run_dir / f"status{SOCKET_SUFFIX}"
    if os.path.lexists(unit) or (
        shared_run_dir.is_dir() and not os.access(shared_run_dir, os.X_OK)
    ):
        return unit
    return socket_path(state_dir, shared_run_dir)
