"""The gateway of ``bench/serial_fleet.py``: ``python bench/_serial_gateway.py CONFIG.json``.

The same ``run_gateway`` as ``sensor-gateway run``, with two drivers registered for the
benchmark: ``bench_polled``, the ``line`` driver polled with ``READ`` every
``poll_interval`` (no built-in polled driver speaks a protocol a pty can fake as cheaply),
and ``bench_null``, which reads and cuts lines but parses nothing (``--breakdown``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import ClassVar

# Run as a script from bench/: import the gateway from this checkout.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pydantic import Field  # noqa: E402

from devices.line import LineDriver, LineOptions  # noqa: E402
from gateway.cli import run_gateway  # noqa: E402
from gateway.config import config_from_dict  # noqa: E402
from gateway.driver import RawSample  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.options import Duration  # noqa: E402
from gateway.plugins import load_drivers  # noqa: E402


class PolledOptions(LineOptions):
    poll_interval: Duration = Field(default=0.1, gt=0, description="How often to send READ.")


class PolledLine(LineDriver):
    """``line`` frames, asked for with ``READ``."""

    Options: ClassVar[type[PolledOptions]] = PolledOptions  # type: ignore[assignment]

    def __init__(self, device: str, options: PolledOptions) -> None:
        super().__init__(device, options)
        self.poll_interval = options.poll_interval
        self.response_timeout = 0.08

    def request(self) -> bytes:
        return b"READ\n"


class NullLine(LineDriver):
    """Frames read and cut, nothing parsed or stored: the transport's share."""

    def parse(self, frame: bytes) -> list[RawSample]:
        return []


def main() -> int:
    data = json.loads(Path(sys.argv[1]).read_text())
    config = config_from_dict(
        data, drivers={**load_drivers(), "bench_polled": PolledLine, "bench_null": NullLine}
    )
    configure("warning", "json")
    profile = os.environ.get("BENCH_PROFILE")
    if not profile:
        return run_gateway(config)
    import cProfile

    profiler = cProfile.Profile()
    try:
        return int(profiler.runcall(run_gateway, config))
    finally:
        profiler.dump_stats(profile)


if __name__ == "__main__":
    sys.exit(main())
