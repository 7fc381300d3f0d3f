"""Is the system clock synchronized? (A Raspberry Pi has no real-time clock.)

Linux keeps the answer in the kernel: ``adjtimex`` returns ``TIME_ERROR`` while the
``STA_UNSYNC`` status is set, i.e. until an NTP client (systemd-timesyncd, chrony,
ntpd) has disciplined the clock. Readings taken before that are flagged with the tag
``clock=unsynced`` rather than silently stamped with a wrong time.

Under the hardened systemd unit (``ProtectClock=``) even this read-only ``adjtimex`` is
refused; then systemd-timesyncd's own flag answers: while it runs, its runtime directory
exists, and it creates ``synchronized`` there once it has set the clock.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from pathlib import Path

TIME_ERROR = 5
UNSYNCED_TAG = ("clock", "unsynced")
TIMESYNCD_RUN_DIR = Path("/run/systemd/timesync")


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once.

    ``CDLL(None)`` opens the running process's own symbols, which include libc's:
    ``ctypes.util.find_library`` would spawn ``ldconfig`` (a process) on every call.
    """
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def clock_synchronized() -> bool | None:
    """True/False from the kernel; None where it cannot be known (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = _libc()
    if libc is None:
        return None
    try:
        # struct timex is 208 bytes on 64-bit Linux; modes = 0 (the first int) reads only.
        buf = ctypes.create_string_buffer(512)
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:  # EPERM under ProtectClock=
        return timesyncd_synchronized()
    return bool(state != TIME_ERROR)


def timesyncd_synchronized(run_dir: Path | None = None) -> bool | None:
    """systemd-timesyncd's answer; None when it does not run (chrony, ntpd: unknown)."""
    run_dir = TIMESYNCD_RUN_DIR if run_dir is None else run_dir
    try:
        if not run_dir.is_dir():
            return None
        return (run_dir / "synchronized").exists()
    except OSError:
        return None
