"""Stream ports read in turns (gateway.serial.batchread) on real pseudo-terminals: every
line of a busy fleet arrives, in far fewer wake-ups than lines; a lone line is read at
once; a port sending faster than the window gets its own reader again, every reading
kept with its own stamp."""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

from servers import SerialPtyFactory

from devices.line import LineDriver, LineOptions
from gateway.delivery.spool import Spool
from gateway.pipeline.intake import Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.serial.batchread import batcher
from gateway.serial.runner import run_serial_device
from gateway.testing import SerialPty


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def _open(pty: SerialPty) -> int:
    fd = os.open(pty.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    return fd


def _collect(fd: int, into: list[bytes]) -> Callable[[], None]:
    def read_ready() -> None:
        into.append(os.read(fd, 4096))

    return read_ready


def _write_spread(ptys: list[SerialPty], lines: int, every_s: float) -> None:
    """Line ``k`` to port ``k % len(ptys)``, ``every_s`` apart (catching up if late)."""
    start = time.monotonic()
    for k in range(lines):
        delay = start + k * every_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        ptys[k % len(ptys)].write(f"seq={k // len(ptys)}\n".encode())


async def test_steady_traffic_from_many_ports_is_read_in_few_turns(
    serial_pty: SerialPtyFactory,
) -> None:
    ptys = [serial_pty() for _ in range(10)]
    fds = [_open(p) for p in ptys]
    got: list[list[bytes]] = [[] for _ in ptys]
    reads = batcher(0.05)
    try:
        for fd, into in zip(fds, got, strict=True):
            reads.add(fd, _collect(fd, into))
        turns_before = reads.turns
        # 400 lines, one every 2.5 ms, spread over the ports: unsynchronized sensors.
        await asyncio.to_thread(_write_spread, ptys, 400, 0.0025)
        want = [b"".join(f"seq={i}\n".encode() for i in range(40))] * len(ptys)
        await _until(lambda: [b"".join(chunks) for chunks in got] == want)
        turns = reads.turns - turns_before
    finally:
        for fd in fds:
            reads.remove(fd)
            os.close(fd)
    # One read per line would be 400 turns; a 50 ms window over ~1 s is about 20.
    assert turns < 400 / 4, f"{turns} turns for 400 lines"
    assert reads.ports == 0


async def test_a_lone_line_is_read_at_once_not_a_window_later(
    serial_pty: SerialPtyFactory,
) -> None:
    pty = serial_pty()
    fd = _open(pty)
    got: list[bytes] = []
    reads = batcher(5.0)  # a window far longer than the test may wait
    reads.add(fd, _collect(fd, got))
    try:
        await asyncio.sleep(0.05)
        sent = time.monotonic()
        pty.write(b"seq=1\n")
        await _until(lambda: got == [b"seq=1\n"], timeout=2.5)
        assert time.monotonic() - sent < 2.5
    finally:
        reads.remove(fd)
        os.close(fd)


def _stream_fast(pty: SerialPty, lines: int, every_s: float, stop: threading.Event) -> None:
    start = time.monotonic()
    for k in range(lines):
        if stop.is_set():
            return
        delay = start + k * every_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pty.write(f"seq={k}\n".encode())


async def test_a_port_faster_than_its_window_gets_a_reader_of_its_own(
    tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    spool = Spool(tmp_path / "spool.db", ["local"])
    await spool.open()
    pipeline = Pipeline(spool)
    entry = pipeline.device("fast", NormalizeConfig(measurement="m"))
    stamps: list[int] = []
    pipeline.taps.append(lambda _device, reading: stamps.append(reading.time_ns))
    pty = serial_pty()
    driver = LineDriver("fast", LineOptions(port=pty.path, read_window=0.2))
    task = asyncio.create_task(run_serial_device(driver, entry))
    stop = threading.Event()
    try:
        await _until(lambda: entry.stats.state == "running")
        assert batcher(0.2).ports == 1  # read in turns while nothing says otherwise
        # 100 lines/s: two or more in every 200 ms turn.
        writer = asyncio.create_task(asyncio.to_thread(_stream_fast, pty, 300, 0.01, stop))
        await _until(lambda: batcher(0.2).ports == 0)
        await writer
        await _until(lambda: entry.stats.readings == 300)
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spool.close()
    assert entry.stats.rejected == {}
    # The few crowded reads at first gave their lines stamps 1 ms apart; after that each
    # line is read as it comes, ~10 ms after the one before.
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert sorted(gaps)[len(gaps) // 2] > 5_000_000, "most lines must keep their own stamp"


async def test_read_window_0_reads_each_port_on_its_own(
    tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    spool = Spool(tmp_path / "spool.db", ["local"])
    entry = Pipeline(spool).device("s", NormalizeConfig(measurement="m"))
    pty = serial_pty()
    task = asyncio.create_task(
        run_serial_device(LineDriver("s", LineOptions(port=pty.path, read_window=0)), entry)
    )
    try:
        await _until(lambda: entry.stats.state == "running")
        for k in range(5):
            pty.write(f"seq={k}\n".encode())
            await _until(lambda k=k: entry.stats.readings == k + 1)  # type: ignore[misc]
        assert all(b.ports == 0 for b in (batcher(0.05), batcher(0.2)))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
