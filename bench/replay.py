"""Backlog replay: 1,000,000 spooled readings drained into VictoriaMetrics.

Builds a spool of ``--readings`` lines with ``gateway.delivery.spool.Spool`` itself (add() +
commit() of ``--chunk`` lines at a time, as the gateway's group commit would under load),
the sink's cursor at the start. Then, for gzip on and off, a copy of that spool is drained
by a real ``DeliveryLoop`` + ``InfluxSink`` (v2 API, batch_size 5000) into a fresh
VictoriaMetrics until ``behind == 0``; readings/s = readings / drain time. The stored
point count is checked afterwards (readings × 3 fields).

Where the time goes: the drain is sequential (read a batch from the spool → write it →
ack), so the wall time of each step is summed. A further drain (gzip on, ``--profile-readings``
lines) runs under cProfile in both the event-loop thread and the spool's thread.

    python bench/replay.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import pstats
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from _common import cpu_seconds, line_of, use_test_helpers, wait_quiet, write_result

use_test_helpers()

from servers import VictoriaMetrics, http_request  # noqa: E402

from gateway.config import InfluxSection  # noqa: E402
from gateway.delivery.loop import DeliveryLoop  # noqa: E402
from gateway.delivery.spool import Spool  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.sinks.influxdb import InfluxSink  # noqa: E402

SINK = "influxdb"
DEVICES = 100
GOAL = 100_000
T = TypeVar("T")


async def build_spool(path: Path, readings: int, chunk: int) -> dict[str, Any]:
    """A spool holding ``readings`` lines, 1 ms apart per device, ending a minute ago."""
    spool = Spool(path, [SINK])
    await spool.open()
    per_device = -(-readings // DEVICES)
    start_ns = time.time_ns() - 60 * 10**9 - per_device * 10**6
    t0 = time.monotonic()
    for base in range(0, readings, chunk):
        for i in range(base, min(base + chunk, readings)):
            device, seq = i % DEVICES, i // DEVICES
            spool.add(line_of(i, device, start_ns + seq * 10**6))
        await spool.commit()
    took = time.monotonic() - t0
    await spool.close()
    return {"build_s": round(took, 2), "chunks": spool.stats.commits}


def vm_points(vm: VictoriaMetrics) -> int:
    """Stored points of measurement ``bench`` (a server-side count; exporting 3M is slow)."""
    vm.force_flush()
    query = 'sum(count_over_time({__name__=~"bench_.+"}[1d]))'
    status, body = http_request(
        "GET", f"{vm.url}/api/v1/query?query={_quote(query)}&time={time.time() + 1:.0f}"
    )
    if status != 200:
        raise RuntimeError(f"query answered {status}: {body!r}")
    import json

    result = json.loads(body)["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


class Timed:
    """Sums the wall time spent awaiting each wrapped coroutine function."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(
        self, name: str, fn: Callable[..., Coroutine[Any, Any, T]]
    ) -> Callable[..., Coroutine[Any, Any, T]]:
        async def timed(*args: Any, **kwargs: Any) -> T:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed


async def drain(
    spool_path: Path, vm: VictoriaMetrics, gzip: bool, profile: bool = False
) -> dict[str, Any]:
    section = InfluxSection.model_validate(
        {"url": vm.url, "api": "v2", "org": "bench", "bucket": "bench", "token": "bench",
         "batch_size": 5000, "gzip": gzip}
    )  # fmt: skip
    spool = Spool(spool_path, [SINK])
    await spool.open()
    sink = InfluxSink(section)
    await sink.start()
    loop = DeliveryLoop(sink, spool)
    timed = Timed()
    spool.read = timed.wrap("spool.read", spool.read)  # type: ignore[method-assign]
    spool.ack = timed.wrap("spool.ack", spool.ack)  # type: ignore[method-assign]
    sink.write = timed.wrap("sink.write", sink.write)  # type: ignore[method-assign]
    backlog = spool.behind(SINK)
    main_prof = thread_prof = worker_prof = None
    # One default-executor thread (asyncio.to_thread: the sink gzips large bodies there),
    # so a profiler can be switched on in it.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="to_thread")
    asyncio.get_running_loop().set_default_executor(worker)
    if profile:
        main_prof, thread_prof, worker_prof = (cProfile.Profile() for _ in range(3))
        await asyncio.wrap_future(spool._executor.submit(thread_prof.enable))
        await asyncio.wrap_future(worker.submit(worker_prof.enable))
        main_prof.enable()
    cpu0, vm_cpu0 = cpu_seconds(), cpu_seconds(vm.pid)
    t0 = time.perf_counter()
    error = await _drain_or_fail(loop)
    took = time.perf_counter() - t0
    cpu, vm_cpu = cpu_seconds() - cpu0, cpu_seconds(vm.pid) - vm_cpu0
    if main_prof is not None and thread_prof is not None and worker_prof is not None:
        main_prof.disable()
        await asyncio.wrap_future(spool._executor.submit(thread_prof.disable))
        await asyncio.wrap_future(worker.submit(worker_prof.disable))
    left = spool.behind(SINK)
    await sink.close()
    await spool.close()
    out: dict[str, Any] = {
        "gzip": gzip,
        "readings": backlog,
        "left": left,
        "error": error,
        "drain_s": round(took, 3),
        "readings_per_s": round(backlog / took),
        "process_cpu_s": round(cpu, 3),
        "cpu_us_per_reading": round(cpu / backlog * 1e6, 2),
        "victoria_metrics_cpu_s": round(vm_cpu, 3),
        "batches": loop.stats.batches_ok,
        "failed_batches": loop.stats.batches_failed,
        "wall_s_by_step": {k: round(v, 3) for k, v in timed.seconds.items()},
        "wall_share_by_step": {k: round(v / took, 3) for k, v in timed.seconds.items()},
    }
    if main_prof is not None and thread_prof is not None and worker_prof is not None:
        out["cprofile_event_loop_thread"] = _top(main_prof)
        out["cprofile_spool_thread"] = _top(thread_prof)
        out["cprofile_to_thread_worker"] = _top(worker_prof)
    return out


async def _drain_or_fail(loop: DeliveryLoop, timeout: float = 120.0) -> str | None:
    """Drain; stop at the first failed write (the loop would retry forever) or timeout."""
    task = asyncio.create_task(loop.drain())
    deadline = time.monotonic() + timeout
    while not task.done():
        await asyncio.sleep(0.05)
        if loop.stats.batches_failed or time.monotonic() > deadline:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return loop.stats.last_error or f"not drained within {timeout:g} s"
    await task
    return None


def _top(prof: cProfile.Profile, n: int = 18) -> list[dict[str, Any]]:
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in raw.items():
        short = file.split("site-packages/")[-1].split("/lib/python3.11/")[-1]
        short = short.split("/work/main/")[-1]
        rows.append({"function": f"{func} ({short}:{line})", "calls": ncalls,
                     "self_s": round(tottime, 3), "cumulative_s": round(cumtime, 3)})  # fmt: skip
    rows.sort(key=lambda r: r["self_s"], reverse=True)
    return rows[:n]


def copy_spool(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def truncated_copy(src: Path, dst: Path, readings: int) -> Path:
    """A copy keeping only the first chunks, about ``readings`` lines (for the profile run)."""
    copy_spool(src, dst)
    db = sqlite3.connect(dst)
    total = 0
    keep = 0
    for chunk_id, count in db.execute("SELECT id, count FROM chunk ORDER BY id"):
        if total >= readings:
            break
        total += count
        keep = chunk_id
    db.execute("DELETE FROM chunk WHERE id > ?", (keep,))
    db.commit()
    db.close()
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, default=5000, help="lines per spool commit")
    ap.add_argument("--profile-readings", type=int, default=300_000)
    args = ap.parse_args()
    configure("warning", "console")
    quiet = wait_quiet()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp_name:
        tmp = Path(tmp_name)
        source = tmp / "source" / "spool.db"
        built = asyncio.run(build_spool(source, args.readings, args.chunk))
        built["spool_bytes"] = source.stat().st_size
        print(
            f"spool built: {args.readings:,} readings in {built['chunks']} chunks, "
            f"{built['spool_bytes'] / 1e6:.1f} MB, {built['build_s']} s"
        )
        plan = [("gzip", True, False), ("plain", False, False), ("profile", True, True)]
        for name, gzip, profile in plan:
            if profile:
                spool = truncated_copy(source, tmp / name / "spool.db", args.profile_readings)
            else:
                spool = copy_spool(source, tmp / name / "spool.db")
            with VictoriaMetrics(tmp / name / "vm") as vm:
                r = asyncio.run(drain(spool, vm, gzip, profile))
                r["points_stored"] = vm_points(vm)
            r["points_expected"] = r["readings"] * 3
            if r["error"]:
                print(f"  FAILED ({name}): {r['error']}")
            label = f"gzip {'on' if gzip else 'off'}" + (" (cProfile)" if profile else "")
            print(
                f"{label}: {r['readings']:,} readings drained in {r['drain_s']} s = "
                f"{r['readings_per_s']:,}/s (goal ≥ {GOAL:,}); CPU {r['cpu_us_per_reading']} "
                f"µs/reading (VictoriaMetrics: {r['victoria_metrics_cpu_s']} s); points stored {r['points_stored']:,} of {r['points_expected']:,}"
            )
            steps = ", ".join(f"{k} {v * 100:.0f}%" for k, v in r["wall_share_by_step"].items())
            print(f"  wall time by step: {steps}")
            if profile:
                for where in (
                    "cprofile_event_loop_thread",
                    "cprofile_spool_thread",
                    "cprofile_to_thread_worker",
                ):
                    print(f"  {where} (self time, top 10):")
                    for row in r[where][:10]:
                        print(f"    {row['self_s']:7.3f} s  {row['calls']:>8}  {row['function']}")
            runs.append({"name": name, **r})
    write_result(
        "replay", {"machine_load": quiet, "goal_readings_per_s": GOAL, "build": built, "runs": runs}
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
