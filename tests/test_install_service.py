"""``scripts/install-service`` into a temporary root: exactly the files systemd/README.md
lists, with their modes; dry runs change nothing; uninstall keeps the spool unless
``--purge``. The script runs for real (systemd-sysusers creates the user in the root)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-service"

# What an install with --no-venv writes (besides the user database in etc/), path: mode.
EXPECTED = {
    "etc/sysusers.d/sensor-gateway.conf": 0o644,
    "etc/systemd/system/sensor-gateway.service": 0o644,
    "etc/sensor-gateway": 0o755,
    "etc/sensor-gateway/gateway.toml": 0o640,
    "etc/sensor-gateway/credentials": 0o700,
    "etc/sensor-gateway/credentials/influx-token": 0o600,
    "etc/sensor-gateway/credentials/mqtt-password": 0o600,
}
USER_DB = {"etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "etc/.pwd.lock"}
PARENTS = {"etc", "etc/sysusers.d", "etc/systemd", "etc/systemd/system"}


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.fail("systemd-sysusers --root writes /etc/shadow in the root: run as root, as CI")
    out = subprocess.run(
        [str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def test_install_writes_exactly_the_documented_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = _install(root, "--no-venv")
    tree = _tree(root)
    assert set(tree) == set(EXPECTED) | USER_DB | PARENTS
    for path, mode in EXPECTED.items():
        assert tree[path] == mode, path
    unit = root / "etc/systemd/system/sensor-gateway.service"
    assert unit.read_text() == (ROOT / "systemd" / "sensor-gateway.service").read_text()
    passwd = (root / "etc/passwd").read_text()
    assert "sensor-gateway:x:" in passwd
    assert ":/var/lib/sensor-gateway:/usr/sbin/nologin" in passwd
    gid = next(
        int(line.split(":")[2])
        for line in (root / "etc/group").read_text().splitlines()
        if line.startswith("sensor-gateway:")
    )
    config = root / "etc/sensor-gateway/gateway.toml"
    assert config.stat().st_gid == gid
    assert config.stat().st_uid == 0
    text = config.read_text()
    assert 'token_file = "${CREDENTIALS_DIRECTORY}/influx-token"' in text
    assert '"${CREDENTIALS_DIRECTORY}/mqtt-password"' in text
    assert (root / "etc/sensor-gateway/credentials/influx-token").read_text() == ""
    # Every documented command is printed.
    for text_ in ("systemctl daemon-reload && systemctl enable --now sensor-gateway",
                  "journalctl -u sensor-gateway -f", "check-config"):  # fmt: skip
        assert text_ in out.stdout
    readme = (ROOT / "systemd" / "README.md").read_text()
    for path in EXPECTED:
        assert f"/{path}" in readme, f"systemd/README.md does not mention /{path}"

    # The installed example passes check-config the way the unit runs it, once the
    # token is filled in.
    (root / "etc/sensor-gateway/credentials/influx-token").write_text("a-token\n")
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(root / "etc/sensor-gateway/credentials")},
    )
    assert check.returncode == 0, check.stderr


def test_a_second_install_keeps_the_configuration_and_credentials(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _install(root, "--no-venv")
    config = root / "etc/sensor-gateway/gateway.toml"
    config.write_text("# mine\n")
    token = root / "etc/sensor-gateway/credentials/influx-token"
    token.write_text("secret\n")
    out = _install(root, "--no-venv")
    assert config.read_text() == "# mine\n"
    assert token.read_text() == "secret\n"
    assert f"keep the existing {config}" in out.stdout


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = _install(root, "--dry-run")
    assert not root.exists()
    lines = [line for line in out.stdout.splitlines() if line.startswith("would ")]
    assert lines[0] == f"would create the venv {root}/opt/sensor-gateway/.venv"
    assert any("install sensor-gateway from" in line for line in lines)
    assert any("create the system user sensor-gateway" in line for line in lines)


def test_uninstall_keeps_the_spool_unless_purged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _install(root, "--no-venv")
    venv_bin = root / "opt/sensor-gateway/.venv/bin"
    venv_bin.mkdir(parents=True)  # stands in for the venv (--no-venv made none)
    spool = root / "var/lib/sensor-gateway/spool.db"
    spool.parent.mkdir(parents=True)
    spool.write_bytes(b"readings")
    out = _install(root, "--uninstall")
    assert not (root / "etc/systemd/system/sensor-gateway.service").exists()
    assert not (root / "etc/sysusers.d/sensor-gateway.conf").exists()
    assert not (root / "opt/sensor-gateway").exists()
    assert spool.read_bytes() == b"readings"
    assert (root / "etc/sensor-gateway/gateway.toml").exists()
    assert "systemctl disable --now sensor-gateway" in out.stdout
    _install(root, "--uninstall", "--purge")
    assert not spool.exists()
    assert not (root / "etc/sensor-gateway").exists()


@pytest.mark.integration
def test_full_install_with_the_venv_runs(tmp_path: Path) -> None:
    """The real thing: a venv with sensor-gateway installed from this checkout (pip, from
    the package index or its cache), whose command then checks the installed config."""
    root = tmp_path / "root"
    _install(root)
    venv = root / "opt/sensor-gateway/.venv"
    tool = venv / "bin" / "sensor-gateway"
    version = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("sensor-gateway ")
    creds = root / "etc/sensor-gateway/credentials"
    (creds / "influx-token").write_text("a-token\n")
    check = subprocess.run(
        [str(tool), "check-config", "-c", str(root / "etc/sensor-gateway/gateway.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CREDENTIALS_DIRECTORY": str(creds)},
    )
    assert check.returncode == 0, check.stderr
    _install(root, "--uninstall")
    assert not venv.exists()
