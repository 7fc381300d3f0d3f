"""The shipped unit, checked by systemd's own tools (no running systemd needed).

``systemd-analyze security --offline=yes`` scores the hardening; ``systemd-analyze
verify`` parses it as systemd would load it. The figure in systemd/README.md is the one
measured here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "sensor-gateway.service"
README = ROOT / "systemd" / "README.md"
MAX_EXPOSURE = 1.5
INSTALLED_VENV = "/opt/sensor-gateway/.venv"


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: scripts/setup --test installs the systemd package")
    return tool


def _exposure() -> float:
    out = subprocess.run(
        [_analyze(), "security", "--offline=yes", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
    assert m, out.stdout + out.stderr
    assert "Unknown key" not in out.stderr, out.stderr
    return float(m.group(1))


def test_exposure_is_at_most_1_5_and_documented() -> None:
    score = _exposure()
    assert score <= MAX_EXPOSURE
    assert f"**{score:.1f} OK**" in README.read_text(), "systemd/README.md states another figure"


def test_verify_is_clean(tmp_path: Path) -> None:
    """As installed, except that the commands point at this checkout's venv (verify checks
    that they are executable)."""
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "sensor-gateway").exists()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_VENV, str(venv)))
    out = subprocess.run(
        [_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr


def _settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_service_essentials() -> None:
    s = _settings()
    assert s["Type"] == ["notify"]
    assert s["WatchdogSec"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["StartLimitBurst"]
    assert s["StartLimitIntervalSec"]
    assert s["SupplementaryGroups"] == ["dialout"]
    assert s["User"] == ["sensor-gateway"]
    for key in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert s[key] == ["sensor-gateway"]
    creds = {v.split(":")[0] for v in s["LoadCredential"]}
    assert creds == {"influx-token", "mqtt-password"}
    assert s["CapabilityBoundingSet"] == [""]
    assert s["DevicePolicy"] == ["closed"]
    assert sorted(s["DeviceAllow"]) == [
        "char-ttyACM rw",
        "char-ttyAMA rw",
        "char-ttyS rw",
        "char-ttyUSB rw",
    ]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    # ProtectClock= refuses even the read-only adjtimex: gateway.pipeline.clock falls back
    # to systemd-timesyncd's flag (tests/test_clock_timesyncd.py).
    assert s["ProtectClock"] == ["yes"]
    # Stopping fits: readers 5 s + the default shutdown_grace 10 s + services 5 s.
    assert int(s["TimeoutStopSec"][0]) >= 20
