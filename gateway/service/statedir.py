"""The user's own state directory, for running the gateway by hand.

The service keeps its state in ``/var/lib/sensor-gateway``. A normal user who runs
``sensor-gateway run`` without ``gateway.state_dir`` cannot write there; rather than
fail with "Permission denied", the gateway then uses ``$XDG_STATE_HOME/sensor-gateway``
(``~/.local/state/sensor-gateway`` by default) and says so when it starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def user_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/sensor-gateway``; a relative XDG path is ignored, as the spec says."""
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "sensor-gateway"
