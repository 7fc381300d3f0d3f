"""What ``sensor-gateway status`` prints: the running gateway's status document as tables,
or, when it is not running, only the spool figures its last ``status.json`` kept."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import GatewaySection

# Characters of a device's last reading shown in the table.
LAST_READING_WIDTH = 34


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


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(d.items()))


def _rate(per_s: float | None) -> str:
    if per_s is None:
        return "-"
    return f"{per_s:.2f}" if 0 < per_s < 0.1 else f"{per_s:.1f}"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _reading(last: dict[str, Any] | None) -> str:
    if not last:
        return "-"
    text = " ".join(f"{k}={_value(v)}" for k, v in last.get("fields", {}).items())
    if len(text) > LAST_READING_WIDTH:
        text = text[: LAST_READING_WIDTH - 1] + "…"
    return text


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def render_status(doc: dict[str, Any]) -> str:
    """The running gateway's status document as tables."""
    now = time.time()
    indent = " " * 21
    up = _age(now - doc.get("started_at", now))
    if doc.get("stopping"):
        head = f"sensor-gateway {doc.get('version')} stopping (pid {doc.get('pid')}, up {up})"
    else:
        head = f"sensor-gateway {doc.get('version')} running (pid {doc.get('pid')}, up {up})"
    lines = [head]
    if doc.get("clock_unsynced"):
        lines.append("  ! system clock not synchronized: readings are tagged clock=unsynced")
    if doc.get("clock_steps"):
        lines.append(
            f"  ! system clock stepped {doc['clock_steps']} time(s), last by "
            f"{doc.get('clock_last_step_s') or 0:+.1f} s (see the log)"
        )
    devices = doc.get("devices", {})
    if devices:
        lines += [
            "",
            f"{'DEVICE':<20} {'STATE':<12} {'READINGS':>9} {'/S':>6}  "
            f"{'LAST READING':<{LAST_READING_WIDTH}} {'AGE':>5} {'RESTARTS':>8}",
        ]
    for name, d in sorted(devices.items()):
        condition = d.get("condition", d.get("state", "?"))
        lines.append(
            f"{name:<20} {condition:<12} {d.get('readings', 0):>9} "
            f"{_rate(d.get('readings_per_s')):>6}  "
            f"{_reading(d.get('last_reading')):<{LAST_READING_WIDTH}} "
            f"{_age(d.get('last_reading_age_s')):>5} {d.get('restarts', 0):>8}"
        )
        if d.get("rejected"):
            lines.append(f"{indent}rejected: {_counts(d['rejected'])}")
        if d.get("dropped_fields"):
            lines.append(f"{indent}dropped fields: {_counts(d['dropped_fields'])}")
        if d.get("clock_skew"):
            lines.append(f"{indent}clock skew (arrival time used): {d['clock_skew']}")
        if d.get("last_error") and condition != "connected":
            lines.append(f"{indent}error: {d['last_error']}")
    brokers = doc.get("brokers", {})
    if brokers:
        lines += ["", f"{'BROKER':<20} {'STATE':<12} {'MESSAGES':>9} {'CONNECTS':>8}"]
    for name, b in sorted(brokers.items()):
        lines.append(
            f"{name:<20} {b.get('state', '?'):<12} {b.get('messages', 0):>9} "
            f"{b.get('connects', 0):>8}"
        )
        if b.get("error"):
            lines.append(f"{indent}error: {b['error']}")
        if b.get("sessions_lost"):
            lines.append(
                f"{indent}! the broker lost our session {b['sessions_lost']} time(s): "
                "messages queued for us meanwhile were dropped"
            )
    sinks = doc.get("sinks", {})
    if sinks:
        lines += [
            "",
            f"{'SINK':<20} {'HEALTH':<12} {'WRITTEN':>9} {'BEHIND':>8} {'DEAD':>6}  FAILED BATCHES",
        ]
    for name, s in sorted(sinks.items()):
        lines.append(
            f"{name:<20} {s.get('state', '?'):<12} {s.get('points_written', 0):>9} "
            f"{s.get('behind', 0):>8} {s.get('dead_lettered', 0):>6}  "
            f"{_counts(s.get('batches_failed', {})) or '-'}"
        )
        if s.get("error"):
            lines.append(f"{indent}error: {s['error']}")
    tasks = doc.get("tasks", {})
    if tasks:
        lines += ["", f"{'TASK':<20} {'STATE':<12} {'FAILURES':>9}  LAST FAILURE"]
        for name, task in sorted(tasks.items()):
            failed_at = task.get("last_failed_at") or 0
            ago = f"{_age(now - failed_at)} ago: " if failed_at else ""
            lines.append(
                f"{name:<20} {task.get('state', '?'):<12} {task.get('failures', 0):>9}  "
                f"{ago}{task.get('last_error', '')}"
            )
    sp = doc.get("spool", {})
    parts = [f"{sp.get('waiting', 0)} readings waiting"]
    if sp.get("oldest_age_s") is not None:
        parts.append(f"oldest {_age(sp['oldest_age_s'])}")
    parts.append(f"{_size(sp.get('bytes', 0))} of {_size(sp.get('max_bytes', 0))}")
    if sp.get("time_to_loss_s") is not None:
        parts.append(f"time to loss {_age(sp['time_to_loss_s'])}")
    lines += ["", f"spool {sp.get('path')}: " + ", ".join(parts)]
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


def last_spool(last: dict[str, Any] | None, now: float | None = None) -> dict[str, Any] | None:
    """The spool figures of a gateway's last ``status.json`` (None: there is none).

    ``oldest_age_s`` is as it was then; nothing was delivered since, so add the time.
    """
    if last is None:
        return None
    sp = last.get("spool", {})
    behind = {name: s.get("behind", 0) for name, s in last.get("sinks", {}).items()}
    waiting = sp.get("waiting", max(behind.values(), default=0) + sp.get("pending", 0))
    return {
        "as_of": last.get("updated_at"),
        "waiting": waiting,
        "behind": behind,
        "oldest_age_s": sp.get("oldest_age_s") if waiting else None,
        "bytes": sp.get("bytes"),
        "max_bytes": sp.get("max_bytes"),
        "path": sp.get("path"),
    }


def render_not_running(why: str, spool: dict[str, Any] | None, status_file: str) -> str:
    """Not running, said plainly, and the last known spool figures (nothing else: the
    devices' and sinks' states of a gateway that stopped would only mislead)."""
    lines = [f"sensor-gateway is not running ({why})"]
    if spool is None:
        lines.append(f"no earlier status at {status_file}: has the gateway run with this config?")
        return "\n".join(lines)
    now = time.time()
    as_of = spool.get("as_of") or now
    lines.append(f"last known spool ({_when(as_of)}, {_age(now - as_of)} ago):")
    waiting = spool.get("waiting", 0)
    if not waiting:
        lines.append("  nothing waiting: every reading was delivered")
    else:
        per_sink = ", ".join(f"{k} {v}" for k, v in sorted(spool.get("behind", {}).items()))
        lines.append(f"  {waiting} readings waiting" + (f" ({per_sink})" if per_sink else ""))
        oldest = spool.get("oldest_age_s")
        if oldest is not None:
            lines.append(f"  oldest waiting {_age(oldest)} then, {_age(oldest + now - as_of)} now")
    if spool.get("bytes") is not None:
        lines.append(
            f"  spool {spool.get('path')}: {_size(spool['bytes'])} of "
            f"{_size(spool.get('max_bytes') or 0)}"
        )
    return "\n".join(lines)


def _join_hint(path: Path, group: str | None) -> str:
    """What the user who was refused at ``path`` can do about it."""
    import grp
    import pwd

    if group is None or group == "root":
        return f"only its owner and root can use {path}"
    user = pwd.getpwuid(os.getuid()).pw_name
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return f'it is open to group "{group}" only'
    if user in entry.gr_mem and entry.gr_gid not in os.getgroups():
        return (
            f'you are in group "{group}" since your last login: log out and in again '
            f"(or run: newgrp {group})"
        )
    return (
        f'it is open to group "{group}" only; join it: sudo usermod -aG {group} {user}, '
        "then log in again"
    )


def main(state_dir: Path, fmt: str) -> int:
    """``sensor-gateway status``: ask the gateway on ``state_dir``; print; exit code 0 while
    it runs, 1 otherwise."""
    from gateway.service.rundir import find_socket, find_status
    from gateway.service.statusd import NoAnswer, NoPermission, NotRunning, request_status

    path = find_socket(state_dir)
    try:
        doc = request_status(path)
    except NoPermission as err:
        hint = _join_hint(path, err.group)
        print(f"sensor-gateway: permission denied on {path}: {hint}", file=sys.stderr)
        return 1
    except NoAnswer as err:
        print(f"sensor-gateway: {err}", file=sys.stderr)
        return 1
    except NotRunning:
        status_file = find_status(state_dir)
        try:
            last = json.loads(status_file.read_text())
        except (OSError, ValueError):
            last = None
        spool = last_spool(last if isinstance(last, dict) else None)
        why = f"nothing listens on {path}"
        if fmt == "json":
            print(json.dumps({"running": False, "why": why, "last_spool": spool}, indent=2))
        else:
            print(render_not_running(why, spool, str(status_file)))
        return 1
    print(json.dumps(doc, indent=2) if fmt == "json" else render_status(doc))
    return 0


def state_dir_of(section: GatewaySection) -> Path:
    """The state directory of the gateway that ``section`` configures, as seen by whoever
    asks: without ``state_dir`` set, the service's (``/var/lib/sensor-gateway``) where a
    gateway left its lock file, not the user's own that this user would run with."""
    from gateway.config import DEFAULT_STATE_DIR
    from gateway.service.lock import LOCK_NAME
    from gateway.service.statedir import user_state_dir

    if "state_dir" in section.model_fields_set:
        return Path(section.state_dir)
    candidates = [Path(DEFAULT_STATE_DIR), user_state_dir()]
    for candidate in candidates:
        with contextlib.suppress(OSError):
            if (candidate / LOCK_NAME).exists():
                return candidate
    return next((c for c in candidates if c.is_dir()), Path(section.state_dir))


def unreadable_config(config: Path) -> str | None:
    """Why this user cannot read ``config`` and which group can (None: readable or absent)."""
    try:
        if not config.exists() or os.access(config, os.R_OK):
            return None
        from gateway.service.statusd import group_of

        group = group_of(config, 0o040)
    except OSError:
        return None
    return f"cannot read {config}: {_join_hint(config, group)}"
