"""The installed unit under a real systemd: start, status, journald priorities, reload,
an invalid reload, a watchdog restart, stop.

No systemd runs on the build machine, so this boots one: ``systemd-nspawn --volatile=yes
-b`` on the host's own ``/usr`` (a throw-away root in RAM, private network), into a
target that runs only the driver script below. ``scripts/install-service`` installs into
a directory bound into the container at the same path (the venv's scripts name it),
outside ``/tmp`` because the unit's ``PrivateTmp=`` hides the host's ``/tmp``.

Not covered here: serial ports under ``DevicePolicy=closed`` (a pseudo-terminal is not
one of the allowed device classes, and a container has no USB adapter), and the unit's
own system-call filter on ``adjtimex`` (nspawn refuses it to the whole container).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent

CONFIG = """\
[gateway]
clock_sync_check = true

[sinks.influxdb]
url = "http://127.0.0.1:1"
org = "o"
bucket = "b"
token_file = "${CREDENTIALS_DIRECTORY}/influx-token"

[sinks.local]
enabled = true
"""

# Runs inside the container as e2e.service; writes "key: value" lines to /results/e2e.txt.
DRIVER = r"""#!/bin/bash
R=/results/e2e.txt
say() { echo "$1: $2" >> $R; }
wait_for() { for _ in $(seq 1 150); do eval "$1" && return 0; sleep 0.2; done; return 1; }
unit=sensor-gateway
say user "$(getent passwd sensor-gateway | cut -d: -f1,6,7)"
unsynced() { python3 -c 'import json; print(json.load(open("/run/sensor-gateway/status.json"))["clock_unsynced"])'; }
# systemd-timesyncd running, clock not synchronized yet (adjtimex is refused in here).
mkdir -p /run/systemd/timesync
systemctl start $unit; say start_rc $?
say active "$(systemctl is-active $unit)"
say status_text "$(systemctl show -p StatusText --value $unit)"
pid=$(systemctl show -p MainPID --value $unit)
say credential "$(journalctl -u $unit -o cat | grep -c 'token from token_file')"
wait_for "[ -e /run/sensor-gateway/status.json ]"
say unsynced_at_start "$(unsynced)"
# `status` over the socket: a user in group sensor-gateway needs no sudo; others are told.
useradd -M -G sensor-gateway pi && useradd -M guest
as() { setpriv --reuid="$(id -u "$1")" --regid="$(id -g "$1")" --init-groups -- env HOME=/ /opt/sensor-gateway/.venv/bin/sensor-gateway status -c /etc/sensor-gateway/gateway.toml "${@:2}" 2>&1; echo "rc=$?"; }
say socket "$(stat -c '%a %U:%G' /run/sensor-gateway/status.sock)"
say status_pi "$(as pi --json | python3 -c 'import json, sys; t = sys.stdin.read(); print(json.loads(t.rsplit("rc=", 1)[0])["running"], t.rsplit("rc=", 1)[1].strip())')"
say status_guest "$(as guest | tr '\n' ' ')"
cat >> /etc/sensor-gateway/gateway.toml <<'TOML'

[devices.added]
driver = "line"
port = "/dev/ttyUSB9"
TOML
systemctl reload $unit; say reload_rc $?
wait_for "journalctl -u $unit -o cat | grep -q 'configuration reloaded'"
say reloaded "$(journalctl -u $unit -o cat | grep -c '"added": \["added"\]')"
say same_pid "$([ "$(systemctl show -p MainPID --value $unit)" = "$pid" ] && echo yes || echo no)"
echo 'nonsense = [' >> /etc/sensor-gateway/gateway.toml
systemctl reload $unit
wait_for "journalctl -u $unit -o cat | grep -q 'configuration reload rejected'"
say rejected "$(journalctl -u $unit -o cat | grep -c 'configuration reload rejected')"
say active_after_invalid "$(systemctl is-active $unit)"
sed -i '$ d' /etc/sensor-gateway/gateway.toml  # valid again for the restart below
say all_lines "$(journalctl -u $unit -o cat | grep -c '^{')"
say warning_lines "$(journalctl -u $unit -p warning -o cat | grep -c '^{')"
say info_in_warning "$(journalctl -u $unit -p warning -o cat | grep -c '"level": "info"')"
say err_has_problem "$(journalctl -u $unit -p err -o cat | grep -c 'configuration problem')"
touch /run/systemd/timesync/synchronized  # the restarted process sees a set clock
[ -n "$pid" ] && [ "$pid" != 0 ] && kill -STOP "$pid"
wait_for "[ \$(systemctl show -p NRestarts --value $unit) -ge 1 ]"
wait_for "[ \"\$(systemctl is-active $unit)\" = active ]"
say nrestarts "$(systemctl show -p NRestarts --value $unit)"
say watchdog "$(journalctl -u $unit -o cat | grep -c 'Watchdog timeout')"
say new_pid "$([ "$(systemctl show -p MainPID --value $unit)" != "$pid" ] && echo yes || echo no)"
sleep 2.5  # a fresh status.json
say unsynced_after_sync "$(unsynced)"
systemctl stop $unit; say stop_rc $?
say status_pi_stopped "$(as pi | head -3 | tr '\n' '|')"
say result "$(systemctl show -p Result --value $unit) $(systemctl show -p ExecMainStatus --value $unit)"
say stopped "$(journalctl -u $unit -o cat | grep -c 'gateway stopped')"
say security "$(systemd-analyze security $unit 2>&1 | tail -1)"
journalctl -u $unit -o short-precise > /results/journal.txt
systemctl poweroff
"""


def _units(sys_dir: Path, installed: Path) -> None:
    unit = (installed / "etc/systemd/system/sensor-gateway.service").read_text()
    (sys_dir / "sensor-gateway.service").write_text(unit)
    dropin = sys_dir / "sensor-gateway.service.d"
    dropin.mkdir()
    # A short watchdog and restart delay, so the test does not wait 30 s.
    (dropin / "e2e.conf").write_text("[Service]\nWatchdogSec=3\nRestartSec=1\n")
    (sys_dir / "e2e.service").write_text(
        "[Unit]\nDescription=sensor-gateway end-to-end driver\n"
        "[Service]\nType=oneshot\nExecStart=/e2e/driver.sh\n"
    )
    # network-online.target would wait for links a private network never configures.
    (sys_dir / "systemd-networkd-wait-online.service").symlink_to("/dev/null")
    (sys_dir / "e2e.target").write_text(
        "[Unit]\nDescription=only the end-to-end driver\n"
        "Requires=basic.target e2e.service\nAfter=basic.target\n"
    )


def _boot(cmd: list[str], timeout: float = 300.0) -> str:
    """Run the container to its poweroff; on a timeout halt it (SIGTERM to nspawn stops
    the container cleanly; a killed nspawn would leave it running)."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for _ in range(2):
            proc.terminate()
            try:
                return proc.communicate(timeout=60)[0]
            except subprocess.TimeoutExpired:
                continue
        raise


@pytest.fixture
def workdir() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("booting systemd in a container needs root, as CI runs")
    if shutil.which("systemd-nspawn") is None:
        pytest.fail("systemd-nspawn missing: scripts/setup --test installs systemd-container")
    path = Path(tempfile.mkdtemp(prefix="sgw-e2e-", dir="/srv"))
    path.chmod(0o755)  # the service's user runs the venv's python from in here
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_installed_unit_under_a_real_systemd(workdir: Path) -> None:
    installed = workdir / "root"
    out = subprocess.run(
        ["/usr/bin/python3", str(ROOT / "gateway/service/install.py"), "--root", str(installed)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    sys_dir, results, etc = workdir / "sys", workdir / "results", workdir / "etc"
    for d in (sys_dir, results):
        d.mkdir()
    _units(sys_dir, installed)
    shutil.copytree(installed / "etc/sensor-gateway", etc)
    (etc / "gateway.toml").write_text(CONFIG)
    (etc / "gateway.toml").chmod(0o644)  # the group id differs inside the container
    (etc / "credentials/influx-token").write_text("e2e-token\n")
    (workdir / "driver.sh").write_text(DRIVER)
    (workdir / "driver.sh").chmod(0o755)
    output = _boot(
        [
            "systemd-nspawn",
            "-D",
            "/",
            "--volatile=yes",
            "--private-network",
            "--register=no",
            "--keep-unit",
            f"--bind={sys_dir}:/etc/systemd/system",
            f"--bind-ro={installed}/etc/sysusers.d:/etc/sysusers.d",
            f"--bind={etc}:/etc/sensor-gateway",
            f"--bind-ro={installed}/opt/sensor-gateway:/opt/sensor-gateway",
            f"--bind-ro={workdir}:{workdir}",
            f"--bind-ro={workdir}:/e2e",
            f"--bind={results}:/results",
            "-b",
            "systemd.firstboot=off",
            "systemd.unit=e2e.target",
        ]
    )
    report = results / "e2e.txt"
    assert report.exists(), output[-5000:]
    got = dict(line.split(": ", 1) for line in report.read_text().splitlines() if ": " in line)
    journal = (results / "journal.txt").read_text() if (results / "journal.txt").exists() else ""
    why = f"{got}\n--- journal ---\n{journal[:6000]}"
    assert got["user"] == "sensor-gateway:/var/lib/sensor-gateway:/usr/sbin/nologin", why
    # ProtectClock= refuses adjtimex; systemd-timesyncd's flag answers instead.
    assert got["unsynced_at_start"] == "True", why
    assert got["unsynced_after_sync"] == "False", why
    # The status socket under the hardened unit, asked without sudo.
    assert got["socket"] == "660 sensor-gateway:sensor-gateway", why
    assert got["status_pi"] == "True 0", why
    assert got["status_guest"] == (
        "sensor-gateway: permission denied on /run/sensor-gateway/status.sock: it is open "
        'to group "sensor-gateway" only; join it: sudo usermod -aG sensor-gateway guest, '
        "then log in again rc=1 "
    ), why
    assert got["start_rc"] == "0", why
    assert got["active"] == "active", why
    assert got["status_text"].startswith("0/0 devices up"), why
    assert got["credential"] == "1", why  # the token came from $CREDENTIALS_DIRECTORY
    assert got["reload_rc"] == "0", why
    assert got["reloaded"] == "1", why
    assert got["same_pid"] == "yes", why
    assert got["rejected"] == "1", why
    assert got["active_after_invalid"] == "active", why
    assert 0 < int(got["warning_lines"]) < int(got["all_lines"]), why
    assert got["info_in_warning"] == "0", why
    assert int(got["err_has_problem"]) >= 1, why
    assert got["nrestarts"] == "1", why
    assert got["watchdog"] == "1", why
    assert got["new_pid"] == "yes", why
    assert got["stop_rc"] == "0", why
    stopped = got["status_pi_stopped"].split("|")
    assert stopped[0] == (
        "sensor-gateway is not running (nothing listens on /run/sensor-gateway/status.sock)"
    ), why
    assert stopped[1].startswith("last known spool ("), why
    assert got["result"] == "success 0", why
    assert int(got["stopped"]) >= 1, why
    # Online (the loaded unit) as offline: the figure systemd/README.md states.
    figure = re.search(r"\*\*(\d\.\d OK)\*\*", (ROOT / "systemd/README.md").read_text())
    assert figure is not None
    assert f"sensor-gateway.service: {figure.group(1)}" in got["security"], why
