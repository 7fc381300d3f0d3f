"""Which serial port a device means: path or USB match, resolved on every (re)open.

A device's ``port`` is either a path (``/dev/serial/by-id/…``, ``/dev/serial/by-path/…``,
``/dev/ttyUSB0``; a symlink is followed when the port is opened) or a USB match
``usb:VID:PID[:SERIAL]`` looked up with ``serial.tools.list_ports``. Both are resolved
again before each open, so a ``ttyUSB0 → ttyUSB1`` renumbering after a USB glitch does
not matter. Two ports matching one USB selector is an error listing both, with the
stable names to choose from, never a guess.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import pwd
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from gateway.errors import DeviceUnavailable

__all__ = [
    "DEV_SERIAL",
    "AmbiguousPort",
    "LineSettings",
    "PortInfo",
    "UsbSelector",
    "available_ports",
    "open_error",
    "parse_selector",
    "resolve_port",
]

# udev's stable names: by-id from the adapter's identity, by-path from the USB socket.
DEV_SERIAL: Final = Path("/dev/serial")

_USB: Final = re.compile(
    r"usb:(?P<vid>[0-9A-Fa-f]{4}):(?P<pid>[0-9A-Fa-f]{4})(?::(?P<serial>[^\s:]+))?"
)


@dataclass(frozen=True, slots=True)
class LineSettings:
    """How to open a port: speed, character framing, flow control."""

    baudrate: int = 9600
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 2] = 1
    rtscts: bool = False
    xonxoff: bool = False

    def __str__(self) -> str:
        flow = "".join(f" {name}" for name in ("rtscts", "xonxoff") if getattr(self, name))
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}{flow}"


@dataclass(frozen=True, slots=True)
class UsbSelector:
    """``usb:VID:PID[:SERIAL]``: any port of a USB adapter with these ids."""

    vid: int
    pid: int
    serial_number: str | None = None

    def matches(self, port: PortInfo) -> bool:
        return (
            port.vid == self.vid
            and port.pid == self.pid
            and (self.serial_number is None or port.serial_number == self.serial_number)
        )

    def __str__(self) -> str:
        tail = f":{self.serial_number}" if self.serial_number else ""
        return f"usb:{self.vid:04x}:{self.pid:04x}{tail}"


def parse_selector(port: str) -> str | UsbSelector:
    """A path (returned as is) or a :class:`UsbSelector`; ValueError if malformed."""
    if not port.startswith("usb:"):
        return port
    match = _USB.fullmatch(port)
    if match is None:
        msg = (
            f'"{port}" is not a USB match; write usb:VID:PID or usb:VID:PID:SERIAL with '
            'hexadecimal ids, e.g. "usb:1a86:7523" (`sensor-gateway ports` lists them)'
        )
        raise ValueError(msg)
    return UsbSelector(int(match["vid"], 16), int(match["pid"], 16), match["serial"])


@dataclass(frozen=True, slots=True)
class PortInfo:
    """A serial port that is plugged in, with its stable names."""

    device: str
    description: str = ""
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    by_id: tuple[str, ...] = ()
    by_path: tuple[str, ...] = ()
    other_names: tuple[str, ...] = field(default=(), compare=False)

    @property
    def usb(self) -> str | None:
        """``usb:VID:PID[:SERIAL]`` for a USB adapter, else None."""
        if self.vid is None or self.pid is None:
            return None
        return str(UsbSelector(self.vid, self.pid, self.serial_number or None))

    def selector(self, ports: Sequence[PortInfo] = ()) -> str:
        """The most stable ``port`` value for this port among ``ports``.

        by-id when the adapter has a serial number (its name survives moving it to
        another socket), else by-path (CH340-type adapters have no serial number, so
        their by-id names collide; by-path names the USB socket), else the device path.
        """
        usb = self.usb
        clash = usb is not None and sum(1 for p in ports if p.usb == usb) > 1
        if self.by_id and self.serial_number and not clash:
            return self.by_id[0]
        if self.by_path:
            return self.by_path[0]
        if self.by_id:
            return self.by_id[0]
        return self.device

    def names(self) -> str:
        """Every name of this port, for error messages."""
        return ", ".join((self.device, *self.by_path, *self.by_id))


class AmbiguousPort(DeviceUnavailable):
    """A USB selector matches more than one port; the message lists them."""


def _links(directory: Path) -> dict[str, list[str]]:
    """realpath → the symlinks in ``directory`` pointing at it."""
    out: dict[str, list[str]] = {}
    with contextlib.suppress(OSError):
        for entry in sorted(directory.iterdir()):
            out.setdefault(os.path.realpath(entry), []).append(str(entry))
    return out


def available_ports(dev_serial: Path = DEV_SERIAL) -> list[PortInfo]:
    """The serial ports plugged in now (blocking: it reads sysfs; run it off the loop)."""
    from serial.tools import list_ports  # imported on demand: it scans at import on some OSes

    by_id = _links(dev_serial / "by-id")
    by_path = _links(dev_serial / "by-path")
    ports = []
    for info in list_ports.comports():
        real = os.path.realpath(info.device)
        ports.append(
            PortInfo(
                device=info.device,
                description=info.description if info.description != "n/a" else "",
                vid=info.vid,
                pid=info.pid,
                serial_number=info.serial_number,
                by_id=tuple(by_id.get(real, ())),
                by_path=tuple(by_path.get(real, ())),
            )
        )
    return sorted(ports, key=lambda p: p.device)


def find_port(selector: str | UsbSelector, ports: Iterable[PortInfo] | None = None) -> str:
    """The device path ``selector`` means now (blocking; see :func:`resolve_port`)."""
    if isinstance(selector, str):
        return selector
    candidates = list(available_ports() if ports is None else ports)
    found = [p for p in candidates if selector.matches(p)]
    if len(found) == 1:
        return found[0].device
    if not found:
        plugged = ", ".join(p.usb or p.device for p in candidates) or "none"
        msg = f"no serial port matches {selector} (plugged in: {plugged})"
        raise DeviceUnavailable(msg)
    listed = "; ".join(f"{p.device} ({p.selector(found)})" for p in found)
    hint = (
        "add the serial number (usb:VID:PID:SERIAL)"
        if all(p.serial_number for p in found)
        and len({p.serial_number for p in found}) == len(found)
        else "these adapters have no serial number to tell them apart: use the by-path name of the socket"
    )
    msg = f"{len(found)} serial ports match {selector}: {listed}; {hint}"
    raise AmbiguousPort(msg)


async def resolve_port(port: str, ports: Iterable[PortInfo] | None = None) -> str:
    """The device path for a device's ``port`` option, looked up now (off the loop)."""
    selector = parse_selector(port)
    if isinstance(selector, str):
        return selector
    return await asyncio.to_thread(find_port, selector, ports)


def open_error(path: str, err: BaseException) -> str:
    """Why a port could not be opened, in words a user can act on."""
    code = getattr(err, "errno", None)
    text = str(err)
    if code == errno.EACCES:
        detail = permission_hint(path)
    elif code == errno.ENOENT:
        detail = f"it does not exist (unplugged, or another name?): {text}"
    elif code in (errno.EBUSY, errno.EAGAIN) or "lock" in text.lower():
        detail = f"it is in use by another program (opened exclusively): {text}"
    else:
        detail = text
    return f"cannot open serial port {path}: {detail}"


def permission_hint(path: str) -> str:
    """The permission-denied message: which group to join, and how."""
    user = _user_name(os.geteuid())
    try:
        gid = os.stat(path).st_gid
        group = grp.getgrgid(gid).gr_name
    except (OSError, KeyError):
        group = "dialout"
    return (
        f"permission denied: user {user} may not use it; the port belongs to group "
        f'"{group}": add the user to it (sudo usermod -aG {group} {user}) and restart the '
        "gateway (a new group applies to new logins and service starts only)"
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
