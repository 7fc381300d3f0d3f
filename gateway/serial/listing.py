"""``sensor-gateway ports``: the serial ports plugged in, with the ``port`` value to paste."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from gateway.serial.ports import PortInfo, permission_hint

__all__ = ["render_ports"]


def render_ports(ports: Sequence[PortInfo], as_json: bool = False) -> str:
    """Text (or JSON) listing ``ports`` with the most stable selector for each."""
    if as_json:
        rows = [
            {
                "device": p.device,
                "description": p.description,
                "vid": None if p.vid is None else f"{p.vid:04x}",
                "pid": None if p.pid is None else f"{p.pid:04x}",
                "serial_number": p.serial_number,
                "by_id": list(p.by_id),
                "by_path": list(p.by_path),
                "usb": p.usb,
                "port": p.selector(ports),
                "accessible": os.access(p.device, os.R_OK | os.W_OK),
            }
            for p in ports
        ]
        return json.dumps(rows, indent=2)
    if not ports:
        return (
            "no serial ports found; a USB adapter shows up here (and under "
            "/dev/serial/by-id/) a moment after it is plugged in"
        )
    blocks = []
    for p in ports:
        what = " ".join(
            part
            for part in (
                p.description,
                p.usb and f"[{p.usb}]",
                "(no serial number)" if p.usb and not p.serial_number else "",
            )
            if part
        )
        lines = [f"{p.device}  {what}".rstrip(), f'  port = "{p.selector(ports)}"']
        others = [n for n in (*p.by_id, *p.by_path, p.usb) if n and n != p.selector(ports)]
        if others:
            lines.append("  also: " + ", ".join(others))
        if p.usb and sum(1 for q in ports if q.usb == p.usb) > 1:
            lines.append(f"  {p.usb} matches more than one port here: use the name above")
        if not os.access(p.device, os.R_OK | os.W_OK):
            lines.append("  ! " + permission_hint(p.device))
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
