"""The gateway's own per-message cost, in process, without a broker or a server.

The W1 messages (bench/_publisher.py) are fed as (topic, payload) straight into
``MqttHub._dispatch`` of 100 configured ``json`` devices, i.e. everything the gateway does
per message after the MQTT client handed it over: routing, decode, normalize, field
types, line protocol, ``Spool.add``. Then each stage alone on the same inputs, and the
per-reading share of the work done per batch (spool commit, the sink's body + gzip).
ROADMAP W1 leaves ~10 µs per reading for this part.

    python bench/hotpath.py
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import per_item_us, use_test_helpers, wait_quiet, write_result
from _publisher import build

use_test_helpers()

from gateway.config import config_from_dict  # noqa: E402
from gateway.delivery.spool import Spool  # noqa: E402
from gateway.driver import MqttDriver  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.mqtt.hub import MqttHub  # noqa: E402
from gateway.pipeline.fieldtypes import FieldTypes  # noqa: E402
from gateway.pipeline.intake import Pipeline  # noqa: E402
from gateway.pipeline.lineprotocol import encode  # noqa: E402

BUDGET_US = 10.0


async def measure(tmp: Path, n: int, devices: int) -> dict[str, Any]:
    config = config_from_dict({
        "gateway": {"state_dir": str(tmp), "clock_sync_check": False},
        "brokers": {"default": {"host": "127.0.0.1"}},
        "devices": {
            f"sensor-{i}": {"driver": "json", "topics": [f"bench/sensor-{i}/state"], "qos": 0,
                            "time_field": "ts", "measurement": "bench"}
            for i in range(devices)
        },
    })  # fmt: skip
    spool = Spool(tmp / "spool.db", ["influxdb"])
    await spool.open()
    pipeline = Pipeline(spool)
    hub = MqttHub("default", config.brokers["default"])
    drivers: dict[str, MqttDriver[Any]] = {}
    for name, spec in config.devices.items():
        driver = spec.build_driver()
        assert isinstance(driver, MqttDriver)
        drivers[f"bench/{name}/state"] = driver
        hub.add_device(driver, pipeline.device(name, spec.section))
    raw = build(n, devices, "bench")

    def dispatch_all() -> None:
        for t, p in raw:
            hub._dispatch(t, p)
        spool._pending.clear()

    stages: dict[str, float] = {"whole per-message path (MqttHub._dispatch)": per_item_us(
        dispatch_all, n)}  # fmt: skip

    # The stages alone, each on the previous stage's output.
    samples = [next(iter(drivers[t].decode(t, p))) for t, p in raw]
    entries = [pipeline.devices[t.split("/")[1]] for t, _ in raw]

    def decode_all() -> None:
        for t, p in raw:
            drivers[t].decode(t, p)

    now = time.time_ns()
    readings = [e.normalizer.apply(s, now).reading for e, s in zip(entries, samples, strict=True)]

    def normalize_all() -> None:
        for e, s in zip(entries, samples, strict=True):
            e.normalizer.apply(s, now)

    types = FieldTypes()

    def types_all() -> None:
        for r in readings:
            assert r is not None
            types.check(r)

    def encode_all() -> None:
        for r in readings:
            assert r is not None
            encode(r)

    lines = [encode(r) for r in readings if r is not None]

    def add_all() -> None:
        add = spool.add
        for line in lines:
            add(line)
        spool._pending.clear()

    import json

    def json_loads_only() -> None:
        loads = json.loads
        for _, p in raw:
            loads(p)

    stages["  json driver decode"] = per_item_us(decode_all, n)
    stages["    of which json.loads alone"] = per_item_us(json_loads_only, n)
    stages["  normalize"] = per_item_us(normalize_all, n)
    stages["  field types"] = per_item_us(types_all, n)
    stages["  line protocol encode"] = per_item_us(encode_all, n)
    stages["  spool.add"] = per_item_us(add_all, n)

    # Work done per batch, per reading.
    batch = lines[:5000]
    body = "\n".join(batch).encode()

    def commit_batches() -> None:
        for i in range(0, len(lines), 5000):
            zlib.compress("\n".join(lines[i : i + 5000]).encode("utf-8"), 1)

    per_batch: dict[str, float] = {
        "spool commit: join + zlib level 1 (spool thread)": per_item_us(commit_batches, len(lines)),
    }

    def sink_bodies(level: int) -> Callable[[], None]:
        def run() -> None:
            for _ in range(4):
                gzip.compress("\n".join(batch).encode(), level)

        return run

    for level in (9, 6, 1):
        per_batch[f"sink body: join + encode + gzip level {level}"] = per_item_us(
            sink_bodies(level), 4 * len(batch)
        )
    sizes = {lvl: len(gzip.compress(body, lvl)) for lvl in (1, 6, 9)}
    await spool.close()
    return {
        "messages": n,
        "devices": devices,
        "us_per_message": {k: round(v, 2) for k, v in stages.items()},
        "us_per_reading_batch_work": {k: round(v, 2) for k, v in per_batch.items()},
        "gzip_bytes_per_5000_lines": {
            "raw": len(body),
            **{f"level {k}": v for k, v in sizes.items()},
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--devices", type=int, default=100)
    args = ap.parse_args()
    configure("warning", "console")
    quiet = wait_quiet()
    with tempfile.TemporaryDirectory(prefix="bench-hotpath-") as tmp:
        r = asyncio.run(measure(Path(tmp), args.messages, args.devices))
    print(f"per message, µs (budget for the gateway's own part ≈ {BUDGET_US:g} µs):")
    for k, v in r["us_per_message"].items():
        print(f"  {v:7.2f}  {k}")
    print("per reading, work done per 5000-line batch, µs:")
    for k, v in r["us_per_reading_batch_work"].items():
        print(f"  {v:7.2f}  {k}")
    print(f"gzip sizes of a 5000-line body: {r['gzip_bytes_per_5000_lines']}")
    write_result("hotpath", {"machine_load": quiet, "budget_us": BUDGET_US, **r})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
