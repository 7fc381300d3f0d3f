"""Recording a capture (``sensor-gateway capture``) and replaying it: a simulated device on a
pseudo-terminal is recorded, the capture is replayed into the driver, and the driver reads
the same readings as from the device itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import serial

from devices._serve import serving
from devices.line import LineDriver, LineOptions
from devices.mhz19 import Mhz19Driver, Mhz19Options
from devices.mhz19._protocol import READ_CO2, command
from devices.mhz19.simulator import Mhz19Device
from gateway.cli import main
from gateway.cli.capture import parse_framing, parse_request
from gateway.errors import DeviceUnavailable
from gateway.testing import (
    Capture,
    PluggableSerialPty,
    ScriptedDevice,
    SerialPty,
    SerialRun,
    run_serial_driver,
)
from gateway.testing.record import format_event, record_capture

ROOT = Path(__file__).resolve().parents[1]


class _Until:
    """Stops a recording once ``done(everything received)`` holds."""

    def __init__(self, done: Callable[[bytes], bool]) -> None:
        self.received = b""
        self.stop = asyncio.Event()
        self._done = done

    def __call__(self, data: bytes) -> None:
        self.received += data
        if self._done(self.received):
            self.stop.set()


def _replay_once_open(
    device: ScriptedDevice, capture: Capture, readings: int
) -> Callable[[SerialRun], bool]:
    """An ``until`` for run_serial_driver: replays ``capture`` once the driver's port is
    open (opening a port flushes what came before), done after ``readings`` readings."""
    started = False

    def until(run: SerialRun) -> bool:
        nonlocal started
        if not started and run.stats.state == "running":
            device.replay(capture, speed=4.0)
            started = True
        return len(run.readings) >= readings

    return until


async def test_a_streaming_device_recorded_and_replayed_gives_the_same_readings(
    tmp_path: Path,
    virtual_port: Callable[[], SerialPty],
    pluggable_port: Callable[..., PluggableSerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    usb = pluggable_port("usb-Example_Thermo_0001-if00-port0")
    count = 20
    sent = [f"seq={n} t=21.5\n".encode() for n in range(count)]
    until = _Until(lambda got: got.count(b"\n") >= count)
    out = tmp_path / "thermo.cap"
    recording = asyncio.create_task(record_capture(usb.path, out, stop=until.stop, on_data=until))
    # The file is created once the port is open (opening flushes what came before).
    while not out.exists():
        await asyncio.sleep(0.01)
    # Opened exclusively, as the gateway opens a port: nobody else gets it meanwhile.
    with pytest.raises(serial.SerialException):
        await asyncio.to_thread(serial.Serial, usb.path, exclusive=True)
    scripted_device(usb).stream(lambda n: sent[n], rate_hz=20, count=count)
    result = await asyncio.wait_for(recording, 30)

    assert (result.path, result.ended) == (usb.path, "stopped")
    capture = Capture.load(out)
    assert capture.device_bytes() == b"".join(sent)
    assert {e.direction for e in capture.events} == {"<"}
    assert capture.events[0].t == 0.0
    # The timing is kept: 20 lines at 20 Hz span at least most of a second.
    assert capture.events[-1].t > 0.5
    text = out.read_text()
    assert text.startswith("# sensor-gateway capture v1\n# recorded from ")
    assert usb.path in text.splitlines()[1]

    replay_port = virtual_port()
    device = scripted_device(replay_port)
    driver = LineDriver("thermo", LineOptions(port=replay_port.path))
    run = await run_serial_driver(driver, until=_replay_once_open(device, capture, count))
    assert [dict(r.fields) for r in run.readings] == [{"seq": n, "t": 21.5} for n in range(count)]
    assert run.stats.rejected == {}


async def test_a_polled_device_recorded_with_its_requests_answers_the_replayed_polls(
    tmp_path: Path,
    virtual_port: Callable[[], SerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    pty = virtual_port()
    sensor = Mhz19Device()
    answers = 5
    until = _Until(lambda got: len(got) >= 9 * answers)
    out = tmp_path / "co2.cap"
    with serving(pty.master_fd, sensor):
        result = await asyncio.wait_for(
            record_capture(
                pty.path,
                out,
                request=command(READ_CO2),
                interval=0.05,
                stop=until.stop,
                on_data=until,
            ),
            30,
        )
    assert result.requests >= answers
    capture = Capture.load(out)
    assert capture.events[0].direction == ">"
    assert capture.events[0].data == command(READ_CO2)
    assert "ff 01 86 00 00 00 00 00 79" in out.read_text()  # binary is written as hex

    # The sensor itself answered 400, 401, …; the replay answers the driver's polls alike.
    replay_port = virtual_port()
    scripted_device(replay_port, sensor.request_framer()).replay(capture)
    driver = Mhz19Driver(
        "co2", Mhz19Options.model_validate({"port": replay_port.path, "poll_interval": 0.02})
    )
    run = await run_serial_driver(driver, readings=answers)
    assert run.fields("co2") == list(range(400, 400 + answers))
    assert run.stats.rejected == {}


def test_capture_command_records_for_a_duration_and_exits_0(
    tmp_path: Path,
    virtual_port: Callable[[], SerialPty],
    scripted_device: Callable[..., ScriptedDevice],
) -> None:
    pty = virtual_port()
    scripted_device(pty).stream(lambda n: f"n={n}\n".encode(), rate_hz=50)
    out = tmp_path / "cli.cap"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "capture", pty.path, "-o", str(out),
         "--baud", "115200", "--framing", "8N1", "--duration", "600ms"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"recording {pty.path} at 115200 8N1 for 600ms into {out}" in result.stderr
    assert "(duration)" in result.stderr
    lines = Capture.load(out).device_bytes().decode().splitlines()
    assert lines
    assert lines == [f"n={n}" for n in range(int(lines[0][2:]), int(lines[0][2:]) + len(lines))]


def test_capture_command_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "by-id" / "usb-Nothing-if00-port0"
    assert main(["capture", str(missing), "-o", str(tmp_path / "x.cap")]) == 1
    err = capsys.readouterr().err
    assert f"cannot open serial port {missing}" in err
    assert "does not exist" in err
    assert not (tmp_path / "x.cap").exists()
    assert main(["capture", str(missing), "-o", "x.cap", "--framing", "9X1"]) == 2
    assert "--framing '9X1': expected data bits, parity, stop bits" in capsys.readouterr().err
    assert main(["capture", str(missing), "-o", "x.cap", "--request", "zz"]) == 2
    assert "--request 'zz'" in capsys.readouterr().err


def test_framing_requests_and_events_read_back() -> None:
    assert parse_framing("7e1") == (7, "E", 1)
    assert parse_framing("8N2") == (8, "N", 2)
    assert parse_request("ff 01 86") == b"\xff\x01\x86"
    assert parse_request('"READ\\n"') == b"READ\n"
    with pytest.raises(ValueError, match="empty"):
        parse_request('""')
    events = [(0.0, ">", b"READ\n"), (0.0125, "<", b"t=1 'q' \"x\"\r\n"), (1.5, "<", b"\xff\x86")]
    text = "# sensor-gateway capture v1\n" + "\n".join(
        format_event(t, d, data)  # type: ignore[arg-type]
        for t, d, data in events
    )
    parsed = Capture.parse(text).events
    assert [(e.t, e.direction, e.data) for e in parsed] == events


async def test_a_usb_selector_nothing_matches_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailable, match="no serial port matches usb:0403:6001"):
        await record_capture("usb:0403:6001", tmp_path / "x.cap", duration=0.1)
