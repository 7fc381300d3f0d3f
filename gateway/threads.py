"""Worker threads with a name the operating system shows too.

Python's thread names stay inside Python; ``top -H``, ``ps -L`` and
``/proc/<pid>/task/*/comm`` show every thread of the gateway under the process's name.
Naming the spool's and the local store's threads there tells an operator (and
``bench/``) which thread spends the CPU.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

# The kernel keeps 15 bytes of a thread's name.
_MAX_NAME_BYTES = 15


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` (cut to 15 bytes) in the OS; a no-op where the
    OS does not take it (not Linux, or /proc read-only)."""
    path = f"/proc/self/task/{threading.get_native_id()}/comm"
    with contextlib.suppress(OSError), open(path, "wb") as comm:
        comm.write(name.encode()[:_MAX_NAME_BYTES])


def single_worker(name: str) -> ThreadPoolExecutor:
    """An executor with one thread, named ``name`` in Python and in the OS."""
    return ThreadPoolExecutor(
        max_workers=1, thread_name_prefix=name, initializer=name_os_thread, initargs=(name,)
    )
