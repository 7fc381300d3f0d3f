"""Renders the status document the running gateway writes to ``<state_dir>/status.json``."""

from __future__ import annotations

import os
import time
from typing import Any

# The daemon rewrites the file every 2 s; older than this means it is not running.
STALE_AFTER_S = 15.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items())) or "0"


def render_status(doc: dict[str, Any]) -> str:
    """A human-readable status report."""
    now = time.time()
    updated = doc.get("updated_at", 0)
    running = (
        bool(doc.get("running"))
        and now - updated < STALE_AFTER_S
        and _alive(int(doc.get("pid", 0)))
    )
    lines = []
    if running:
        up = _age(now - doc.get("started_at", now))
        lines.append(f"sensor-gateway {doc.get('version')} running (pid {doc.get('pid')}, up {up})")
    else:
        lines.append(f"sensor-gateway NOT running (last status {_age(now - updated)} ago)")
    if doc.get("clock_unsynced"):
        lines.append("  ! system clock not synchronized: readings are tagged clock=unsynced")
    if doc.get("clock_steps"):
        lines.append(
            f"  ! system clock stepped {doc['clock_steps']} time(s), last by "
            f"{doc.get('clock_last_step_s') or 0:+.1f} s (see the log)"
        )
    lines.append("")
    lines.append(
        f"{'DEVICE':<20} {'STATE':<10} {'READINGS':>9} {'LAST':>6} {'RESTARTS':>8}  REJECTED / DROPPED FIELDS"
    )
    for name, d in sorted(doc.get("devices", {}).items()):
        rej = _counts(d.get("rejected", {}))
        dropped = _counts(d.get("dropped_fields", {}))
        lines.append(
            f"{name:<20} {d.get('state', '?'):<10} {d.get('readings', 0):>9} "
            f"{_age(d.get('last_reading_age_s')):>6} {d.get('restarts', 0):>8}  {rej} / {dropped}"
        )
        if d.get("last_error") and d.get("state") != "running":
            lines.append(f"{'':<20} last error: {d['last_error']}")
    brokers = doc.get("brokers", {})
    if brokers:
        lines.append("")
        lines.append(f"{'BROKER':<20} {'STATE':<13} {'MESSAGES':>9} {'CONNECTS':>8}  LAST ERROR")
        for name, b in sorted(brokers.items()):
            lines.append(
                f"{name:<20} {b.get('state'):<13} {b.get('messages', 0):>9} "
                f"{b.get('connects', 0):>8}  {b.get('last_error', '')}"
            )
            if b.get("sessions_lost"):
                lines.append(
                    f"{'':<20} ! the broker lost our session {b['sessions_lost']} time(s): "
                    "messages queued for us meanwhile were dropped"
                )
    lines.append("")
    lines.append(
        f"{'SINK':<20} {'STATE':<10} {'WRITTEN':>9} {'BEHIND':>8} {'DEAD':>6}  FAILED BATCHES / LAST ERROR"
    )
    for name, s in sorted(doc.get("sinks", {}).items()):
        lines.append(
            f"{name:<20} {s.get('state', '?'):<10} {s.get('points_written', 0):>9} "
            f"{s.get('behind', 0):>8} {s.get('dead_lettered', 0):>6}  "
            f"{_counts(s.get('batches_failed', {}))} {s.get('last_error', '')[:120]}"
        )
    tasks = doc.get("tasks", {})
    if tasks:
        lines.append("")
        lines.append(f"{'TASK':<20} {'STATE':<10} {'FAILURES':>9}  LAST ERROR")
        for name, task in sorted(tasks.items()):
            lines.append(
                f"{name:<20} {task.get('state', '?'):<10} {task.get('failures', 0):>9}  "
                f"{str(task.get('last_error', ''))[:120]}"
            )
    sp = doc.get("spool", {})
    lines.append("")
    ttl = sp.get("time_to_loss_s")
    lines.append(
        f"spool {sp.get('path')}: {_size(sp.get('bytes', 0))} of {_size(sp.get('max_bytes', 0))}, "
        f"oldest undelivered {_age(sp.get('oldest_age_s'))}, "
        f"time to loss {'-' if ttl is None else _age(ttl)}"
    )
    if sp.get("damaged_chunks_lost"):
        lines.append(
            f"  ! spool file was damaged: {sp['damaged_chunks_lost']} chunk(s) could not be recovered"
        )
    if sp.get("commit_failing"):
        lines.append(
            f"  ! spool commits failing (disk full?): {sp.get('pending', 0)} readings wait in "
            f"memory, at most {sp.get('max_pending', 0)} are kept"
        )
    if sp.get("dropped"):
        lines.append(f"  ! dropped readings: {_counts(sp['dropped'])}")
    return "\n".join(lines)
