"""Spool ingest: readings/s committed on one core, and disk bytes per reading.

The process is pinned to one CPU. A producer on the event loop calls ``Spool.add()`` with
realistic lines (the W1 line: 3 float fields, a device tag, ns timestamp) as fast as it
can for ``--seconds`` (5), yielding to the loop every 1,000 lines, while
``Spool.run_commits()`` group-commits at the default 200 ms window (early at 20,000
pending lines) on the spool's thread. Committed readings/s = ``stats.committed`` at the
end of the window ÷ the window.

Disk per reading: after closing the spool (SQLite checkpoints the WAL on close), the size
of spool.db plus any -wal ÷ readings committed. Goal: ≤ 64 B.

    python bench/spool_ingest.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_seconds, line_of, use_test_helpers, wait_quiet, write_result

use_test_helpers()

from gateway.delivery.spool import EARLY_COMMIT_LINES, Spool  # noqa: E402
from gateway.logging import configure  # noqa: E402

GOAL_BYTES = 64
DEVICES = 100


async def ingest(path: Path, seconds: float, pool: list[str], bounded: bool) -> dict[str, Any]:
    spool = Spool(path, ["influxdb"])
    await spool.open()
    commits = asyncio.create_task(spool.run_commits())
    added = 0
    n = len(pool)
    cpu0 = cpu_seconds()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    add = spool.add
    add_s = 0.0
    max_pending = 0
    while time.perf_counter() < deadline:
        if bounded and spool.pending >= EARLY_COMMIT_LINES:
            # A commit is due or running: let the spool thread have the core.
            await asyncio.sleep(0.0005)
            continue
        a0 = time.perf_counter()
        for j in range(added, added + 1000):
            add(pool[j % n])
        add_s += time.perf_counter() - a0
        added += 1000
        max_pending = max(max_pending, spool.pending)
        await asyncio.sleep(0)
    t_end = time.perf_counter()
    committed_in_window = spool.stats.committed
    commits_in_window = spool.stats.commits
    cpu_window = cpu_seconds() - cpu0
    pending_at_end = spool.pending
    commits.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await commits
    await spool.commit()
    total = spool.stats.committed
    await spool.close()
    window = t_end - t0
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return {
        "producer": "bounded" if bounded else "free",
        "max_pending": max_pending,
        "window_s": round(window, 3),
        "added": added,
        "committed_in_window": committed_in_window,
        "commits_in_window": commits_in_window,
        "pending_at_end_of_window": pending_at_end,
        "committed_per_s": round(committed_in_window / window),
        "added_per_s": round(added / window),
        "add_us_per_reading": round(add_s / added * 1e6, 3),
        "cpu_s_in_window": round(cpu_window, 3),
        "cpu_us_per_committed_reading": round(cpu_window / max(committed_in_window, 1) * 1e6, 2),
        "readings_on_disk": total,
        "disk_bytes": size,
        "disk_bytes_per_reading": round(size / total, 1),
        "line_bytes": round(sum(len(x) for x in pool[:10_000]) / 10_000, 1),
    }


async def bytes_per_reading(path: Path, chunk: int, pool: list[str], readings: int) -> float:
    """Disk bytes per reading when every commit holds ``chunk`` lines."""
    spool = Spool(path, ["influxdb"])
    await spool.open()
    for base in range(0, readings, chunk):
        spool.add_many(pool[base : base + chunk])
        await spool.commit()
    await spool.close()
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return round(size / readings, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--cpu", type=int, default=0, help="the core to pin to")
    args = ap.parse_args()
    configure("warning", "console")
    quiet = wait_quiet()
    os.sched_setaffinity(0, {args.cpu})
    start_ns = time.time_ns() - 3600 * 10**9
    # Distinct lines (1 ms apart per device), generated before the clock starts.
    pool = [line_of(i, i % DEVICES, start_ns + (i // DEVICES) * 10**6) for i in range(400_000)]
    runs: dict[str, dict[str, Any]] = {}
    chunks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-spool-", dir=Path(__file__).parent) as tmp:
        for bounded in (True, False):
            name = "bounded" if bounded else "free"
            r = runs[name] = asyncio.run(
                ingest(Path(tmp) / f"{name}.db", args.seconds, pool, bounded)
            )
            print(
                f"{name} producer, 1 core: {r['committed_per_s']:,} readings/s committed "
                f"({r['commits_in_window']} commits in {r['window_s']} s, up to "
                f"{r['max_pending']:,} pending; add() {r['add_us_per_reading']} µs; "
                f"{r['cpu_us_per_committed_reading']} µs CPU per committed reading)"
            )
            print(
                f"  disk: {r['disk_bytes']:,} B for {r['readings_on_disk']:,} readings = "
                f"{r['disk_bytes_per_reading']} B/reading (goal ≤ {GOAL_BYTES}; a line is "
                f"{r['line_bytes']} B)"
            )
        # Readings per commit = rate × 0.2 s: 100/s gives 20-line chunks.
        for chunk in (20, 200, 1000, 5000, 20_000):
            n = min(len(pool), chunk * 1000)
            chunks[chunk] = asyncio.run(
                bytes_per_reading(Path(tmp) / f"chunk{chunk}.db", chunk, pool, n)
            )
        print(
            "disk B/reading by lines per commit: "
            + ", ".join(f"{c}: {b}" for c, b in chunks.items())
        )
    write_result("spool_ingest", {"machine_load": quiet, "goal_bytes_per_reading": GOAL_BYTES,
                                  "runs": runs, "bytes_per_reading_by_chunk": chunks})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
