"""`sensor-gateway ports`: what is plugged in, with the selector to paste."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from serial.tools import list_ports

from gateway.serial.listing import render_ports
from gateway.serial.ports import PortInfo, available_ports
from gateway.testing import SerialPty

ROOT = Path(__file__).resolve().parent.parent


def _fake_adapters(a: str, b: str, c: str) -> list[PortInfo]:
    """FAKE list_ports entries (no USB adapter here) whose devices are real ptys."""
    return [
        PortInfo(a, "USB Serial", 0x1A86, 0x7523, None, by_path=("/dev/serial/by-path/p-1.1",)),
        PortInfo(b, "USB Serial", 0x1A86, 0x7523, None, by_path=("/dev/serial/by-path/p-1.2",)),
        PortInfo(
            c,
            "FT232R USB UART",
            0x0403,
            0x6001,
            "A50285BI",
            by_id=("/dev/serial/by-id/usb-FTDI_FT232R-if00-port0",),
            by_path=("/dev/serial/by-path/p-1.3",),
        ),
    ]


def test_the_listing_suggests_the_stable_name_and_warns_of_twins(
    virtual_port: Callable[[], SerialPty],
) -> None:
    a, b, c = (virtual_port().path for _ in range(3))
    text = render_ports(_fake_adapters(a, b, c))
    blocks = text.split("\n\n")
    assert len(blocks) == 3
    assert f"{a}  USB Serial [usb:1a86:7523] (no serial number)" in blocks[0]
    assert 'port = "/dev/serial/by-path/p-1.1"' in blocks[0]
    assert "usb:1a86:7523 matches more than one port here" in blocks[0]
    assert 'port = "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0"' in blocks[2]
    assert "also: /dev/serial/by-path/p-1.3, usb:0403:6001:A50285BI" in blocks[2]
    assert "more than one" not in blocks[2]
    rows = json.loads(render_ports(_fake_adapters(a, b, c), as_json=True))
    assert [r["port"] for r in rows] == [
        "/dev/serial/by-path/p-1.1",
        "/dev/serial/by-path/p-1.2",
        "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0",
    ]
    assert rows[2]["vid"] == "0403"
    assert rows[2]["accessible"] is True


def test_a_port_the_user_may_not_open_says_which_group_to_join(
    virtual_port: Callable[[], SerialPty],
) -> None:
    """Listed by a process without CAP_DAC_OVERRIDE (as root, access() allows anything)."""
    pty = virtual_port()
    os.chown(pty.path, 4242, 20)  # another user's, group dialout
    os.chmod(pty.path, 0o660)
    script = (
        "import sys\n"
        "from gateway.serial.listing import render_ports\n"
        "from gateway.serial.ports import PortInfo\n"
        "print(render_ports([PortInfo(sys.argv[1])]))\n"
    )
    drop = "-dac_override,-dac_read_search"
    out = subprocess.run(
        [
            "setpriv",
            f"--bounding-set={drop}",
            f"--inh-caps={drop}",
            sys.executable,
            "-c",
            script,
            pty.path,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "  ! permission denied: user " in out
    assert 'group "dialout"' in out


def test_stable_names_come_from_the_udev_links(tmp_path: Path) -> None:
    real = [p.device for p in list_ports.comports()]
    assert real, "list_ports finds no port at all here"
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-path").mkdir()
    link = tmp_path / "by-path" / "platform-serial8250-port0"
    link.symlink_to(real[0])
    found = {p.device: p for p in available_ports(tmp_path)}
    assert found[real[0]].by_path == (str(link),)
    assert found[real[0]].selector(list(found.values())) == str(link)


def test_the_ports_command_runs() -> None:
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "sensor-gateway"), "ports"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert 'port = "' in out or "no serial ports found" in out
