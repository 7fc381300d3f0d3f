"""The spool's and the local store's threads carry their names in the OS (``top -H``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.delivery.spool import Spool
from gateway.sinks.local import LocalStore


def _os_thread_names() -> set[str]:
    return {p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm")}


@pytest.mark.skipif(sys.platform != "linux", reason="thread names in /proc are Linux's")
async def test_worker_threads_are_named_for_the_os(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", ["local"])
    store = LocalStore(tmp_path / "readings.db")
    await spool.open()
    await store.open()
    try:
        assert {"spool", "local-store"} <= _os_thread_names()
    finally:
        await store.close()
        await spool.close()
