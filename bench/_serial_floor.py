"""The floor of ``bench/serial_fleet.py``: the same traffic read by the least a reader can do.

``python bench/_serial_floor.py --mode stream|polled PATH...`` opens every port with
pyserial-asyncio-fast (as the gateway does) and only counts lines (stream) or writes
``READ`` on a fixed schedule and reads one line back (polled): no framing checks,
parsing, normalization or storage. Its CPU per reading is the serial transport's cost
in this Python, the ceiling the gateway's figure is measured against. Prints the count
on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

# Only pyserial-asyncio-fast is needed here, nothing from this checkout.
sys.path.pop(0)

import serial_asyncio_fast


async def _stream(path: str, counts: list[int], i: int) -> None:
    reader, _ = await serial_asyncio_fast.open_serial_connection(url=path, baudrate=9600)
    while True:
        await reader.readline()
        counts[i] += 1


async def _polled(path: str, counts: list[int], i: int, interval: float) -> None:
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=path, baudrate=9600)
    due = time.monotonic()
    while True:
        writer.write(b"READ\n")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.08):
                await reader.readline()
                counts[i] += 1
        due += interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["stream", "polled"], required=True)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args()
    counts = [0] * len(args.paths)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [
        asyncio.create_task(
            _stream(p, counts, i) if args.mode == "stream" else _polled(p, counts, i, args.interval)
        )
        for i, p in enumerate(args.paths)
    ]
    print("ready", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    print(sum(counts), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
