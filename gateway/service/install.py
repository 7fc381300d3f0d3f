"""Install (or uninstall) sensor-gateway as a systemd service: ``scripts/install-service``.

Runs from a source checkout with the system's python3 (standard library only, no
package imports: the venv it creates does not exist yet). It creates the venv under
``/opt/sensor-gateway``, the system user (``systemd-sysusers``), the unit, an example
configuration and empty credential files under ``/etc``, and prints the next steps.
``--root DIR`` installs into another root (the test suite's temporary one);
``--dry-run`` prints every step and changes nothing. Files that hold the user's data
(the configuration, the credentials, the spool) are never overwritten; uninstall keeps
them unless ``--purge``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

NAME = "sensor-gateway"
PREFIX = Path("/opt/sensor-gateway")
UNIT = Path("/etc/systemd/system/sensor-gateway.service")
SYSUSERS = Path("/etc/sysusers.d/sensor-gateway.conf")
CONFIG_DIR = Path("/etc/sensor-gateway")
CREDENTIALS = ("influx-token", "mqtt-password")
STATE_DIR = Path("/var/lib/sensor-gateway")
SYSUSERS_LINE = f'u {NAME} - "sensor-gateway daemon" {STATE_DIR} /usr/sbin/nologin\n'
# The example names secret files in /etc; the installed one reads the unit's credentials.
SECRET_PATHS = {
    '"/etc/sensor-gateway/influx.token"': '"${CREDENTIALS_DIRECTORY}/influx-token"',
    '"/etc/sensor-gateway/mqtt.password"': '"${CREDENTIALS_DIRECTORY}/mqtt-password"',
}


@dataclass(frozen=True, slots=True)
class Step:
    """One thing the installer does, said before it is done."""

    says: str
    run: Callable[[], None]


class Installer:
    """Plans the steps for a root directory; :meth:`execute` carries them out."""

    def __init__(self, source: Path, root: Path, *, venv: bool = True) -> None:
        self.source = source
        self.root = root
        self.venv = venv

    def at(self, path: Path) -> Path:
        """``path`` inside the target root."""
        return self.root / path.relative_to("/")

    # --- install ---------------------------------------------------------------------

    def install_steps(self) -> list[Step]:
        steps: list[Step] = []
        venv = self.at(PREFIX / ".venv")
        if self.venv:
            steps.append(
                Step(
                    f"create the venv {venv}", lambda: _run(sys.executable, "-m", "venv", str(venv))
                )
            )
            steps.append(
                Step(
                    f"install sensor-gateway from {self.source} into it",
                    lambda: _run(str(venv / "bin" / "pip"), "install", "-q", str(self.source)),
                )
            )
        steps.append(
            Step(
                f"write {self.at(SYSUSERS)}",
                lambda: _write(self.at(SYSUSERS), SYSUSERS_LINE, 0o644),
            )
        )
        steps.append(Step(f"create the system user {NAME} (systemd-sysusers)", self._create_user))
        steps.append(Step(f"write {self.at(UNIT)}", self._write_unit))
        steps.append(Step(f"create {self.at(CONFIG_DIR)}", self._config_dir))
        config = self.at(CONFIG_DIR / "gateway.toml")
        if config.exists():
            steps.append(Step(f"keep the existing {config}", lambda: None))
        else:
            steps.append(Step(f"write the example configuration {config}", self._write_config))
        creds = self.at(CONFIG_DIR / "credentials")
        steps.append(Step(f"create {creds} (root only)", lambda: _mkdir(creds, 0o700)))
        for cred in CREDENTIALS:
            path = creds / cred
            if path.exists():
                steps.append(Step(f"keep the existing {path}", lambda: None))
            else:
                steps.append(
                    Step(f"create the empty credential {path}", partial(_write, path, "", 0o600))
                )
        return steps

    def _create_user(self) -> None:
        tool = shutil.which("systemd-sysusers")
        conf = str(self.at(SYSUSERS))
        if tool is not None:
            _run(tool, f"--root={self.root}", conf)
        elif self.root == Path("/"):
            if subprocess.run(["id", NAME], capture_output=True, check=False).returncode != 0:
                _run("useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR),
                     "--no-create-home", "--shell", "/usr/sbin/nologin", NAME)  # fmt: skip
        else:
            raise SystemExit("systemd-sysusers is needed to create the user under --root")

    def _write_unit(self) -> None:
        text = (self.source / "systemd" / UNIT.name).read_text()
        _write(self.at(UNIT), text, 0o644)

    def _config_dir(self) -> None:
        _mkdir(self.at(CONFIG_DIR), 0o755)

    def _write_config(self) -> None:
        text = (self.source / "config" / "gateway.example.toml").read_text()
        for old, new in SECRET_PATHS.items():
            text = text.replace(old, new)
        path = self.at(CONFIG_DIR / "gateway.toml")
        _write(path, text, 0o640)
        gid = _group_id(self.root, NAME)
        if gid is not None and os.geteuid() == 0:
            os.chown(path, 0, gid)

    # --- uninstall -------------------------------------------------------------------

    def uninstall_steps(self, purge: bool) -> list[Step]:
        steps = [
            Step(f"remove {self.at(UNIT)}", lambda: _remove(self.at(UNIT))),
            Step(f"remove the venv {self.at(PREFIX / '.venv')}", lambda: _remove(self.at(PREFIX / ".venv"))),
            Step(f"remove {self.at(PREFIX)} if empty", lambda: _rmdir_empty(self.at(PREFIX))),
            Step(f"remove {self.at(SYSUSERS)}", lambda: _remove(self.at(SYSUSERS))),
        ]  # fmt: skip
        if purge:
            steps.append(
                Step(
                    f"remove {self.at(CONFIG_DIR)} (--purge)", lambda: _remove(self.at(CONFIG_DIR))
                )
            )
            steps.append(Step(f"remove {self.at(STATE_DIR)}: spool and local store (--purge)", lambda: _remove(self.at(STATE_DIR))))  # fmt: skip
        else:
            steps.append(Step(f"keep {self.at(CONFIG_DIR)} and {self.at(STATE_DIR)} (spool, local store; --purge removes them)", lambda: None))  # fmt: skip
        return steps


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def _mkdir(path: Path, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _rmdir_empty(path: Path) -> None:
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()


def _group_id(root: Path, name: str) -> int | None:
    try:
        for line in (root / "etc" / "group").read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == name:
                return int(fields[2])
    except (OSError, ValueError):
        return None
    return None


NEXT_STEPS = """
Next steps:
  1. Edit {config} (devices, brokers, sinks).
  2. Put the InfluxDB token into {creds}/influx-token and, if your broker needs one,
     the MQTT password into {creds}/mqtt-password (one line each).
  3. Check it as the service will see it:
       CREDENTIALS_DIRECTORY={creds} {venv}/bin/sensor-gateway check-config -c {config}
  4. systemctl daemon-reload && systemctl enable --now sensor-gateway
  5. journalctl -u sensor-gateway -f        (-p warning: only warnings and worse)
     {venv}/bin/sensor-gateway status -c {config}
     (without sudo for members of group {name}: usermod -aG {name} pi, then log in again)
  After editing the configuration: systemctl reload sensor-gateway
"""

NEXT_STEPS_UNINSTALL = """
Before (or after) this: systemctl disable --now sensor-gateway && systemctl daemon-reload
The user {name} stays (files may still belong to it); remove it with: userdel {name}
"""


def main(argv: list[str] | None = None) -> int:
    """``scripts/install-service [--dry-run] [--root DIR] [--uninstall [--purge]]``."""
    parser = argparse.ArgumentParser(
        prog="install-service", description="Install sensor-gateway as a systemd service."
    )
    parser.add_argument(
        "--root", type=Path, default=Path("/"), help="install under DIR (default /)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    parser.add_argument("--no-venv", action="store_true", help=f"leave {PREFIX}/.venv alone (already installed, or pipx)")  # fmt: skip
    parser.add_argument("--uninstall", action="store_true", help="remove the unit and the venv; keep configuration and spool")  # fmt: skip
    parser.add_argument("--purge", action="store_true", help="with --uninstall: also remove the configuration and the state directory (spool!)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.purge and not args.uninstall:
        parser.error("--purge goes with --uninstall")
    root = args.root.resolve()
    if root == Path("/") and not args.dry_run and os.geteuid() != 0:
        print("install-service: run it as root (or try --dry-run)", file=sys.stderr)
        return 1
    source = Path(__file__).resolve().parents[2]
    inst = Installer(source, root, venv=not args.no_venv)
    steps = inst.uninstall_steps(args.purge) if args.uninstall else inst.install_steps()
    for step in steps:
        print(("would " if args.dry_run else "") + step.says)
        if not args.dry_run:
            step.run()
    if args.uninstall:
        print(NEXT_STEPS_UNINSTALL.format(name=NAME))
    else:
        print(
            NEXT_STEPS.format(
                name=NAME,
                config=CONFIG_DIR / "gateway.toml",
                creds=CONFIG_DIR / "credentials",
                venv=PREFIX / ".venv",
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
