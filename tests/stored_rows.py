"""What a gateway stored in its local store, one dict per field value, for driver tests.

Read through the query API, not the ``query`` command, whose output is meant for people
and scripts and may change shape; tests want exact times and tags apart from fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.query import QueryRequest, run_query


def stored_rows(state_dir: Path, device: str | None = None) -> list[dict[str, Any]]:
    """Every stored value: ``time_ns``, ``measurement``, ``device``, ``field``, ``value``
    and ``tags`` (without the device tag), oldest first."""
    rows = run_query(state_dir / "readings.db", QueryRequest(device=device, limit=None))
    return [
        {
            "time_ns": r.time_ns,
            "measurement": r.measurement,
            "device": r.device,
            "field": r.field,
            "value": r.value,
            "tags": {k: v for k, v in sorted(r.tags.items()) if k != "device"},
        }
        for r in rows
    ]
