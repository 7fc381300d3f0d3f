"""The ``nmea`` driver: cases, real receiver captures against gpsd's output, a pty, the gateway."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import serial_asyncio_fast
from driver_cases.cases import Case, cases, decode_stream, run
from gateway_proc import GatewayProcess
from servers import SerialPtyFactory, wait_until
from stored_rows import stored_rows

from devices.nmea import NmeaDriver, NmeaOptions
from devices.nmea.simulator import Garbage, NmeaSimulator, checksum, read_capture, restamp
from gateway import query
from gateway.delivery.spool import Spool
from gateway.driver import RawSample, RejectedInput
from gateway.pipeline.intake import Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.pipeline.reading import Reading
from gateway.pipeline.timesource import TimeSource
from gateway.serial.runner import run_serial_device

DATA = Path(__file__).parent / "data" / "nmea"
# gpsd's regression output moves the dates of receivers hit by the GPS week rollover
# 1024 weeks on (its rollover correction); the driver reports the date as sent.
ROLLOVER = timedelta(weeks=1024)
CAPTURES = {"bu353s4.log": ROLLOVER, "gr601-w.log": ROLLOVER, "sirfstarv-nmea.log": timedelta(0)}
KNOT_M_S = 1852 / 3600
# gpsd's TPV key, our field, and half a unit of gpsd's last printed decimal.
COMPARED = (
    ("lat", "latitude", 5e-10),
    ("lon", "longitude", 5e-10),
    ("altMSL", "altitude", 5e-4),
    ("track", "course", 5e-5),
)


@pytest.mark.parametrize("case", cases("nmea"))
def test_case(case: Case) -> None:
    run(case, NmeaDriver)


def _driver(**options: Any) -> NmeaDriver:
    return NmeaDriver("gps", NmeaOptions.model_validate({"port": "/dev/null", **options}))


def _capture_bytes(name: str) -> bytes:
    return b"".join(s + b"\r\n" for s in read_capture(DATA / name))


def _gpsd_fixes(name: str) -> list[dict[str, Any]]:
    """gpsd's end-of-epoch TPV reports (the ones with a time) for a capture."""
    reports = [
        json.loads(line)
        for line in (DATA / f"{name}.chk").read_text().splitlines()
        if line.startswith("{")
    ]
    return [r for r in reports if r["class"] == "TPV" and "time" in r]


def _num(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def _ns(iso: str) -> int:
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return (int(when.timestamp()) * 10**6 + when.microsecond) * 1000


# -- real receivers, with gpsd as the oracle ------------------------------------------------


@pytest.mark.parametrize(("name", "gpsd_offset"), CAPTURES.items())
def test_every_fix_gpsd_decoded_we_decode_the_same(name: str, gpsd_offset: timedelta) -> None:
    samples, reasons, overflows = decode_stream(_driver(), _capture_bytes(name))
    assert (reasons, overflows) == ([], 0)
    ours = {s.time_ns: s.fields for s in samples}
    assert len(ours) == len(samples), "one reading per epoch"
    fixes = _gpsd_fixes(name)
    assert len(fixes) >= 9
    offset_ns = int(gpsd_offset.total_seconds()) * 10**9
    for fix in fixes:
        time_ns = _ns(fix["time"]) - offset_ns
        assert time_ns in ours, f"gpsd has a fix at {fix['time']}, we have none"
        fields = ours[time_ns]
        where = f"{name} {fix['time']}"
        assert fields["fix_mode"] == fix["mode"], where
        for key, field, tolerance in COMPARED:
            assert (key in fix) == (field in fields), f"{where}: {key} vs {field}"
            if key in fix:
                assert abs(_num(fields[field]) - fix[key]) <= tolerance + 1e-9, (where, key)
        assert abs(_num(fields["speed"]) * KNOT_M_S - fix["speed"]) <= 5e-4 + 1e-9, where
    # Every epoch we emit is one gpsd reported too (none invented); the first epoch of a
    # capture may be one gpsd reported before it saw a date.
    assert len(samples) in (len(fixes), len(fixes) + 1)


def test_a_sirf_binary_capture_gives_no_reading_and_no_crash() -> None:
    """A receiver left in SiRF binary mode (BU-303): everything is rejected or skipped."""
    data = (DATA / "bu303-moving.log").read_bytes()
    body = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"#"))
    samples, reasons, _ = decode_stream(_driver(), body)
    assert samples == []
    assert reasons, "the binary frames are counted as rejections"
    assert set(reasons) <= {"malformed", "checksum", "encoding"}


# -- the simulator ---------------------------------------------------------------------


def test_restamped_capture_decodes_to_the_same_positions_at_the_new_time() -> None:
    start = datetime(2026, 11, 30, 23, 59, 58, tzinfo=UTC)
    original = read_capture(DATA / "gr601-w.log")
    moved = restamp(original, start)
    assert all(checksum(s[1:].split(b"*")[0]) == s.split(b"*")[1] for s in moved)
    before, _, _ = decode_stream(_driver(), b"".join(s + b"\r\n" for s in original))
    after, reasons, _ = decode_stream(_driver(), b"".join(s + b"\r\n" for s in moved))
    assert reasons == []
    assert [s.fields for s in after] == [s.fields for s in before]
    times = [s.time_ns for s in after if s.time_ns is not None]
    # The capture opens with the GLL ending epoch 14:32:51, so the first RMC date is 1 s later.
    assert times[0] == (int(start.timestamp()) + 1) * 10**9
    # The capture's one-second spacing is kept, across midnight and the date change.
    assert [t - times[0] for t in times] == [i * 10**9 for i in range(len(times))]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("bad_checksum", "checksum"),
        ("truncated", "checksum"),
        ("no_checksum", "checksum"),
        ("binary", "malformed"),
    ],
)
def test_garbage_between_epochs_is_rejected_and_costs_no_epoch(kind: Garbage, reason: str) -> None:
    sim = NmeaSimulator.from_file(DATA / "bu353s4.log", seed=3)
    clean, _, _ = decode_stream(_driver(), b"".join(s + b"\r\n" for s in sim.sentences))
    dirty = b"".join(s + b"\r\n" + sim.garbage(kind) for s in sim.sentences)
    samples, reasons, _ = decode_stream(_driver(), dirty)
    assert [s.fields for s in samples] == [s.fields for s in clean]
    assert reasons == [reason] * len(sim.sentences)


def test_noise_and_long_lines_are_dropped_and_the_stream_recovers() -> None:
    sim = NmeaSimulator.from_file(DATA / "gr601-w.log", seed=5)
    garbage = b"".join(sim.garbage("noise") + sim.garbage("long_line") for _ in range(200))
    samples, reasons, overflows = decode_stream(_driver(), garbage + _capture_bytes("gr601-w.log"))
    assert set(reasons) <= {"malformed", "checksum", "encoding"}
    assert overflows >= 100
    # The last long line swallows the capture's first sentence, up to its line end.
    good, _, _ = decode_stream(_driver(), _capture_bytes("gr601-w.log"))
    assert [s.fields for s in samples] == [s.fields for s in good]


def test_defaults_and_option_errors() -> None:
    assert NmeaOptions.model_validate({"port": "/dev/ttyUSB0"}).baudrate == 4800
    assert _driver().expected_interval == 2.0  # stale after 10 s without an epoch
    with pytest.raises(ValueError, match="require_checksum"):
        NmeaOptions.model_validate({"port": "/dev/ttyUSB0", "require_checksum": "yes"})


# -- through a real pseudo-terminal ------------------------------------------------------


async def test_pty_replay_with_garbage(serial_pty: SerialPtyFactory) -> None:
    pty = serial_pty()
    sim = NmeaSimulator.from_file(DATA / "sirfstarv-nmea.log", pty.master_fd, seed=1)
    driver = _driver(port=pty.path)
    expected, _, _ = decode_stream(_driver(), b"".join(s + b"\r\n" for s in sim.sentences))
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=pty.path)
    framer = driver.framer()
    samples: list[RawSample] = []
    reasons: list[str] = []

    def send() -> None:
        while sim.remaining:
            sim.write_sentences(7)
            sim.write(sim.garbage("bad_checksum"))

    try:
        sending = asyncio.create_task(asyncio.to_thread(send))
        async with asyncio.timeout(20):
            while len(samples) < len(expected):
                for frame in framer.feed(await reader.read(4096)):
                    try:
                        samples += driver.parse(frame)
                    except RejectedInput as err:
                        reasons.append(err.reason)
        await sending
    finally:
        writer.close()
    assert samples == expected
    assert set(reasons) == {"checksum"}


# -- GPS time and the gateway's clock ----------------------------------------------------


@pytest.mark.parametrize("synchronized", [False, True])
async def test_gps_time_wins_while_the_gateway_clock_is_unsynchronized(
    tmp_path: Path, serial_pty: SerialPtyFactory, synchronized: bool
) -> None:
    """A Pi without a real-time clock boots in 1970: the receiver's time is the good one."""
    pty = serial_pty()
    sim = NmeaSimulator.from_file(DATA / "bu353s4.log", pty.master_fd)  # 2014, as sent
    expected, _, _ = decode_stream(_driver(), b"".join(s + b"\r\n" for s in sim.sentences))
    boot = 10**9  # 1970-01-01T00:00:01Z
    clock = TimeSource(
        check_sync=True,
        wall_ns=lambda: boot + time.monotonic_ns(),
        synchronized=lambda: synchronized,
    )
    clock.refresh_sync()
    assert clock.unsynced is not synchronized
    spool = Spool(tmp_path / "spool.db", ["local"])
    pipeline = Pipeline(spool, time_source=clock)
    readings: list[Reading] = []
    pipeline.taps.append(lambda _device, reading: readings.append(reading))
    entry = pipeline.device("gps", NormalizeConfig())
    task = asyncio.create_task(run_serial_device(_driver(port=pty.path), entry))
    try:
        async with asyncio.timeout(10):
            while entry.stats.state != "running":
                await asyncio.sleep(0.01)
            sim.write_sentences(len(sim.sentences))
            while len(readings) < len(expected):
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await spool.close()
    times = [r.time_ns for r in readings]
    if synchronized:  # 44 years from the gateway's clock: replaced, counted
        now = clock.now_ns()
        assert all(abs(t - now) < 60 * 10**9 for t in times)
        assert entry.stats.dropped_fields == {"clock_skew": len(expected)}
    else:  # kept as the receiver sent it, untagged
        assert times == [s.time_ns for s in expected]
        assert all("clock" not in r.tags for r in readings)


# -- the whole gateway -----------------------------------------------------------------


@pytest.mark.integration
def test_gateway_stores_gps_epochs_at_gps_time(
    serial_pty: SerialPtyFactory, gateway_process: Any
) -> None:
    pty = serial_pty()
    # A minute ago: within the core's max_clock_skew_s (300 s), so the GPS time is kept.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    sim = NmeaSimulator.from_file(DATA / "bu353s4.log", pty.master_fd, start=start, seed=2)
    expected, _, _ = decode_stream(_driver(), b"".join(s + b"\r\n" for s in sim.sentences))
    config: dict[str, Any] = {
        "spool": {"commit_interval": "20ms"},
        "sinks": {"local": {"flush_interval": "50ms"}},
        "devices": {
            "gps": {
                "driver": "nmea",
                "port": pty.path,
                "measurement": "gnss",
                "fields": {"speed": {"unit": "kn", "to_unit": "km/h"}},
            }
        },
    }
    gw: GatewayProcess = gateway_process(config).start()

    def stored() -> list[query.Row]:
        path = gw.state_dir / "readings.db"
        if not path.exists():
            return []
        return query.run_query(path, query.QueryRequest(limit=None, fields=["latitude"]))

    opened = ("serial port opened", "gps")
    wait_until(
        lambda: any((e.get("event"), e.get("device")) == opened for e in gw.log_events()), 10
    )
    sent = 0
    while sim.remaining:
        sim.write_sentences(9)
        sim.write(sim.garbage("bad_checksum"))
        sent += 1
    wait_until(lambda: len(stored()) >= len(expected), 15, what=f"{len(expected)} epochs stored")
    assert gw.stop() == 0, gw.log_tail()
    doc = gw.status()  # the counters the gateway wrote when it stopped

    rows = stored_rows(gw.state_dir)
    by_time: dict[int, dict[str, Any]] = {}
    for row in rows:
        by_time.setdefault(row["time_ns"], {})[row["field"]] = row["value"]
    assert sorted(by_time) == [s.time_ns for s in expected], "every epoch once, at GPS time"
    for sample in expected:
        fields = by_time[sample.time_ns]  # type: ignore[index]
        assert fields["latitude"] == pytest.approx(sample.fields["latitude"], abs=1e-12)
        assert fields["longitude"] == pytest.approx(sample.fields["longitude"], abs=1e-12)
        assert fields["speed"] == pytest.approx(_num(sample.fields["speed"]) * 1.852, abs=1e-9)
    assert doc["devices"]["gps"]["rejected"] == {"checksum": sent}
