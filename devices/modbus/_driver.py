"""The ``modbus`` driver: holding and input registers of Modbus RTU slaves on one bus."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from typing import ClassVar, Final, Literal, Self

from pydantic import Field, model_validator

from devices.modbus._rtu import EXCEPTIONS, READ_HOLDING, READ_INPUT, RtuFramer, read_request
from gateway.driver import (
    Framer,
    RawSample,
    RejectedInput,
    SerialDriver,
    SerialOptions,
    SerialPort,
)
from gateway.options import Duration, Options

__all__ = ["ModbusDriver", "ModbusOptions", "Register"]

RegisterType = Literal["int16", "uint16", "int32", "uint32", "float32"]
Order = Literal["big", "little"]
_WIDTH: Final[dict[str, int]] = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2}
_FORMAT: Final[dict[str, str]] = {
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "float32": ">f",
}
_FUNCTION: Final = {"holding": READ_HOLDING, "input": READ_INPUT}
# The protocol's limit for one read (function 3 or 4).
MAX_REGISTERS_PER_READ: Final = 125
# Meters are read for trends, not control: every 10 s is plenty and leaves the bus quiet.
DEFAULT_POLL_INTERVAL_S: Final = 10.0
# Modbus RTU slaves answer within a few tens of ms; 500 ms covers slow converters.
DEFAULT_RESPONSE_TIMEOUT_S: Final = 0.5


class Register(Options):
    """One value: where it is, how its bytes are laid out, and what it is called."""

    name: str = Field(min_length=1, description="The field name.")
    slave: int = Field(ge=1, le=247, description="The slave (unit) address, 1-247.")
    address: int = Field(ge=0, le=65535, description="The first register, 0-based as on the wire.")
    table: Literal["holding", "input"] = Field(
        default="holding", description="holding (function 3) or input (function 4) registers."
    )
    type: RegisterType = Field(default="uint16", description="How the register(s) are read.")
    byte_order: Order = Field(default="big", description="Byte order within each register.")
    word_order: Order = Field(
        default="big", description="32-bit types: big = the first register holds the high word."
    )
    scale: float = Field(default=1.0, description="The value is raw * scale + offset.")
    offset: float = Field(default=0.0, description="The value is raw * scale + offset.")
    unit: str | None = Field(
        default=None, min_length=1, description='The unit of the value ("V", "kWh"), for query.'
    )

    @property
    def count(self) -> int:
        """How many 16-bit registers the value takes."""
        return _WIDTH[self.type]


class ModbusOptions(SerialOptions):
    """Options of the ``modbus`` driver (see ``devices/modbus/sample.toml``)."""

    poll_interval: Duration = Field(
        default=DEFAULT_POLL_INTERVAL_S, gt=0, description="How often each slave is read."
    )
    response_timeout: Duration = Field(
        default=DEFAULT_RESPONSE_TIMEOUT_S, gt=0, description="How long to wait for an answer."
    )
    retries: int = Field(
        default=1, ge=0, le=5, description="How often an unanswered read is sent again."
    )
    registers: list[Register] = Field(min_length=1, description="The values to read.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_registers(self.registers)
        return self


def check_registers(registers: list[Register]) -> None:
    """ValueError for a name used twice on one slave or a value past register 65535."""
    seen: set[tuple[int, str]] = set()
    for i, reg in enumerate(registers):
        if (reg.slave, reg.name) in seen:
            msg = f'registers[{i}]: slave {reg.slave} already has a value named "{reg.name}"'
            raise ValueError(msg)
        seen.add((reg.slave, reg.name))
        if reg.address + reg.count > 65536:
            msg = f"registers[{i}]: a {reg.type} at {reg.address} runs past register 65535"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class _Block:
    """One read request: consecutive registers of one slave and table, and their values."""

    slave: int
    function: int
    address: int
    count: int
    registers: tuple[Register, ...]


def _blocks(registers: list[Register]) -> dict[int, list[_Block]]:
    """The reads per slave: touching or overlapping registers are read together."""

    def key(r: Register) -> tuple[int, int, int]:
        return (r.slave, _FUNCTION[r.table], r.address)

    out: dict[int, list[_Block]] = {}
    for (slave, function), regs in groupby(sorted(registers, key=key), key=lambda r: key(r)[:2]):
        current: list[Register] = []
        start = end = 0
        for reg in regs:
            if current and (
                reg.address > end or reg.address + reg.count - start > MAX_REGISTERS_PER_READ
            ):
                out.setdefault(slave, []).append(
                    _Block(slave, function, start, end - start, tuple(current))
                )
                current = []
            if not current:
                start = end = reg.address
            current.append(reg)
            end = max(end, reg.address + reg.count)
        out.setdefault(slave, []).append(
            _Block(slave, function, start, end - start, tuple(current))
        )
    return out


class ModbusDriver(SerialDriver[ModbusOptions]):
    """Reads registers of the slaves on a Modbus RTU bus, one slave per poll in turn.

    Each slave gives one reading per ``poll_interval`` with its values as fields and a
    ``slave`` tag. Rejections: ``device_error`` (an exception answer), ``malformed``
    (an answer of the wrong length), ``no_response`` (by the core), ``checksum`` and
    ``garbage`` (by the framer).
    """

    Options: ClassVar[type[ModbusOptions]] = ModbusOptions
    description: ClassVar[str] = "Modbus RTU slaves: holding/input registers as fields"

    def __init__(self, device: str, options: ModbusOptions) -> None:
        super().__init__(device, options)
        check_registers(options.registers)
        self.units = {r.name: r.unit for r in options.registers if r.unit is not None}
        self._blocks = _blocks(options.registers)
        self._slaves = sorted(self._blocks)
        self._turn = 0
        # The core polls at one rate; taking the slaves in turn reads each of them every
        # poll_interval, and a dead slave costs only its own turns.
        self.poll_interval = options.poll_interval / len(self._slaves)
        self.response_timeout = options.response_timeout
        self.retries = options.retries

    def framer(self) -> Framer:
        """Answers to function 3 and 4 and exceptions, CRC verified."""
        return RtuFramer()

    async def poll(self, port: SerialPort) -> list[RawSample]:
        """Read every block of the next slave; one reading with all its values."""
        slave = self._slaves[self._turn]
        self._turn = (self._turn + 1) % len(self._slaves)
        fields: dict[str, object] = {}
        for block in self._blocks[slave]:
            request = read_request(block.slave, block.function, block.address, block.count)
            frame = await port.transact(request, accept=_answers(block))
            fields.update(decode_block(block, frame))
        return [RawSample(fields, {"slave": str(slave)})]

    def parse(self, frame: bytes) -> list[RawSample]:
        """Not used: answers are decoded in :meth:`poll`, where the request is known."""
        msg = f"an answer nobody asked for: {frame[:16].hex(' ')}"
        raise RejectedInput(msg, reason="unsolicited")


def _answers(block: _Block) -> Callable[[bytes], bool]:
    return lambda frame: frame[0] == block.slave and frame[1] & 0x7F == block.function


def decode_block(block: _Block, frame: bytes) -> dict[str, object]:
    """The values of ``block`` from its answer frame."""
    what = f"slave {block.slave} registers {block.address}-{block.address + block.count - 1}"
    if frame[1] & 0x80:
        code = frame[2]
        msg = f"{what}: exception {code} ({EXCEPTIONS.get(code, 'unknown')})"
        raise RejectedInput(msg, reason="device_error")
    data = frame[3:-2]
    if len(data) != 2 * block.count:
        msg = f"{what}: {len(data)} data bytes, expected {2 * block.count}"
        raise RejectedInput(msg, reason="malformed")
    values: dict[str, object] = {}
    for reg in block.registers:
        at = 2 * (reg.address - block.address)
        values[reg.name] = value_of(reg, data[at : at + 2 * reg.count])
    return values


def value_of(reg: Register, raw: bytes) -> int | float:
    """A register value from its bytes as they came off the wire."""
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if reg.byte_order == "little":
        words = [w[::-1] for w in words]
    if reg.word_order == "little":
        words.reverse()
    (number,) = struct.unpack(_FORMAT[reg.type], b"".join(words))
    if reg.scale == 1.0 and reg.offset == 0.0:
        return number  # type: ignore[no-any-return]
    return float(number * reg.scale + reg.offset)
