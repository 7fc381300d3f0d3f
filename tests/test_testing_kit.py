"""The driver test kit itself: captures (timed and raw) and their replay as a
conversation, against the real transport on a virtual port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from devices.line import LineDriver, LineOptions
from gateway.delivery.spool import Spool
from gateway.pipeline.intake import Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.serial.runner import open_port
from gateway.testing import HEADER, Capture, ScriptedDevice, SerialPty, run_serial_driver

MakePort = Callable[[], SerialPty]
MakeDevice = Callable[..., ScriptedDevice]


def test_a_timed_capture_parses_hex_and_quoted_bytes() -> None:
    capture = Capture.parse(f'{HEADER}\n# a comment\n\n0.0 > 52 45 41 44 0a\n0.012 < "v=1\\r\\n"\n')
    assert [(e.t, e.direction, e.data) for e in capture.events] == [
        (0.0, ">", b"READ\n"),
        (0.012, "<", b"v=1\r\n"),
    ]
    assert capture.device_bytes() == b"v=1\r\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{HEADER}\n0.0 < zz\n", r"<capture>:2: bytes must be hex"),
        (f"{HEADER}\n0.0 ? 00\n", r"<capture>:2: expected '<seconds> <\|> <bytes>'"),
        (f"{HEADER}\n1.0 < 00\n0.5 < 01\n", "events must be in time order"),
    ],
)
def test_a_bad_capture_names_the_line(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Capture.parse(text)


def test_a_raw_dump_is_played_at_the_line_rate(tmp_path: Path) -> None:
    dump = tmp_path / "dsmr.bin"
    dump.write_bytes(bytes(range(200)))
    capture = Capture.load(dump, bytes_per_s=100.0, chunk=64)
    assert [e.t for e in capture.events] == [0.0, 0.64, 1.28, 1.92]
    assert capture.device_bytes() == bytes(range(200))


async def test_a_captured_conversation_is_replayed_in_order(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    capture = Capture.parse(
        f"{HEADER}\n"
        '0.00 < "# boot\\n"\n'
        '1.00 > "READ\\n"\n'
        '1.05 < "v=1\\n"\n'
        '2.00 > "READ\\n"\n'
        '2.30 < "v=2\\n"\n'
    )
    pty = virtual_port()
    device = scripted_device(pty).replay(capture, speed=2.0)
    entry = Pipeline(Spool(tmp_path / "s.db", ["local"])).device("d", NormalizeConfig())
    port = await open_port(LineDriver("d", LineOptions(port=pty.path)), entry)
    try:
        # The capture has the boot line before the first request; on a loaded machine
        # the device's thread may not have written it yet when the port is open.
        async with asyncio.timeout(5):
            while device.sent < 1:
                await asyncio.sleep(0.01)
        assert await port.transact(b"READ\n", 2.0) == b"v=1"
        assert await port.transact(b"READ\n", 2.0) == b"v=2"
    finally:
        await port.close()
    assert device.requests == [b"READ", b"READ"]
    assert device.unmatched == []


async def test_run_serial_driver_says_what_it_saw_when_the_time_is_up(
    virtual_port: MakePort,
) -> None:
    pty = virtual_port()
    with pytest.raises(TimeoutError, match=r"0 readings after 0\.5 s"):
        await run_serial_driver(
            LineDriver("d", LineOptions(port=pty.path)), readings=1, timeout=0.5
        )
