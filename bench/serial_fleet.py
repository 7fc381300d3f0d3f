"""Serial devices at scale: N simulated devices × 10 Hz on pseudo-terminals, stream and polled.

For each scenario the devices run in one process (``_serial_devices.py``) and the gateway
in another (``_serial_gateway.py``: ``run_gateway`` as ``sensor-gateway run`` does it,
default settings, the local store as the sink). Stream scenarios first measure the
gateway's CPU with every port open and silent (idle). Over a ``--seconds`` window it measures
the gateway's CPU (% of one core and µs per reading), its RSS, the p99 poll jitter seen
by the polled devices (|interval between two requests − poll_interval|), and, after a
graceful stop, that every reading sent is stored exactly once. In the same run, the same
traffic read by a count-only pyserial-asyncio-fast reader (``_serial_floor.py``) gives
the floor the gateway's per-reading cost is a ratio of.

    python bench/serial_fleet.py                  # stream-50 (+ -spread), polled-50, stream-200
    python bench/serial_fleet.py --only polled-50 --seconds 30
    python bench/serial_fleet.py --devices 200    # stream-200 alone (--mode polled: polled-200)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from _common import (
    ROOT,
    cpu_seconds,
    machine,
    run_seconds,
    status_kib,
    thread_activity,
    thread_share,
    thread_summary,
    wait_quiet,
    write_result,
)

HERE = Path(__file__).resolve().parent
# The helpers beside this file are imported after the installed packages.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE] + [str(HERE)]
PY = sys.executable
RATE_HZ = 10.0
# name: (mode, devices, spread). Spread: the devices' lines evenly apart over each period,
# as unsynchronized sensors send them; else all devices send in step, at once.
SCENARIOS = {
    "stream-50": ("stream", 50, False),
    "stream-50-spread": ("stream", 50, True),
    "polled-50": ("polled", 50, False),
    "stream-200": ("stream", 200, False),
}
# Time for every port to be opened (and, polled, the first polls answered) before the window.
SETTLE_S = 4.0
# Stream scenarios first measure the gateway with every port open and silent this long.
IDLE_S = 5.0


def _p(q: float, values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Devices:
    """The simulated devices (a subprocess driven over stdin/stdout)."""

    def __init__(self, mode: str, n: int, spread: bool = False) -> None:
        self.proc = subprocess.Popen(
            [PY, str(HERE / "_serial_devices.py"), "--mode", mode, "--devices", str(n)]
            + (["--stagger"] if spread else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdin is not None
        self._in: IO[str] = self.proc.stdin
        self._out: IO[str] = self.proc.stdout
        self.paths: list[str] = json.loads(self._out.readline())["paths"]

    def go(self, seconds: float) -> None:
        self._in.write(f"go {seconds}\n")
        self._in.flush()

    def stop(self) -> dict[str, Any]:
        self._in.write("stop\n")
        self._in.flush()
        result: dict[str, Any] = json.loads(self._out.readline())
        return result

    def close(self) -> None:
        self._in.close()
        self.proc.wait(10)


def floor(mode: str, n: int, seconds: float, spread: bool = False) -> dict[str, Any]:
    devices = Devices(mode, n, spread)
    reader = subprocess.Popen(
        [PY, str(HERE / "_serial_floor.py"), "--mode", mode, *devices.paths],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None
        reader.stdout.readline()  # "ready"
        time.sleep(SETTLE_S)
        cpu0, t0 = cpu_seconds(reader.pid), time.monotonic()
        devices.go(seconds)
        time.sleep(seconds)
        cpu1, t1 = cpu_seconds(reader.pid), time.monotonic()
        result = devices.stop()
        sent = sum(result["sent"]) if mode == "stream" else sum(len(r) for r in result["requests"])
    finally:
        reader.send_signal(signal.SIGTERM)
        out, _ = reader.communicate(timeout=30)
        devices.close()
    read = int(out.split()[-1]) if out.split() else 0
    cpu = cpu1 - cpu0
    base: dict[str, Any] = {
        "readings": sent,
        "read": read,
        "cpu_s": round(cpu, 3),
        "core_pct": round(100 * cpu / (t1 - t0), 2),
        "us_per_reading": round(1e6 * cpu / max(sent, 1), 1),
    }
    if mode == "polled":
        base["poll_jitter_ms"] = _jitter(result["requests"])
    return base


def _jitter(requests: list[list[float]]) -> dict[str, float | None]:
    """|interval between two requests to one device − the poll interval|, in ms."""
    interval = 1.0 / RATE_HZ
    jitter = [abs((b - a) - interval) * 1000 for t in requests for a, b in itertools.pairwise(t)]
    return {
        "p50": round(_p(0.5, jitter), 2),
        "p99": round(_p(0.99, jitter), 2),
        "max": round(max(jitter, default=float("nan")), 2),
        "mean": round(statistics.fmean(jitter), 2) if jitter else None,
    }


def gateway(
    mode: str,
    n: int,
    seconds: float,
    tmp: Path,
    profile: Path | None = None,
    *,
    driver: str | None = None,
    local_store: bool = True,
    spread: bool = False,
    read_window: float | None = None,
    commit_interval: float | None = None,
) -> dict[str, Any]:
    devices = Devices(mode, n, spread)
    window = {} if read_window is None else {"read_window": read_window}
    driver = driver or ("line" if mode == "stream" else "bench_polled")
    config: dict[str, Any] = {
        "gateway": {"state_dir": str(tmp / "state"), "clock_sync_check": False},
        "spool": {} if commit_interval is None else {"commit_interval": commit_interval},
        "sinks": {"local": {"enabled": local_store}},
        "devices": {
            f"d{i:03}": {"driver": driver, "port": path, **window}
            for i, path in enumerate(devices.paths)
        },
    }
    cfg = tmp / "gateway.json"
    cfg.write_text(json.dumps(config))
    log = (tmp / "gateway.log").open("wb")
    env = {**os.environ, **({"BENCH_PROFILE": str(profile)} if profile else {})}
    gw = subprocess.Popen(
        [PY, str(HERE / "_serial_gateway.py"), str(cfg)], stderr=log, cwd=ROOT, env=env
    )
    try:
        time.sleep(SETTLE_S)
        if gw.poll() is not None:
            raise RuntimeError(f"gateway exited: {(tmp / 'gateway.log').read_text()[-2000:]}")
        idle_ms_per_s = None
        if mode == "stream":  # silent until "go": what the gateway costs doing nothing
            run0, t0 = run_seconds(gw.pid), time.monotonic()
            time.sleep(IDLE_S)
            idle_ms_per_s = round(1000 * (run_seconds(gw.pid) - run0) / (time.monotonic() - t0), 2)
        cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
        threads0 = thread_activity(gw.pid)
        devices.go(seconds)
        rss_peak = 0
        while time.monotonic() < t0 + seconds:
            time.sleep(min(1.0, max(0.0, t0 + seconds - time.monotonic())))
            rss_peak = max(rss_peak, status_kib(gw.pid, "VmRSS"))
        cpu1, t1 = cpu_seconds(gw.pid), time.monotonic()
        threads1 = thread_activity(gw.pid)
        rss_end = status_kib(gw.pid, "VmRSS")
        result = devices.stop()
        time.sleep(2.0)  # the last readings reach the spool
    finally:
        gw.send_signal(signal.SIGTERM)
        code = gw.wait(60)
        log.close()
        devices.close()
    sent: list[int] = result["sent"]
    checked = local_store and driver != "bench_null"
    # Stream devices send only in the window; polled ones answer all along.
    in_window = sum(sent) if mode == "stream" else sum(len(r) for r in result["requests"])
    stored = _stored(tmp / "state" / "readings.db") if checked else Counter()
    lost = sum(
        max(0, s - len({q for (d, q) in stored if d == f"d{i:03}"})) for i, s in enumerate(sent)
    )
    twice = sum(1 for c in stored.values() if c > 1)
    cpu = cpu1 - cpu0
    total = in_window
    out: dict[str, Any] = {
        "devices": n,
        "readings": total,
        "sent_in_run": sum(sent),
        "readings_per_s": round(total / (t1 - t0), 1),
        "cpu_s": round(cpu, 3),
        "core_pct": round(100 * cpu / (t1 - t0), 2),
        "us_per_reading": round(1e6 * cpu / max(total, 1), 1),
        "rss_mb_end": round(rss_end / 1024, 1),
        "rss_mb_peak": round(rss_peak / 1024, 1),
        "stored": sum(1 for _ in stored) if checked else None,
        "lost": lost if checked else None,
        "stored_twice": twice if checked else None,
        "exit_code": code,
        "idle_cpu_ms_per_s": idle_ms_per_s,
        "threads": thread_share(threads0, threads1, total, t1 - t0),
    }
    if mode == "polled":
        out["poll_jitter_ms"] = _jitter(result["requests"])
    return out


def breakdown(seconds: float, full: dict[str, Any] | None) -> dict[str, Any]:
    """Where stream-50's CPU per reading goes: transport, parse + pipeline, local store."""
    runs: dict[str, Any] = {}
    for name, kwargs in {
        "no_local_store": {"local_store": False},
        "null_driver_no_store": {"local_store": False, "driver": "bench_null"},
    }.items():
        with tempfile.TemporaryDirectory(prefix=f"bench-serial-{name}-") as tmp:
            runs[name] = gateway("stream", 50, seconds, Path(tmp), **kwargs)
    if full is None:
        with tempfile.TemporaryDirectory(prefix="bench-serial-full-") as tmp:
            full = gateway("stream", 50, seconds, Path(tmp))
    us = {k: v["us_per_reading"] for k, v in runs.items()}
    shares = {
        "transport_and_loop_us": us["null_driver_no_store"],
        "parse_and_pipeline_us": round(us["no_local_store"] - us["null_driver_no_store"], 1),
        "local_store_us": round(full["us_per_reading"] - us["no_local_store"], 1),
        "total_us": full["us_per_reading"],
    }
    print(f"breakdown of stream-50 (µs per reading): {shares}", flush=True)
    return {"runs": runs, **shares}


def _stored(db: Path) -> Counter[tuple[str, int]]:
    """(device, seq) → how many times stored, read straight from the local store."""
    sys.path.insert(0, str(ROOT))
    from gateway import query

    rows = query.run_query(db, query.QueryRequest(limit=None, fields=["seq"]))
    return Counter((str(r.device), int(r.value)) for r in rows)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--only", choices=sorted(SCENARIOS), action="append")
    parser.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="run one scenario with N devices instead (stream unless --mode polled)",
    )
    parser.add_argument("--mode", choices=["stream", "polled"], default="stream")
    parser.add_argument(
        "--spread", action="store_true", help="with --devices: lines spread over each period"
    )
    parser.add_argument(
        "--read-window",
        type=float,
        metavar="S",
        help="every device's read_window (default: the driver's; 0 = a reader per port)",
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        metavar="S",
        help="the spool's commit_interval (default: the gateway's, 0.2 s)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also run stream-50 without the local store, and with a driver that parses nothing",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the gateway (figures then include the profiler); prints the top functions",
    )
    args = parser.parse_args()
    quiet = wait_quiet(patience=30)
    results: dict[str, Any] = {}
    if args.devices is not None:
        if args.devices < 1:
            parser.error("--devices must be at least 1")
        name = f"{args.mode}-{args.devices}" + ("-spread" if args.spread else "")
        SCENARIOS[name] = (args.mode, args.devices, args.spread)
        args.only = [name]
    for name in args.only or list(SCENARIOS):
        mode, n, spread = SCENARIOS[name]
        base = floor(mode, n, args.seconds, spread)
        with tempfile.TemporaryDirectory(prefix=f"bench-serial-{name}-") as tmp:
            prof = Path(tmp) / "gateway.prof" if args.profile else None
            gw = gateway(
                mode,
                n,
                args.seconds,
                Path(tmp),
                prof,
                spread=spread,
                read_window=args.read_window,
                commit_interval=args.commit_interval,
            )
            if prof is not None:
                import pstats

                pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)
        gw["floor"] = base
        gw["ratio_to_floor"] = round(gw["us_per_reading"] / max(base["us_per_reading"], 1e-9), 2)
        results[name] = gw
        jitter = gw.get("poll_jitter_ms", {}).get("p99")
        print(
            f"{name}: {gw['readings']} readings, gateway {gw['core_pct']} % of a core "
            f"({gw['us_per_reading']} µs/reading, {gw['ratio_to_floor']}× the count-only "
            f"floor of {base['us_per_reading']} µs), RSS {gw['rss_mb_peak']} MB, "
            f"lost {gw['lost']}, twice {gw['stored_twice']}"
            + (
                f", idle {gw['idle_cpu_ms_per_s']} ms CPU/s"
                if gw["idle_cpu_ms_per_s"] is not None
                else ""
            )
            + (
                f", p99 poll jitter {jitter} ms (floor's {base['poll_jitter_ms']['p99']} ms)"
                if jitter is not None
                else ""
            ),
            flush=True,
        )
        print(
            thread_summary(gw["threads"]),
            flush=True,
        )
    if args.breakdown:
        results["breakdown"] = breakdown(args.seconds, results.get("stream-50"))
    path = write_result(
        "serial-profile" if args.profile else "serial",
        {
            "machine": machine(),
            "load": quiet,
            "seconds": args.seconds,
            "read_window": args.read_window,
            "commit_interval": args.commit_interval,
            **results,
        },
    )
    print(f"results: {path}")


if __name__ == "__main__":
    main()
