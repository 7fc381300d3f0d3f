"""The serial stream path's per-reading cost, in process, without ptys or an event loop's I/O.

``seq=<n> t=21.5`` lines of one ``line`` device are fed to ``SerialPort.data_received``
(as the transport does, one line per call) with the core's stream handler attached:
framing, ``line`` parse, normalize, field types, line protocol, ``Spool.add``. Then each
stage alone on the same inputs, and the local store's cost per line (``LocalStore.write``
of 500-line batches, its line-protocol parse included). Best of 5, GC off. It shows the
least the per-reading work costs; ``serial_fleet.py`` measures it in the running gateway,
where the same work costs about twice as much. The last two figures show why: the
same path run in turns, with the host idle in between (cold caches, a wake-up per turn).

    python bench/serial_hotpath.py
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import per_item_us, use_test_helpers, wait_quiet, write_result

use_test_helpers()

from devices.line import LineDriver, LineOptions  # noqa: E402
from gateway.delivery.spool import Spool  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.pipeline.intake import Pipeline  # noqa: E402
from gateway.pipeline.lineprotocol import encode, parse  # noqa: E402
from gateway.pipeline.normalize import NormalizeConfig  # noqa: E402
from gateway.serial import runner  # noqa: E402
from gateway.serial.transport import PortProtocol, SerialPort  # noqa: E402
from gateway.sinks.local import LocalStore  # noqa: E402


class _NoWrites:
    """The transport side of a port nobody writes to."""

    def write(self, data: bytes) -> None:  # pragma: no cover - stream devices only read
        raise AssertionError("a stream device does not write")

    def get_write_buffer_size(self) -> int:
        return 0


def in_turns(port: SerialPort, spool: Spool, chunks: list[bytes]) -> dict[str, float]:
    """The whole path's CPU per reading when it runs in turns, the host idle in between.

    As in the gateway: 25 lines, then 50 ms of sleep. The caches go cold while the host
    idles, and each wake-up costs CPU of its own; nothing else differs from the hot loop.
    """
    out: dict[str, float] = {}
    for per_turn, pause in ((25, 0.05), (1, 0.002)):
        feed = port.data_received
        done = 0
        cpu0 = time.process_time()
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            for chunk in chunks[done % len(chunks) : done % len(chunks) + per_turn]:
                feed(chunk)
                done += 1
            spool._pending.clear()
            time.sleep(pause)
        label = f"whole path in turns of {per_turn}, {pause * 1000:g} ms of idle between (CPU)"
        out[label] = round((time.process_time() - cpu0) / max(done, 1) * 1e6, 2)
    return out


async def measure(tmp: Path, n: int) -> dict[str, Any]:
    spool = Spool(tmp / "spool.db", ["local"])
    await spool.open()
    pipeline = Pipeline(spool)
    driver = LineDriver("d0", LineOptions(port="/dev/null"))
    entry = pipeline.device("d0", NormalizeConfig())
    port = SerialPort(
        _NoWrites(),  # type: ignore[arg-type]
        PortProtocol(),
        driver.framer(),
        entry,
        path="/dev/null",
        max_frame_bytes=4096,
    )
    port._on_frames = lambda frames: runner._handle_frames(driver, entry, frames)
    chunks = [f"seq={i} t=21.5\n".encode() for i in range(n)]
    frames = [c[:-1] for c in chunks]
    samples = [driver.parse(f) for f in frames]
    now = time.time_ns()
    readings = [entry.normalizer.apply(s[0], now + i).reading for i, s in enumerate(samples)]
    lines = [encode(r) for r in readings if r is not None]

    def whole() -> None:
        feed = port.data_received
        for chunk in chunks:
            feed(chunk)
        spool._pending.clear()

    def framing() -> None:
        framer = driver.framer()
        for chunk in chunks:
            framer.feed(chunk)

    def parsing() -> None:
        for frame in frames:
            driver.parse(frame)

    def submitting() -> None:
        for i, sample in enumerate(samples):
            entry.submit(sample, now + i)
        spool._pending.clear()

    def normalizing() -> None:
        apply = entry.normalizer.apply
        for i, sample in enumerate(samples):
            apply(sample[0], now + i)

    def encoding() -> None:
        for reading in readings:
            encode(reading)  # type: ignore[arg-type]

    def reparsing() -> None:
        for line in lines:
            parse(line)

    timed = {
        "whole path: data_received → framing, parse, submit, Spool.add": per_item_us(
            whole, n, repeat=5
        ),
        "line framer": per_item_us(framing, n, repeat=5),
        "line kv parse": per_item_us(parsing, n, repeat=5),
        "submit (normalize, field types, stamp, encode, Spool.add)": per_item_us(
            submitting, n, repeat=5
        ),
        "normalize": per_item_us(normalizing, n, repeat=5),
        "line protocol encode": per_item_us(encoding, n, repeat=5),
        "line protocol parse (the local store's)": per_item_us(reparsing, n, repeat=5),
    }
    stages = {name: round(us, 2) for name, us in timed.items()}
    stages.update(in_turns(port, spool, chunks))
    await spool.close()

    store = LocalStore(tmp / "readings.db")
    await store.open()
    batch = 500
    t0 = time.time_ns()
    batches = [
        [
            f"d,device=d{k % 50:02} seq={b * batch + k}i,t=21.5 {t0 + b * 10**9 + k}"
            for k in range(batch)
        ]
        for b in range(21)
    ]
    await store.write(batches[0])
    cpu0 = time.process_time()
    for lines_ in batches[1:]:
        await store.write(lines_)
    cpu = time.process_time() - cpu0
    await store.close()
    stages["local store: LocalStore.write per line, 500-line batches (CPU)"] = round(
        cpu / (20 * batch) * 1e6, 2
    )
    return {"us_per_reading": stages}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=20_000)
    args = ap.parse_args()
    configure("warning", "console")
    quiet = wait_quiet()
    with tempfile.TemporaryDirectory(prefix="bench-serial-hotpath-") as tmp:
        r = asyncio.run(measure(Path(tmp), args.readings))
    print("per reading, µs:")
    for k, v in r["us_per_reading"].items():
        print(f"  {v:7.2f}  {k}")
    write_result("serial-hotpath", {"machine_load": quiet, **r})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
