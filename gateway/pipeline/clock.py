"""Is the system clock synchronized? (A Raspberry Pi has no real-time clock.)

Linux keeps the answer in the kernel: ``adjtimex`` returns ``TIME_ERROR`` while the
``STA_UNSYNC`` status is set, i.e. until an NTP client (systemd-timesyncd, chrony,
ntpd) has disciplined the clock. Readings taken before that are flagged with the tag
``clock=unsynced`` rather than silently stamped with a wrong time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

TIME_ERROR = 5
UNSYNCED_TAG = ("clock", "unsynced")


def clock_synchronized() -> bool | None:
    """True/False from the kernel; None where it cannot be known (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        # struct timex is 208 bytes on 64-bit Linux; modes = 0 (the first int) reads only.
        buf = ctypes.create_string_buffer(512)
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return bool(state != TIME_ERROR)
