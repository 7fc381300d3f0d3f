"""The transport drivers talk through (transact, on_open, poll) and port selection,
against real pseudo-terminals played by the test kit's ScriptedDevice."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

from devices.line import LineDriver, LineOptions
from gateway.delivery.spool import Spool
from gateway.driver import FixedLengthFramer, NoResponse, RawSample, SerialPort
from gateway.errors import DeviceUnavailable
from gateway.pipeline.intake import DeviceInput, Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.serial import ports as ports_module
from gateway.serial.ports import AmbiguousPort, PortInfo, find_port, parse_selector
from gateway.serial.runner import open_port, run_serial_device
from gateway.serial.transport import MAX_QUEUED_FRAMES
from gateway.testing import PluggableSerialPty, ScriptedDevice, SerialPty, run_serial_driver

ROOT = Path(__file__).resolve().parent.parent

MakePort = Callable[[], SerialPty]
MakeDevice = Callable[..., ScriptedDevice]


def _entry(tmp_path: Path) -> DeviceInput:
    spool = Spool(tmp_path / "spool.db", ["local"])
    return Pipeline(spool).device("s", NormalizeConfig(measurement="m"))


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def _open(path: str, entry: DeviceInput) -> SerialPort:
    return await open_port(LineDriver("s", LineOptions(port=path)), entry)


# --- transact -----------------------------------------------------------------------------


async def test_transact_drops_input_before_the_first_request_silently(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    device = scripted_device(pty).respond(b"READ", b"v=1\n")
    entry = _entry(tmp_path)
    port = await _open(pty.path, entry)
    try:
        device.send(b"power-on banner\nv=0\n")
        await asyncio.sleep(0.3)  # the banner is in the port's buffer before we ask
        assert await port.transact(b"READ\n") == b"v=1"
    finally:
        await port.close()
    assert entry.stats.rejected == {}


async def test_input_the_loop_has_not_handed_over_yet_is_stale_too(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    # Bytes that reached the kernel's buffer with no turn of the event loop since (right
    # after opening, or a device chattering just before a poll) came before the request:
    # the answer must be the one that follows it.
    pty = virtual_port()
    device = scripted_device(pty).respond(b"READ", b"v=1\n")
    entry = _entry(tmp_path)
    port = await _open(pty.path, entry)
    try:
        device.send(b"v=0\n")
        time.sleep(0.3)  # noqa: ASYNC251 -- blocks the loop on purpose: the bytes wait in the kernel
        assert await port.transact(b"READ\n", 2.0) == b"v=1"
    finally:
        await port.close()


async def test_a_late_answer_is_discarded_and_counted_never_taken_for_the_next(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    device = scripted_device(pty)
    device.respond(b"READ", b"v=1\n", delay=0.5, times=1).respond(b"READ", b"v=2\n")
    entry = _entry(tmp_path)
    port = await _open(pty.path, entry)
    try:
        with pytest.raises(NoResponse, match=r"no answer within 0\.2 s"):
            await port.transact(b"READ\n", 0.2)
        await asyncio.sleep(0.6)  # the late v=1 arrives now
        assert await port.transact(b"READ\n", 2.0) == b"v=2"
    finally:
        await port.close()
    assert entry.stats.rejected == {"late_answer": 1}


async def test_an_unanswered_request_is_retried(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    device = scripted_device(pty)
    device.respond(b"READ", lambda _: None, times=1).respond(b"READ", b"v=3\n")
    entry = _entry(tmp_path)
    port = await _open(pty.path, entry)
    try:
        assert await port.transact(b"READ\n", 0.3, retries=1) == b"v=3"
        assert device.requests == [b"READ", b"READ"]
        device.respond(b"PING", lambda _: None)
        with pytest.raises(NoResponse):
            await port.transact(b"PING\n", 0.2, retries=2)
        assert device.requests.count(b"PING") == 3
    finally:
        await port.close()


async def test_frames_that_do_not_answer_the_request_are_skipped_and_counted(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    scripted_device(pty).respond(b"READ", b"status ok\nv=4\n")
    entry = _entry(tmp_path)
    port = await _open(pty.path, entry)
    try:
        frame = await port.transact(b"READ\n", 2.0, accept=lambda f: f.startswith(b"v="))
        assert frame == b"v=4"
        # A device that answers too much: the extra line is not the next answer.
        frame = await port.transact(b"READ\n", 2.0)
        await asyncio.sleep(0.2)  # "v=4" of the second answer follows "status ok"
        assert frame == b"status ok"
        assert await port.transact(b"READ\n", 2.0) == b"status ok"
    finally:
        await port.close()
    assert entry.stats.rejected == {"unsolicited": 2}


# --- a driver using on_open and poll ------------------------------------------------------


class _TwoQuestions(LineDriver):
    """Puts the device in query mode on open; asks two questions per poll."""

    poll_interval = 0.1
    response_timeout = 1.0
    fail_init: ClassVar[bool] = False

    async def on_open(self, port: SerialPort) -> None:
        answer = await port.transact(b"MODE QUERY\n", 0.5 if self.fail_init else None)
        if answer != b"OK":
            raise NoResponse(f"mode not set: {answer!r}")

    async def poll(self, port: SerialPort) -> list[RawSample]:
        t = float((await port.transact(b"T?\n")).decode())
        h = float((await port.transact(b"H?\n")).decode())
        return [RawSample({"t": t, "h": h})]


async def test_init_commands_run_on_every_open_before_polls(
    tmp_path: Path, scripted_device: MakeDevice, pluggable_port: Callable[..., PluggableSerialPty]
) -> None:
    usb = pluggable_port()
    device = scripted_device(usb)
    device.respond(b"MODE QUERY", b"OK\n").respond(b"T?", b"21.5\n").respond(b"H?", b"40\n")
    entry = _entry(tmp_path)
    driver = _TwoQuestions("s", LineOptions(port=usb.path))
    for _ in range(2):  # the second time after an unplug
        task = asyncio.create_task(run_serial_device(driver, entry))
        await _until(lambda: entry.stats.readings >= 3)
        usb.unplug()
        with pytest.raises(DeviceUnavailable):
            await task
        assert device.requests[0] == b"MODE QUERY"
        assert device.requests[1:5] == [b"T?", b"H?", b"T?", b"H?"]
        usb.plug()
        device.requests.clear()
        entry.stats.readings = 0
    assert entry.stats.rejected == {}


async def test_a_device_that_does_not_take_its_init_command_is_not_polled(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    device = scripted_device(pty)
    device.respond(b"T?", b"21.5\n")
    driver = _TwoQuestions("s", LineOptions(port=pty.path))
    driver.fail_init = True
    with pytest.raises(DeviceUnavailable, match=r"device init failed.*no answer"):
        await run_serial_device(driver, _entry(tmp_path))
    assert device.requests == [b"MODE QUERY"]


class _Metronome(LineDriver):
    expected_interval = 0.1  # frames every 100 ms: stale after 0.5 s of silence


async def test_a_stream_device_declaring_its_interval_goes_stale_without_stale_after(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    scripted_device(pty).stream(
        lambda n: f"seq={n}\n".encode(), rate_hz=10, count=5, start_delay=0.5
    )
    entry = _entry(tmp_path)
    driver = _Metronome("s", LineOptions(port=pty.path))
    with pytest.raises(DeviceUnavailable, match=r"for 0.5 s \(stale\)"):
        await run_serial_device(driver, entry)
    assert entry.stats.readings == 5
    assert entry.stats.stale


# --- port selection ----------------------------------------------------------------------


def _fake_ports(*ports: PortInfo) -> list[PortInfo]:
    """A FAKE list_ports result: no USB adapter can be plugged in here."""
    return list(ports)


CH340_A = PortInfo(
    "/dev/ttyUSB0",
    "USB Serial",
    0x1A86,
    0x7523,
    None,
    by_id=("/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0",),
    by_path=("/dev/serial/by-path/platform-xhci-hcd.0-usb-0:1.1:1.0-port0",),
)
CH340_B = PortInfo(
    "/dev/ttyUSB1",
    "USB Serial",
    0x1A86,
    0x7523,
    None,
    by_path=("/dev/serial/by-path/platform-xhci-hcd.0-usb-0:1.2:1.0-port0",),
)
FTDI = PortInfo(
    "/dev/ttyUSB2",
    "FT232R USB UART",
    0x0403,
    0x6001,
    "A50285BI",
    by_id=("/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",),
    by_path=("/dev/serial/by-path/platform-xhci-hcd.0-usb-0:1.3:1.0-port0",),
)


def test_usb_selectors_parse_and_bad_ones_say_how_to_write_them() -> None:
    sel = parse_selector("usb:0403:6001:A50285BI")
    assert not isinstance(sel, str)
    assert (sel.vid, sel.pid, sel.serial_number) == (0x0403, 0x6001, "A50285BI")
    assert parse_selector("/dev/serial/by-id/x") == "/dev/serial/by-id/x"
    with pytest.raises(ValueError, match=r"usb:VID:PID.*usb:1a86:7523"):
        parse_selector("usb:1a86")
    with pytest.raises(Exception, match="not a USB match"):
        LineOptions(port="usb:xyz:7523")


def test_a_usb_match_finds_the_one_port() -> None:
    ports = _fake_ports(CH340_A, FTDI)
    assert find_port(parse_selector("usb:0403:6001"), ports) == "/dev/ttyUSB2"
    assert find_port(parse_selector("usb:0403:6001:A50285BI"), ports) == "/dev/ttyUSB2"
    with pytest.raises(DeviceUnavailable, match=r"no serial port matches usb:0403:6001:OTHER"):
        find_port(parse_selector("usb:0403:6001:OTHER"), ports)


def test_two_matching_ports_are_an_error_listing_both_with_their_by_path_names() -> None:
    with pytest.raises(AmbiguousPort) as err:
        find_port(parse_selector("usb:1a86:7523"), _fake_ports(CH340_A, CH340_B, FTDI))
    text = str(err.value)
    assert "2 serial ports match usb:1a86:7523" in text
    assert "/dev/ttyUSB0 (/dev/serial/by-path/platform-xhci-hcd.0-usb-0:1.1:1.0-port0)" in text
    assert "/dev/ttyUSB1 (/dev/serial/by-path/platform-xhci-hcd.0-usb-0:1.2:1.0-port0)" in text
    assert "by-path" in text.rsplit(";", 1)[1]


def test_the_suggested_selector_is_by_id_only_with_a_serial_number() -> None:
    ports = _fake_ports(CH340_A, CH340_B, FTDI)
    assert FTDI.selector(ports) == FTDI.by_id[0]
    assert CH340_A.selector(ports) == CH340_A.by_path[0]  # no serial number: the socket
    assert PortInfo("/dev/ttyAMA0").selector(ports) == "/dev/ttyAMA0"
    assert CH340_A.usb == "usb:1a86:7523"
    assert FTDI.usb == "usb:0403:6001:A50285BI"


async def test_a_usb_match_is_looked_up_again_after_renumbering(
    tmp_path: Path,
    virtual_port: MakePort,
    scripted_device: MakeDevice,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = virtual_port(), virtual_port()
    plugged = [PortInfo(first.path, vid=0x1A86, pid=0x7523)]
    monkeypatch.setattr(ports_module, "available_ports", lambda: _fake_ports(*plugged))
    entry = _entry(tmp_path)
    driver = LineDriver("s", LineOptions(port="usb:1a86:7523"))
    scripted_device(first).send(b"seq=1\n", delay=0.3)
    task = asyncio.create_task(run_serial_device(driver, entry))
    await _until(lambda: entry.stats.readings == 1)
    # A USB glitch: ttyUSB0 is gone, the same adapter comes back as another device.
    plugged[:] = [PortInfo(second.path, vid=0x1A86, pid=0x7523)]
    first.close()
    with pytest.raises(DeviceUnavailable):
        await task
    scripted_device(second).send(b"seq=2\n", delay=0.3)
    task = asyncio.create_task(run_serial_device(driver, entry))
    await _until(lambda: entry.stats.readings == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_permission_denied_names_the_group_to_join(tmp_path: Path, virtual_port: MakePort) -> None:
    """A real EACCES: the port owned by another user and group dialout, opened by a
    process without CAP_DAC_OVERRIDE (root here would open anything)."""
    pty = virtual_port()
    dialout = 20
    os.chown(pty.path, 4242, dialout)
    os.chmod(pty.path, 0o660)
    script = textwrap.dedent(
        """
        import asyncio, sys
        from devices.line import LineDriver, LineOptions
        from gateway.errors import DeviceUnavailable
        from gateway.serial.runner import open_port

        async def main():
            try:
                await open_port(LineDriver("s", LineOptions(port=sys.argv[1])), None)
            except DeviceUnavailable as err:
                print(err)

        asyncio.run(main())
        """
    )
    drop = "-dac_override,-dac_read_search"
    out = subprocess.run(
        [
            "setpriv",
            f"--bounding-set={drop}",
            f"--inh-caps={drop}",
            sys.executable,
            "-c",
            script,
            pty.path,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert re.search(
        rf"cannot open serial port {re.escape(pty.path)}: permission denied: "
        r'user \S+ may not use it; .*group "dialout".*usermod -aG dialout',
        out,
    ), out


# --- a binary stream device sending garbage, bad checksums and truncated frames -----------


def _pm_frame(pm25: int) -> bytes:
    """An SDS011-like 10-byte frame: AA C0 <pm2.5 lo hi> <pm10 lo hi> <id id> <sum> AB."""
    data = pm25.to_bytes(2, "little") + (2 * pm25).to_bytes(2, "little") + b"\x01\x02"
    return b"\xaa\xc0" + data + bytes([sum(data) & 0xFF]) + b"\xab"


class _Particles(LineDriver):
    """A binary stream driver on the stock FixedLengthFramer (a test driver)."""

    def framer(self) -> FixedLengthFramer:
        return FixedLengthFramer(
            10, header=b"\xaa", trailer=b"\xab", checksum=lambda f: sum(f[2:8]) & 0xFF == f[8]
        )

    def parse(self, frame: bytes) -> list[RawSample]:
        return [RawSample({"pm25": int.from_bytes(frame[2:4], "little")})]


async def test_a_flood_of_bad_frames_is_counted_exactly_and_logged_a_few_times(
    virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    stream = bytearray()
    for n in range(300):
        bad = bytearray(_pm_frame(n))
        bad[8] ^= 0xFF  # wrong checksum
        stream += bytes(bad) + _pm_frame(n) + _pm_frame(n)[:5]  # and a truncated one
    stream += _pm_frame(999)
    scripted_device(pty).send(bytes(stream), delay=0.3)
    driver = _Particles("pm", LineOptions(port=pty.path))
    with capture_logs() as logs:
        run = await run_serial_driver(driver, until=lambda r: 999 in r.fields("pm25"))
    assert run.fields("pm25") == [*range(300), 999]
    assert run.stats.rejected["checksum"] == 300
    # A truncated frame is read as a frame whose trailer is wrong, then resynced on (the
    # bytes skipped on the way are "garbage"); header bytes inside the data add a few more.
    assert run.stats.rejected["malformed"] >= 300 - 1
    assert run.stats.rejected["garbage"] >= 300 - 1
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) < 50, (
        f"{len(warnings)} warnings for {sum(run.stats.rejected.values())} rejections"
    )


async def test_a_device_chattering_between_polls_cannot_grow_memory(
    tmp_path: Path, virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    device = scripted_device(pty).respond(b"READ", b"v=1\n")
    entry = _entry(tmp_path)
    port = await _open(pty.path, entry)
    try:
        assert await port.transact(b"READ\n", 2.0) == b"v=1"
        chatter = 20 * MAX_QUEUED_FRAMES
        device.send(b"".join(f"noise={n}\n".encode() for n in range(chatter)))
        await _until(
            lambda: entry.stats.rejected.get("unsolicited", 0) >= chatter - MAX_QUEUED_FRAMES
        )
        assert await port.transact(b"READ\n", 2.0) == b"v=1"
    finally:
        await port.close()
    # The oldest were dropped as they came, the rest before the next request (one count).
    assert entry.stats.rejected == {"unsolicited": chatter - MAX_QUEUED_FRAMES + 1}


async def test_a_port_in_use_is_refused_with_a_clear_message(
    tmp_path: Path, virtual_port: MakePort
) -> None:
    pty = virtual_port()
    first = await _open(pty.path, _entry(tmp_path))
    try:
        with pytest.raises(DeviceUnavailable) as err:
            await _open(pty.path, _entry(tmp_path / "other"))
    finally:
        await first.close()
    assert f"cannot open serial port {pty.path}: it is in use by another program" in str(err.value)
