"""The ``modbus`` driver: encoding, framing, and slaves played by pymodbus's RTU server."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from driver_cases.cases import Case, cases, run
from gateway_proc import GatewayProcess
from pymodbus.simulator import DataType, SimData, SimDevice
from stored_rows import stored_rows

from devices.modbus import ModbusDriver, ModbusOptions, Register
from devices.modbus._driver import _blocks, value_of
from devices.modbus._rtu import RtuFramer, crc16_modbus, read_request, with_crc
from devices.modbus.simulator import ModbusSimulator, example_devices
from gateway.testing import run_serial_driver

SimFactory = Callable[[list[Any]], Coroutine[Any, Any, ModbusSimulator]]


@pytest.mark.parametrize("case", cases("modbus"))
def test_case(case: Case) -> None:
    run(case, ModbusDriver)


def _register(**spec: Any) -> Register:
    return Register.model_validate({"name": "x", "slave": 1, "address": 0, **spec})


def _driver(port: str, registers: list[dict[str, Any]], **options: Any) -> ModbusDriver:
    raw = {"port": port, "poll_interval": 0.05, "registers": registers, **options}
    return ModbusDriver("bus", ModbusOptions.model_validate(raw))


# -- the protocol without I/O ---------------------------------------------------------------


def test_request_is_the_specifications_example() -> None:
    # Modbus over serial line, the classic example: slave 17, registers 108-110.
    assert read_request(17, 3, 107, 3) == bytes.fromhex("11 03 00 6B 00 03 76 87")


@pytest.mark.parametrize(
    ("spec", "raw", "value"),
    [
        ({"type": "uint16"}, struct.pack(">H", 65535), 65535),
        ({"type": "int16"}, struct.pack(">h", -5), -5),
        ({"type": "int16", "byte_order": "little"}, struct.pack("<h", -5), -5),
        ({"type": "uint32"}, struct.pack(">I", 4_000_000_000), 4_000_000_000),
        ({"type": "int32"}, struct.pack(">i", -70000), -70000),
        (
            {"type": "int32", "word_order": "little"},
            struct.pack(">i", -70000)[2:] + struct.pack(">i", -70000)[:2],
            -70000,
        ),
        ({"type": "float32"}, struct.pack(">f", 230.5), 230.5),
        (
            {"type": "float32", "byte_order": "little", "word_order": "little"},
            struct.pack("<f", 230.5),
            230.5,
        ),
        ({"type": "int16", "scale": 0.1}, struct.pack(">h", 215), 21.5),
        ({"type": "uint16", "scale": 2.0, "offset": -40.0}, struct.pack(">H", 30), 20.0),
    ],
)
def test_values_decode_with_every_type_and_order(
    spec: dict[str, Any], raw: bytes, value: float
) -> None:
    got = value_of(_register(**spec), raw)
    assert got == pytest.approx(value)
    assert type(got) is (float if "scale" in spec or spec["type"] == "float32" else int)


def test_touching_registers_share_a_request() -> None:
    regs = [
        _register(name="a", address=0, type="float32", table="input"),
        _register(name="b", address=2, type="float32", table="input"),
        _register(name="c", address=10, table="input"),  # a gap: its own request
        _register(name="d", address=0),  # holding: its own request
        # 64 touching floats (128 registers): one request can read 125 at most.
        *(_register(name=f"f{i}", slave=2, address=2 * i, type="float32") for i in range(64)),
    ]
    blocks = _blocks(regs)
    shape = {
        slave: [(b.function, b.address, b.count, [r.name for r in b.registers]) for b in found]
        for slave, found in blocks.items()
    }
    assert shape == {
        1: [(3, 0, 1, ["d"]), (4, 0, 4, ["a", "b"]), (4, 10, 1, ["c"])],
        2: [
            (3, 0, 124, [f"f{i}" for i in range(62)]),
            (3, 124, 4, ["f62", "f63"]),
        ],
    }


def test_slaves_are_polled_in_turn_within_the_poll_interval() -> None:
    driver = _driver(
        "/dev/null",
        [{"name": "a", "slave": 1, "address": 0}, {"name": "b", "slave": 7, "address": 0}],
        poll_interval="10s",
    )
    assert (driver.poll_interval, driver.response_timeout, driver.retries) == (5.0, 0.5, 1)


def test_framer_finds_answers_among_garbage_and_bad_crcs() -> None:
    answer = with_crc(bytes([1, 3, 4, 0, 1, 0, 2]))
    exception = with_crc(bytes([2, 0x84, 2]))
    broken = answer[:-1] + bytes([answer[-1] ^ 1])
    echo = read_request(1, 3, 0, 2)  # an RS-485 adapter echoing the request
    stream = b"\x00\xff\x13" + answer + broken + echo + exception + answer
    framer = RtuFramer()
    frames = [f for i in range(0, len(stream), 3) for f in framer.feed(stream[i : i + 3])]
    assert frames == [answer, exception, answer]
    reasons = {reason for reason, _count, _message in framer.take_drops()}
    assert reasons == {"checksum", "garbage"}
    assert crc16_modbus(answer[:-2]).to_bytes(2, "little") == answer[-2:]


# -- slaves played by pymodbus ---------------------------------------------------------------


@pytest.fixture
async def modbus_sim() -> AsyncIterator[SimFactory]:
    made: list[ModbusSimulator] = []

    async def make(devices: list[Any]) -> ModbusSimulator:
        sim = ModbusSimulator(devices)
        await sim.start()
        made.append(sim)
        return sim

    yield make
    for sim in made:
        await sim.stop()


def _holding(slave: int, *blocks: SimData) -> SimDevice:
    bits = [SimData(0, count=16, values=False, datatype=DataType.BITS)]
    plain = [SimData(0, values=[0], datatype=DataType.REGISTERS)]
    return SimDevice(slave, (bits, bits, list(blocks), plain))


async def test_values_as_pymodbus_encodes_them(modbus_sim: SimFactory) -> None:
    regs = DataType.REGISTERS
    sim = await modbus_sim(
        [
            _holding(
                1,
                SimData(0, values=[230.5], datatype=DataType.FLOAT32),
                SimData(2, values=[-70000], datatype=DataType.INT32),
                SimData(4, values=[4_000_000_000], datatype=DataType.UINT32),
                SimData(6, values=[0xFFFB, 215], datatype=regs),
            ),
            _holding(9, SimData(0, values=[0x8000, 0x4366], datatype=regs)),  # 230.5 swapped
        ]
    )
    driver = _driver(
        sim.path,
        [
            {"name": "f", "slave": 1, "address": 0, "type": "float32"},
            {"name": "i", "slave": 1, "address": 2, "type": "int32"},
            {"name": "u", "slave": 1, "address": 4, "type": "uint32"},
            {"name": "s", "slave": 1, "address": 6, "type": "int16"},
            {"name": "t", "slave": 1, "address": 7, "type": "int16", "scale": 0.1},
            {"name": "w", "slave": 9, "address": 0, "type": "float32", "word_order": "little"},
        ],
    )
    result = await run_serial_driver(driver, readings=4)
    by_slave = {r.tags["slave"]: dict(r.fields) for r in result.readings}
    assert by_slave == {
        "1": {"f": 230.5, "i": -70000.0, "u": 4_000_000_000.0, "s": -5.0, "t": 21.5},
        "9": {"w": 230.5},
    }
    assert result.stats.rejected == {}


async def test_a_missing_register_is_a_device_error_and_other_slaves_go_on(
    modbus_sim: SimFactory,
) -> None:
    sim = await modbus_sim(example_devices())
    driver = _driver(
        sim.path,
        [
            {"name": "voltage", "slave": 1, "address": 0, "table": "input", "type": "float32"},
            {"name": "nothing", "slave": 2, "address": 500},
        ],
    )
    result = await run_serial_driver(
        driver, until=lambda r: len(r.readings) >= 5 and "device_error" in r.stats.rejected
    )
    assert {r.tags["slave"] for r in result.readings} == {"1"}
    assert set(result.fields("voltage")) == {230.5}
    assert set(result.stats.rejected) == {"device_error"}


async def test_a_silent_slave_costs_only_its_turns(modbus_sim: SimFactory) -> None:
    sim = await modbus_sim(example_devices())
    sim.line.silent.add(2)  # slave 2 is switched off
    driver = _driver(
        sim.path,
        [
            {"name": "voltage", "slave": 1, "address": 0, "table": "input", "type": "float32"},
            {"name": "temperature", "slave": 2, "address": 0},
        ],
        response_timeout=0.05,
        retries=0,
    )
    result = await run_serial_driver(
        driver, until=lambda r: r.stats.rejected.get("no_response", 0) >= 4
    )
    assert result.ended is None, "one dead slave never makes the port reopen"
    assert len(result.readings) >= 3
    assert {r.tags["slave"] for r in result.readings} == {"1"}
    assert set(result.stats.rejected) <= {"no_response", "late_answer"}


async def test_corrupted_answers_are_counted_and_retried(modbus_sim: SimFactory) -> None:
    sim = await modbus_sim(example_devices())
    driver = _driver(
        sim.path,
        [{"name": "temperature", "slave": 2, "address": 0, "type": "int16", "scale": 0.1}],
        response_timeout=0.2,
    )
    sim.line.corrupt(3)
    result = await run_serial_driver(driver, readings=5)
    assert set(result.fields("temperature")) == {21.5}
    assert result.stats.rejected.get("checksum") == 3


# -- the whole gateway -----------------------------------------------------------------


@pytest.mark.integration
async def test_gateway_reads_two_slaves(modbus_sim: SimFactory, gateway_process: Any) -> None:
    sim = await modbus_sim(example_devices())
    config: dict[str, Any] = {
        "spool": {"commit_interval": "20ms"},
        "sinks": {"local": {"flush_interval": "50ms"}},
        "devices": {
            "bus": {
                "driver": "modbus",
                "port": sim.path,
                "poll_interval": "100ms",
                "measurement": "plant",
                "registers": [
                    {
                        "name": "voltage",
                        "slave": 1,
                        "table": "input",
                        "address": 0,
                        "type": "float32",
                    },
                    {
                        "name": "power",
                        "slave": 1,
                        "table": "input",
                        "address": 4,
                        "type": "float32",
                    },
                    {
                        "name": "temperature",
                        "slave": 2,
                        "address": 0,
                        "type": "int16",
                        "scale": 0.1,
                    },
                    {"name": "setpoint", "slave": 2, "address": 1, "type": "int16", "scale": 0.1},
                ],
            }
        },
    }
    gw: GatewayProcess = gateway_process(config)
    # The simulated slaves answer from this event loop: block it only in threads.
    check = await asyncio.to_thread(gw.cli, "check-config")
    assert check.returncode == 0, check.stderr
    await asyncio.to_thread(gw.start)

    def rows() -> list[dict[str, Any]]:
        return stored_rows(gw.state_dir, "bus")

    async with asyncio.timeout(30):
        while len({r["tags"]["slave"] for r in await asyncio.to_thread(rows)}) < 2:
            await asyncio.sleep(0.2)
    assert await asyncio.to_thread(gw.stop) == 0, gw.log_tail()
    values = {(r["tags"]["slave"], r["field"], r["value"]) for r in rows()}
    assert values == {
        ("1", "voltage", 230.5),
        ("1", "power", 288.125),
        ("2", "temperature", 21.5),
        ("2", "setpoint", -5.0),
    }
