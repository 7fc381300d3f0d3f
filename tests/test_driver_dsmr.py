"""The ``dsmr`` driver: cases, the real telegrams, the framer, a pty and the whole gateway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import serial_asyncio_fast
from driver_cases.cases import Case, cases, decode_stream, run
from gateway_proc import GatewayProcess
from servers import SerialPtyFactory, wait_until
from stored_rows import stored_rows

from devices.dsmr import DsmrDriver, DsmrOptions
from devices.dsmr._framer import TelegramFramer, crc16
from devices.dsmr.simulator import Garbage, P1Simulator, with_crc
from gateway import query
from gateway.driver import RawSample, RejectedInput

DATA = Path(__file__).parent / "data" / "dsmr"
KAIFA = DATA / "v4_2-kaifa.txt"
ISKRA = DATA / "v5-iskra.txt"


@pytest.mark.parametrize("case", cases("dsmr"))
def test_case(case: Case) -> None:
    run(case, DsmrDriver)


def _driver(**options: Any) -> DsmrDriver:
    return DsmrDriver("meter", DsmrOptions.model_validate({"port": "/dev/null", **options}))


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp()) * 10**9


# -- the real telegrams ------------------------------------------------------------------


def test_real_telegrams_carry_a_valid_crc16_arc() -> None:
    for path in (KAIFA, ISKRA):
        data = path.read_bytes()
        end = data.rindex(b"!")
        assert f"{crc16(data[: end + 1]):04X}".encode() == data[end + 1 : end + 5], path.name


def test_kaifa_dsmr_4_2_telegram() -> None:
    (meter, gas), reasons, _ = decode_stream(_driver(), KAIFA.read_bytes())
    assert reasons == []
    assert meter.time_ns == _ns("2016-11-13T20:57:57+01:00")
    assert meter.tags == {}
    assert meter.fields == {
        "energy_delivered_tariff1": 1581.123,
        "energy_delivered_tariff2": 1435.706,
        "energy_returned_tariff1": 0.0,
        "energy_returned_tariff2": 0.0,
        "tariff": 2,
        "power_delivered": 2.027,
        "power_returned": 0.0,
        "power_failures": 15,
        "long_power_failures": 7,
        "voltage_sags_l1": 0,
        "voltage_sags_l2": 0,
        "voltage_sags_l3": 0,
        "voltage_swells_l1": 0,
        "voltage_swells_l2": 0,
        "voltage_swells_l3": 0,
        "current_l1": 0.0,
        "current_l2": 6.0,
        "current_l3": 2.0,
        "power_delivered_l1": 0.17,
        "power_returned_l1": 0.0,
        "power_delivered_l2": 1.247,
        "power_returned_l2": 0.0,
        "power_delivered_l3": 0.209,
        "power_returned_l3": 0.0,
    }
    assert gas == RawSample(
        {"gas_delivered": 981.443}, {"channel": "1"}, _ns("2016-11-29T20:00:00+01:00")
    )


def test_iskra_dsmr_5_telegram() -> None:
    (meter, gas), reasons, _ = decode_stream(_driver(), ISKRA.read_bytes())
    assert reasons == []
    assert meter.time_ns == _ns("2017-01-02T19:20:02+01:00")
    fields = meter.fields
    assert (fields["energy_delivered_tariff1"], fields["energy_delivered_tariff2"]) == (
        4.426,
        2.399,
    )
    assert (fields["energy_returned_tariff1"], fields["energy_returned_tariff2"]) == (2.444, 0.0)
    assert (fields["power_delivered"], fields["power_returned"]) == (0.244, 0.0)
    assert [fields[f"voltage_l{i}"] for i in (1, 2, 3)] == [230.0, 230.0, 229.0]
    assert [fields[f"current_l{i}"] for i in (1, 2, 3)] == [0.48, 0.44, 0.86]
    assert [fields[f"power_delivered_l{i}"] for i in (1, 2, 3)] == [0.07, 0.032, 0.142]
    assert len(fields) == 27  # + 6 sag/swell and 2 failure counters, the tariff
    # Channel 2 is an empty M-Bus slot (a type, no reading): no reading for it.
    assert gas == RawSample(
        {"gas_delivered": 0.107}, {"channel": "1"}, _ns("2017-01-02T16:10:05+01:00")
    )


@pytest.mark.parametrize("path", [KAIFA, ISKRA], ids=lambda p: p.stem)
def test_a_corrupted_real_telegram_is_rejected_for_its_crc(path: Path) -> None:
    data = path.read_bytes()
    corrupted = data.replace(b"1-0:1.7.0(0", b"1-0:1.7.0(9", 1)
    assert corrupted != data
    samples, reasons, _ = decode_stream(_driver(), corrupted)
    assert (samples, reasons) == ([], ["checksum"])
    # A corrupted CRC line is caught the same way.
    end = data.rindex(b"!")
    wrong = data[: end + 1] + b"0000\r\n"
    assert decode_stream(_driver(), wrong)[1] == ["checksum"]


# -- the framer ------------------------------------------------------------------------


def test_framer_cuts_the_same_telegrams_whatever_the_read_sizes() -> None:
    stream = b"tail of a telegram\r\n!1234\r\n" + KAIFA.read_bytes() + ISKRA.read_bytes()
    whole = TelegramFramer(8192).feed(stream)
    assert whole == [KAIFA.read_bytes(), ISKRA.read_bytes()]
    for size in (1, 7, 64):
        framer = TelegramFramer(8192)
        frames = [f for i in range(0, len(stream), size) for f in framer.feed(stream[i : i + size])]
        assert frames == whole, size


def test_framer_memory_is_bounded_by_max_bytes() -> None:
    framer = TelegramFramer(1024)
    frames = framer.feed(b"/HEADER\r\n" + b"1-0:1.8.1(0*kWh)\r\n" * 1000)
    assert frames == []
    assert framer.overflows == 1
    frames = framer.feed(b"x" * 5000)  # no header at all
    assert (frames, framer.overflows) == ([], 2)
    assert framer.feed(ISKRA.read_bytes()[:800]) == []
    assert framer.feed(ISKRA.read_bytes()[800:]) == [ISKRA.read_bytes()]


def test_reset_forgets_a_partial_telegram() -> None:
    framer = TelegramFramer(8192)
    assert framer.feed(KAIFA.read_bytes()[:300]) == []
    framer.reset()
    assert framer.feed(KAIFA.read_bytes()[300:] + ISKRA.read_bytes()) == [ISKRA.read_bytes()]


# -- options ----------------------------------------------------------------------------


def test_version_sets_the_line_defaults_and_explicit_settings_win() -> None:
    assert _driver().expected_interval == 12.0  # stale after a minute without a telegram
    v5 = _driver().options
    assert (v5.baudrate, v5.bytesize, v5.parity) == (115200, 8, "N")
    v22 = _driver(p1_version="2.2").options
    assert (v22.baudrate, v22.bytesize, v22.parity, v22.stopbits) == (9600, 7, "E", 1)
    odd = _driver(p1_version="2.2", baudrate=115200).options
    assert (odd.baudrate, odd.bytesize) == (115200, 7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timezone": "Europe/Nowhere"}, 'unknown time zone "Europe/Nowhere"'),
        ({"p1_version": "6"}, "p1_version"),
        ({"p1_version": 5}, "p1_version"),
    ],
)
def test_option_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _driver(**options)


def test_dsmr_2_2_telegram_without_crc_is_accepted_only_below_version_4() -> None:
    telegram = b"/ISk5\\2MT382-1004\r\n\r\n1-0:1.8.1(00001.001*kWh)\r\n!\r\n"
    (sample,), reasons, _ = decode_stream(_driver(p1_version="2.2"), telegram)
    assert (sample.fields, sample.time_ns, reasons) == (
        {"energy_delivered_tariff1": 1.001},
        None,
        [],
    )
    assert decode_stream(_driver(), telegram)[1] == ["checksum"]


# -- the simulator ---------------------------------------------------------------------


def test_restamped_telegrams_decode_at_the_new_time() -> None:
    meter = P1Simulator.from_file(ISKRA)
    driver = _driver()
    when = datetime(2026, 7, 1, 12, 7, 31, tzinfo=UTC)
    samples, reasons, _ = decode_stream(
        driver, meter.telegram(when) + meter.telegram(when + timedelta(seconds=1))
    )
    assert reasons == []
    times = [(s.tags.get("channel"), s.time_ns) for s in samples]
    second = 10**9
    assert times == [
        (None, int(when.timestamp()) * second),
        ("1", int(datetime(2026, 7, 1, 12, 5, tzinfo=UTC).timestamp()) * second),
        (None, (int(when.timestamp()) + 1) * second),  # the same gas time: not repeated
    ]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("bad_crc", "checksum"),
        ("truncated", "truncated"),
        ("no_crc", "checksum"),
        ("noise", "truncated"),
    ],
)
def test_garbage_between_telegrams_is_rejected_and_costs_no_telegram(
    kind: Garbage, reason: str
) -> None:
    meter = P1Simulator([KAIFA.read_bytes(), ISKRA.read_bytes()], seed=7)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    stream = meter.telegram(start)
    for i in range(1, 20):
        stream += meter.garbage(kind) + meter.telegram(start + timedelta(seconds=i))
    samples, reasons, _ = decode_stream(_driver(), stream)
    meter_times = [s.time_ns for s in samples if not s.tags]
    assert meter_times == [
        int((start + timedelta(seconds=i)).timestamp()) * 10**9 for i in range(20)
    ]
    assert reasons == [reason] * 19


def test_long_telegrams_are_dropped_by_the_framer() -> None:
    meter = P1Simulator.from_file(ISKRA, seed=1)
    samples, reasons, overflows = decode_stream(
        _driver(), meter.garbage("long") + meter.telegram() + meter.garbage("long")
    )
    assert (len(samples), reasons, overflows) == (2, [], 2)


def test_with_crc_replaces_the_crc() -> None:
    data = ISKRA.read_bytes()
    assert with_crc(data.replace(b"!6EEE", b"!0000")) == data


# -- through a real pseudo-terminal ------------------------------------------------------


async def test_pty_stream_with_garbage(serial_pty: SerialPtyFactory) -> None:
    pty = serial_pty()
    meter = P1Simulator([KAIFA.read_bytes(), ISKRA.read_bytes()], pty.master_fd, seed=3)
    driver = _driver(port=pty.path)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=pty.path)
    framer = driver.framer()
    samples: list[RawSample] = []
    reasons: list[str] = []

    def send() -> None:
        for i in range(50):
            meter.write(meter.telegram(start + timedelta(seconds=i)))
            meter.write(meter.garbage("bad_crc"))

    try:
        sending = asyncio.create_task(asyncio.to_thread(send))
        async with asyncio.timeout(20):
            while len([s for s in samples if not s.tags]) < 50:
                for frame in framer.feed(await reader.read(4096)):
                    try:
                        samples += driver.parse(frame)
                    except RejectedInput as err:
                        reasons.append(err.reason)
        await sending
    finally:
        writer.close()
    assert [s.time_ns for s in samples if not s.tags] == [
        int((start + timedelta(seconds=i)).timestamp()) * 10**9 for i in range(50)
    ]
    assert reasons == ["checksum"] * 49 or reasons == ["checksum"] * 50


# -- the whole gateway -----------------------------------------------------------------


@pytest.mark.integration
def test_gateway_stores_meter_and_gas_readings_at_meter_time(
    serial_pty: SerialPtyFactory, gateway_process: Any
) -> None:
    pty = serial_pty()
    meter = P1Simulator.from_file(ISKRA, pty.master_fd, seed=4)
    config: dict[str, Any] = {
        "spool": {"commit_interval": "20ms"},
        "sinks": {"local": {"flush_interval": "50ms"}},
        "devices": {
            "meter": {
                "driver": "dsmr",
                "port": pty.path,
                "measurement": "energy",
                "fields": {"tariff": {"type": "int"}},
            }
        },
    }
    gw: GatewayProcess = gateway_process(config).start()

    def stored() -> list[query.Row]:
        path = gw.state_dir / "readings.db"
        if not path.exists():
            return []
        return query.run_query(path, query.QueryRequest(limit=None, fields=["power_delivered"]))

    opened = ("serial port opened", "meter")
    wait_until(
        lambda: any((e.get("event"), e.get("device")) == opened for e in gw.log_events()), 10
    )
    # Within the core's max_clock_skew_s of now, so the meter's time is kept.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    for i in range(10):
        if i:
            meter.write(meter.garbage("bad_crc") + meter.garbage("truncated"))
        meter.write(meter.telegram(start + timedelta(seconds=i)))
    wait_until(lambda: len(stored()) >= 10, 15, what="10 telegrams stored")
    assert gw.stop() == 0, gw.log_tail()
    doc = gw.status()  # the counters the gateway wrote when it stopped

    rows = stored_rows(gw.state_dir)
    power = [(r["time_ns"], r["value"]) for r in rows if r["field"] == "power_delivered"]
    assert power == [
        (int((start + timedelta(seconds=i)).timestamp()) * 10**9, 0.244) for i in range(10)
    ]
    gas = [r for r in rows if r["field"] == "gas_delivered"]
    assert len(gas) in (1, 2)  # once per 5-minute M-Bus time (the 10 s may straddle one)
    assert all(r["tags"] == {"channel": "1"} and r["value"] == 0.107 for r in gas)
    tariffs = {r["value"] for r in rows if r["field"] == "tariff"}
    assert tariffs == {2}
    # The truncated halves are cut off by the next telegram's header; the bad CRCs fail.
    assert doc["devices"]["meter"]["rejected"] == {"checksum": 9, "truncated": 9}
