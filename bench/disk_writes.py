"""Disk writes at a steady 100 readings/s with the default 200 ms commit window (SD-card wear).

Runs the spool in this process for ``--seconds`` (25) per configuration, a producer adding
one realistic line every 10 ms, after a 3 s warm-up:

* ``spool``: the spool alone (no sink, its cursor never moves): group commits only;
* ``spool+local``: the default gateway (no InfluxDB): the spool plus a ``LocalSink`` whose
  store (readings.db, ``synchronous = full``) takes a batch every second, and the spool's
  cursor update (ack) after each batch. The store first gets ``--prefill-hours`` (1) of
  history, so its B-tree looks like one in service (an empty store writes far less);
* ``spool+remote``: the spool plus a remote sink that accepts every batch at once (as
  InfluxDB would): the spool's commits and acks, no local store;
* ``local-fold``: what the steady window cannot show, the local store alone (1 h of
  history): ``FOLD_INTERVAL_S`` (10 min) of 1 s batches written back to back, then the
  fold of ``recent`` into ``sample``, each followed by a WAL checkpoint, as bytes per
  second of that interval.

Counted over the window: write syscalls and bytes from /proc/self/io (``syscw``,
``wchar``, and ``write_bytes`` — bytes of page cache dirtied, i.e. what reaches the
storage), and with strace (if installed) the fsync/fdatasync and write calls per second.

    python bench/disk_writes.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import line_of, proc_io, use_test_helpers, wait_quiet, write_result

use_test_helpers()

from gateway.delivery.loop import DeliveryLoop  # noqa: E402
from gateway.delivery.spool import Spool  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.sinks.base import Outcome, Sink, Verdict  # noqa: E402
from gateway.sinks.local import FOLD_INTERVAL_S, LocalSink, LocalStore  # noqa: E402

TRACED = ("fsync", "fdatasync", "write", "pwrite64", "writev", "pwritev", "pwritev2")
DEVICES = 100


class AcceptingSink(Sink):
    """A remote sink that takes every batch at once (no network): only its spool acks count."""

    name = "remote"
    batch_size = 5000
    flush_interval = 1.0

    async def write(self, lines: list[str]) -> Outcome:
        return Outcome(Verdict.OK)


async def produce(spool: Spool, rate: float) -> None:
    """``rate`` lines per second, evenly spaced, on an absolute schedule."""
    interval = 1.0 / rate
    i = 0
    start = time.monotonic()
    t_ns = time.time_ns()
    while True:
        spool.add(line_of(i, i % DEVICES, t_ns + i * int(interval * 1e9)))
        i += 1
        await asyncio.sleep(max(0.0, start + i * interval - time.monotonic()))


def start_strace(out: Path, pid: int | None = None) -> subprocess.Popen[bytes] | None:
    """``strace -c`` of this process (or ``pid``) and all its threads; None without strace."""
    exe = shutil.which("strace")
    if exe is None:
        return None
    import os

    return subprocess.Popen(
        [exe, "-f", "-c", "-e", "trace=" + ",".join(TRACED), "-o", str(out), "-p",
         str(os.getpid() if pid is None else pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_strace(proc: subprocess.Popen[bytes] | None, out: Path) -> dict[str, int] | None:
    if proc is None:
        return None
    proc.send_signal(signal.SIGINT)
    proc.wait(10)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if parts and parts[-1] in TRACED and len(parts) >= 5:
            calls[parts[-1]] = int(parts[3])
    return calls


async def prefill(store: LocalStore, hours: float, rate: float) -> int:
    """``hours`` of history at ``rate`` readings/s, as a store in service for a while has:
    with (field_id, time) keys, each field's recent samples then sit in a leaf page of
    their own, and a commit rewrites one page per field written."""
    n = int(hours * 3600 * rate)
    step = int(1e9 / rate)
    start = time.time_ns() - n * step
    await store.open()
    for base in range(0, n, 5000):
        await store.write(
            [line_of(i, i % DEVICES, start + i * step) for i in range(base, min(base + 5000, n))]
        )
    return n


async def steady(
    tmp: Path, mode: str, seconds: float, rate: float, prefill_hours: float
) -> dict[str, Any]:
    sinks: list[Sink] = []
    prefilled = 0
    if mode == "spool+local":
        store = LocalStore(tmp / "readings.db")
        prefilled = await prefill(store, prefill_hours, rate)
        sinks.append(LocalSink(store))
    elif mode == "spool+remote":
        sinks.append(AcceptingSink())
    spool = Spool(tmp / "spool.db", [s.name for s in sinks])
    await spool.open()
    for sink in sinks:
        await sink.start()
    tasks = [asyncio.create_task(spool.run_commits()), asyncio.create_task(produce(spool, rate))]
    tasks += [asyncio.create_task(DeliveryLoop(s, spool).run()) for s in sinks]
    await asyncio.sleep(3.0)  # warm-up: files created, first batches written
    strace_out = tmp / "strace.txt"
    tracer = start_strace(strace_out)
    await asyncio.sleep(1.0)  # let strace attach to every thread
    io0, committed0, t0 = proc_io(), spool.stats.committed, time.monotonic()
    commits0 = spool.stats.commits
    await asyncio.sleep(seconds)
    io1, committed1, t1 = proc_io(), spool.stats.committed, time.monotonic()
    commits1 = spool.stats.commits
    calls = await asyncio.to_thread(stop_strace, tracer, strace_out)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for sink in sinks:
        await sink.close()
    await spool.close()
    window = t1 - t0
    readings = committed1 - committed0

    def per_s(key: str) -> float:
        return round((io1[key] - io0[key]) / window, 1)

    result: dict[str, Any] = {
        "mode": mode,
        "local_store_prefilled_readings": prefilled,
        "window_s": round(window, 2),
        "readings_per_s": round(readings / window, 1),
        "spool_commits_per_s": round((commits1 - commits0) / window, 2),
        "write_syscalls_per_s": per_s("syscw"),
        "written_bytes_per_s": per_s("wchar"),
        "storage_write_bytes_per_s": per_s("write_bytes"),
        "storage_write_bytes_per_reading": round(
            (io1["write_bytes"] - io0["write_bytes"]) / max(readings, 1), 1
        ),
        "storage_write_mb_per_day": round(per_s("write_bytes") * 86400 / 1e6, 1),
    }
    if calls is not None:
        syncs = calls.get("fsync", 0) + calls.get("fdatasync", 0)
        writes = sum(v for k, v in calls.items() if k not in ("fsync", "fdatasync"))
        result["strace_calls"] = calls
        result["fsyncs_per_s"] = round(syncs / window, 2)
        result["strace_writes_per_s"] = round(writes / window, 1)
    return result


async def fold_cost(tmp: Path, rate: float, prefill_hours: float) -> dict[str, Any]:
    """Storage bytes of one fold interval of batches, and of the fold ending it."""
    store = LocalStore(tmp / "readings.db", retention=None, fold_interval=1e12, fold_rows=2**62)
    prefilled = await prefill(store, prefill_hours, rate)
    await store.fold()

    def checkpoint() -> None:
        with contextlib.closing(sqlite3.connect(tmp / "readings.db")) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    checkpoint()
    per_batch = int(rate)
    batches = int(FOLD_INTERVAL_S)
    step = int(1e9 / rate)
    t_ns = time.time_ns()
    io0 = proc_io()
    for b in range(batches):
        base = prefilled + b * per_batch
        await store.write(
            [
                line_of(i, i % DEVICES, t_ns + (i - prefilled) * step)
                for i in range(base, base + per_batch)
            ]
        )
    checkpoint()
    io1 = proc_io()
    moved = await store.fold()
    checkpoint()
    io2 = proc_io()
    await store.close()
    batch_bytes = io1["write_bytes"] - io0["write_bytes"]
    fold_bytes = io2["write_bytes"] - io1["write_bytes"]
    total = (batch_bytes + fold_bytes) / FOLD_INTERVAL_S
    return {
        "mode": "local-fold",
        "local_store_prefilled_readings": prefilled,
        "batches": batches,
        "rows_folded": moved,
        "batches_storage_write_bytes_per_s": round(batch_bytes / FOLD_INTERVAL_S, 1),
        "fold_storage_write_bytes": fold_bytes,
        "fold_storage_write_bytes_per_s": round(fold_bytes / FOLD_INTERVAL_S, 1),
        "storage_write_bytes_per_s": round(total, 1),
        "storage_write_mb_per_day": round(total * 86400 / 1e6, 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument(
        "--modes", nargs="+", default=["spool", "spool+local", "spool+remote", "local-fold"]
    )
    ap.add_argument(
        "--prefill-hours", type=float, default=1.0, help="local store history written first"
    )
    args = ap.parse_args()
    configure("warning", "console")
    quiet = wait_quiet()
    runs = []
    for mode in args.modes:
        # On the project's disk, not a tmpfs: write_bytes only counts real storage.
        with tempfile.TemporaryDirectory(prefix="bench-disk-", dir=Path(__file__).parent) as tmp:
            if mode == "local-fold":
                r = asyncio.run(fold_cost(Path(tmp), args.rate, args.prefill_hours))
            else:
                r = asyncio.run(
                    steady(Path(tmp), mode, args.seconds, args.rate, args.prefill_hours)
                )
        runs.append(r)
        if mode == "local-fold":
            print(
                f"{mode:13s} {r['batches']} batches then a fold of {r['rows_folded']} rows, "
                f"checkpointed: {r['batches_storage_write_bytes_per_s'] / 1024:.1f} + "
                f"{r['fold_storage_write_bytes_per_s'] / 1024:.1f} KiB/s to storage "
                f"({r['storage_write_mb_per_day']} MB/day, local store alone)"
            )
            continue
        fsync = f", {r['fsyncs_per_s']} fsync/s" if "fsyncs_per_s" in r else ""
        print(
            f"{mode:13s} {r['readings_per_s']} readings/s: {r['write_syscalls_per_s']} write "
            f"syscalls/s{fsync}, {r['written_bytes_per_s'] / 1024:.1f} KiB/s written, "
            f"{r['storage_write_bytes_per_s'] / 1024:.1f} KiB/s to storage "
            f"({r['storage_write_bytes_per_reading']} B/reading, "
            f"{r['storage_write_mb_per_day']} MB/day)"
        )
    write_result("disk_writes", {"machine_load": quiet, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
