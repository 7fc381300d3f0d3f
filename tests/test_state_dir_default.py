"""Run by hand without ``gateway.state_dir`` and without write access to
/var/lib/sensor-gateway: the user's state directory is used, and the gateway says so.

The suite runs as root, for whom /var/lib is always writable; the unwritable default is
simulated by pointing the default below a regular file (which nobody can create a
directory in). A real non-root run is not possible here: the venv's python lives under
/root (mode 0700).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import gateway.config
from gateway.app import Gateway
from gateway.config import config_from_dict
from gateway.service.statedir import user_state_dir


@pytest.fixture
def unwritable_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setattr(gateway.config, "DEFAULT_STATE_DIR", str(blocker / "sensor-gateway"))
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_STATE_HOME", str(xdg))
    return xdg / "sensor-gateway"


async def test_the_users_state_directory_is_used_and_announced(
    unwritable_default: Path,
) -> None:
    config = config_from_dict(
        {"gateway": {"clock_sync_check": False}, "sinks": {"local": {"enabled": True}}}
    )
    assert config.state_dir == unwritable_default
    gw = Gateway(config)
    ready = asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(gw.run(ready=ready.set))
        await asyncio.wait_for(ready.wait(), 15)
        gw.stop()
        await asyncio.wait_for(task, 30)
    said = [e for e in logs if e["event"].startswith("keeping state in the user's state")]
    assert said
    assert said[0]["state_dir"] == str(unwritable_default)
    assert (unwritable_default / "spool.db").exists()


def test_a_given_state_dir_is_kept(unwritable_default: Path, tmp_path: Path) -> None:
    config = config_from_dict({"gateway": {"state_dir": str(tmp_path / "mine")}})
    assert config.state_dir == tmp_path / "mine"


def test_the_default_when_it_is_writable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway.config, "DEFAULT_STATE_DIR", str(tmp_path / "lib"))
    assert config_from_dict({}).state_dir == tmp_path / "lib"


def test_xdg_state_home() -> None:
    assert user_state_dir({"XDG_STATE_HOME": "/x/state"}) == Path("/x/state/sensor-gateway")
    # A relative XDG_STATE_HOME is invalid and ignored (XDG Base Directory spec).
    assert user_state_dir({"XDG_STATE_HOME": "rel"}) == Path.home() / ".local/state/sensor-gateway"
    assert user_state_dir({}) == Path.home() / ".local/state/sensor-gateway"
