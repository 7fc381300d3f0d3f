"""``discovered.json`` in the state directory: the discovery configs the gateway accepted.

Publishers do not always retain their configs, so the gateway keeps each accepted
config message (topic and payload, per broker) and replays them at start; an empty
config payload removes its topic from the file. Beside them, a short description of
each discovered device for ``sensor-gateway drivers``. Rewritten (atomically) only when
something changed, off the event loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DISCOVERED_FILE", "DiscoveredStore", "read_discovered"]

DISCOVERED_FILE = "discovered.json"


def read_discovered(state_dir: Path) -> dict[str, Any]:
    """``{"configs": {broker: {topic: payload}}, "devices": {broker: {name: info}}}``;
    empty parts when the file is missing or unreadable."""
    try:
        data = json.loads((state_dir / DISCOVERED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    out: dict[str, Any] = {"configs": {}, "devices": {}}
    for part in ("configs", "devices"):
        body = data.get(part)
        if isinstance(body, dict):
            out[part] = {str(b): v for b, v in body.items() if isinstance(v, dict)}
    return out


class DiscoveredStore:
    """The in-memory copy; :meth:`snapshot` gives the file's new content when changed."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / DISCOVERED_FILE if state_dir is not None else None
        loaded = read_discovered(state_dir) if state_dir is not None else {}
        self.configs: dict[str, dict[str, str]] = {
            broker: {str(t): p for t, p in topics.items() if isinstance(p, str)}
            for broker, topics in loaded.get("configs", {}).items()
        }
        self.devices: dict[str, dict[str, Any]] = {}
        self.changed = False

    def put_config(self, broker: str, topic: str, payload: str | None) -> None:
        """Keep (or, with None, forget) one config message."""
        self._put(self.configs.setdefault(broker, {}), topic, payload)

    def put_device(self, broker: str, name: str, info: dict[str, Any] | None) -> None:
        """Describe (or, with None, forget) one discovered device."""
        self._put(self.devices.setdefault(broker, {}), name, info)

    def _put(self, table: dict[str, Any], key: str, value: Any) -> None:
        if value is None:
            if table.pop(key, None) is not None:
                self.changed = True
        elif table.get(key) != value:
            table[key] = value
            self.changed = True

    def snapshot(self) -> bytes | None:
        """The file's new content when something changed since the last snapshot."""
        if not self.changed or self.path is None:
            return None
        self.changed = False
        doc = {"version": 1, "configs": self.configs, "devices": self.devices}
        return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False).encode()
