"""Shared helpers of the benchmark scripts: /proc readings, machine facts, results files.

Benchmarks are scripts, not tests: each prints its figures and writes
``bench/results/<name>.json`` (gitignored). Everything here reads Linux ``/proc``.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TESTS = ROOT / "tests"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def use_test_helpers() -> None:
    """Make ``tests/servers.py`` and ``tests/gateway_proc.py`` importable."""
    for path in (str(TESTS), str(ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)


# --- /proc ----------------------------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads), in seconds."""
    return _stat_cpu(Path(f"/proc/{pid}/stat").read_text())


def per_item_us(fn: Callable[[], None], n: int, repeat: int = 3) -> float:
    """µs per item of ``fn``, which processes ``n`` items (best of ``repeat``, GC off)."""
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        gc.enable()
    return best / n * 1e6


def run_seconds(pid: int | str) -> float:
    """CPU time of a process's threads in seconds, to the nanosecond (schedstat): for
    figures too small for :func:`cpu_seconds`' clock ticks of 10 ms."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
    return total / 1e9


def thread_activity(pid: int) -> dict[str, tuple[float, int]]:
    """Per thread name: CPU seconds (schedstat) and context switches so far; the
    process's main thread is ``event loop``, unnamed threads add up under ``other``."""
    out: dict[str, tuple[float, int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns = int((task / "schedstat").read_text().split()[0])
            status = (task / "status").read_text()
            name = (task / "comm").read_text().strip()
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
        switches = sum(
            int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line
        )
        if task.name == str(pid):
            name = "event loop"
        elif name.startswith("python"):
            name = "other"
        cpu, count = out.get(name, (0.0, 0))
        out[name] = (cpu + run_ns / 1e9, count + switches)
    return out


def thread_share(
    before: dict[str, tuple[float, int]],
    after: dict[str, tuple[float, int]],
    readings: int,
    seconds: float,
) -> dict[str, dict[str, float]]:
    """Per thread, between two :func:`thread_activity` snapshots: µs of CPU per reading
    and wake-ups (context switches) per second, the busiest thread first. On a VM a
    wake-up costs CPU of its own (see docs/performance.md)."""
    out: dict[str, dict[str, float]] = {}
    for name, (run, count) in sorted(after.items(), key=lambda kv: -kv[1][0]):
        run0, count0 = before.get(name, (0.0, 0))
        out[name] = {
            "us_per_reading": round(1e6 * (run - run0) / max(readings, 1), 1),
            "wakeups_per_s": round((count - count0) / seconds),
        }
    return out


def thread_summary(threads: dict[str, dict[str, float]]) -> str:
    """One line of :func:`thread_share`'s figures, threads under 0.1 µs left out."""
    return "  by thread: " + "; ".join(
        f"{name} {t['us_per_reading']} µs/reading, {t['wakeups_per_s']} wake-ups/s"
        for name, t in threads.items()
        if t["us_per_reading"] >= 0.1
    )


def _stat_cpu(text: str) -> float:
    # The command name may contain spaces and parentheses: split after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of ``pid`` (threads that already ended are missing)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = _stat_cpu((task / "stat").read_text())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return out


def status_kib(pid: int | str, key: str) -> int:
    """A ``kB`` value from /proc/<pid>/status (VmRSS, VmHWM, …)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_io(pid: int | str = "self") -> dict[str, int]:
    """/proc/<pid>/io as a dict (rchar, wchar, syscr, syscw, read_bytes, write_bytes, …)."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key.strip()] = int(value)
    return out


def system_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in first[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    total = sum(ticks)
    return (total - idle) / CLK_TCK, total / CLK_TCK


def wait_quiet(
    idle_share: float = 0.85, patience: float = 60.0, window: float = 1.0
) -> dict[str, Any]:
    """Wait (up to ``patience`` s) until the machine is mostly idle; report what was seen.

    Other processes on a 2-core box change every figure here, so each result records how
    busy the machine was before it started.
    """
    deadline = time.monotonic() + patience
    while True:
        busy0, total0 = system_busy()
        time.sleep(window)
        busy1, total1 = system_busy()
        idle = 1.0 - (busy1 - busy0) / max(total1 - total0, 1e-9)
        if idle >= idle_share or time.monotonic() >= deadline:
            quiet = idle >= idle_share
            if not quiet:
                print(
                    f"warning: machine still busy ({(1 - idle) * 100:.0f}% CPU in use by other "
                    "processes); figures will be lower than on a quiet machine",
                    file=sys.stderr,
                )
            return {"idle_share_before": round(idle, 3), "quiet": quiet}


@dataclass
class CpuWindow:
    """Machine-wide CPU use over a span, to tell our load from other processes'."""

    busy0: float
    total0: float

    @classmethod
    def start(cls) -> CpuWindow:
        busy, total = system_busy()
        return cls(busy, total)

    def stop(self) -> dict[str, float]:
        busy, total = system_busy()
        return {
            "machine_busy_cpu_s": round(busy - self.busy0, 3),
            "machine_cpu_capacity_s": round(total - self.total0, 3),
        }


# --- machine facts ----------------------------------------------------------------------


def _first_line(cmd: list[str]) -> str:
    exe = shutil.which(cmd[0])
    if exe is None:
        return "not installed"
    try:
        out = subprocess.run(
            [exe, *cmd[1:]], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _dpkg_version(package: str) -> str:
    out = _first_line(["dpkg-query", "-W", "-f=${Version}", package])
    return out if out != "not installed" else "unknown"


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare figures: CPU, cores, memory, disk, versions."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    fs = _first_line(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "-T", str(ROOT)])
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024**2, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "zlib": zlib.ZLIB_RUNTIME_VERSION,
        "filesystem": fs,
        "mosquitto": _dpkg_version("mosquitto"),
        "victoria_metrics": _dpkg_version("victoria-metrics"),
    }


# --- results ----------------------------------------------------------------------------


def source_state() -> dict[str, Any]:
    """The commit measured, and which files of the package differed from it."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
        return out.stdout.rstrip("\n")

    changed = git("status", "--porcelain", "--", "gateway", "devices").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": [c[3:] for c in changed]}


def write_result(name: str, data: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` (with machine facts and a timestamp)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine(),
        "source": source_state(),
        **data,
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results written to {path.relative_to(ROOT)}")
    return path


def line_of(i: int, device: int, t_ns: int) -> str:
    """A realistic spooled line: what the gateway writes for one W1 message (3 fields)."""
    t = round(18.0 + (i % 997) / 100.0, 2)
    h = round(35.0 + (i % 613) / 20.0, 1)
    p = round(990.0 + (i % 409) / 10.0, 1)
    return f"bench,device=sensor-{device} temperature={t!r},humidity={h!r},pressure={p!r} {t_ns}"
