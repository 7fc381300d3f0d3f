"""The unit catalog: which unit each device's fields are stored in.

Line protocol has no place for units, so InfluxDB never learns them. The gateway
keeps them instead, per device and field, in ``units.json`` in the state directory
(beside the spool and the local store), where ``query`` reads them for its column
headers whatever the source. Units come from the driver (``Driver.units``), from the
device config (``fields.<name>.unit`` / ``to_unit``) and from discovery.

A device removed from the config keeps its entry: its readings are still stored.
The file is small (one line per device) and rewritten only when a unit changes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

__all__ = ["UNITS_FILE", "UnitCatalog", "read_units"]

UNITS_FILE = "units.json"


def read_units(state_dir: Path) -> dict[str, dict[str, str]]:
    """Device → field → unit, as the gateway last saved them; empty when there is no
    catalog yet (or it cannot be read: units are a label, never worth an error)."""
    try:
        data = json.loads((state_dir / UNITS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        str(device): {str(k): str(v) for k, v in fields.items()}
        for device, fields in data.items()
        if isinstance(fields, dict)
    }


class UnitCatalog:
    """The in-memory catalog; the gateway writes its :meth:`snapshot` when it changed
    (``gateway.service.statefile.save_snapshot``)."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.path = state_dir / UNITS_FILE if state_dir is not None else None
        self.units: dict[str, dict[str, str]] = read_units(state_dir) if state_dir else {}
        self.changed = False

    def set_device(self, device: str, units: Mapping[str, str]) -> None:
        """Record ``device``'s units (fields it no longer declares keep their last one)."""
        known = self.units.setdefault(device, {})
        for field_name, unit in units.items():
            if known.get(field_name) != unit:
                known[field_name] = unit
                self.changed = True
        if not known:
            del self.units[device]

    def snapshot(self) -> bytes | None:
        """The file's new content when the catalog changed since the last snapshot."""
        if not self.changed or self.path is None:
            return None
        self.changed = False
        return json.dumps(self.units, indent=1, sort_keys=True, ensure_ascii=False).encode()
