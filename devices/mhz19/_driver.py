"""The ``mhz19`` driver: CO2 from a Winsen MH-Z19 (B/C) sensor, polled."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

from pydantic import Field

from devices.mhz19._protocol import (
    ABC,
    ABC_OFF,
    ABC_ON,
    FRAME_LENGTH,
    HEADER,
    READ_CO2,
    TEMPERATURE_OFFSET,
    command,
    frame_ok,
)
from gateway.driver import (
    FixedLengthFramer,
    Framer,
    RawSample,
    RejectedInput,
    SerialDriver,
    SerialOptions,
    SerialPort,
)
from gateway.options import Duration

__all__ = ["Mhz19Driver", "Mhz19Options"]

# The sensor refreshes its value about every 5 s; reading twice as often gains nothing.
DEFAULT_POLL_INTERVAL_S: Final = 10.0


class Mhz19Options(SerialOptions):
    """Options of the ``mhz19`` driver (see ``devices/mhz19/sample.toml``)."""

    poll_interval: Duration = Field(
        default=DEFAULT_POLL_INTERVAL_S, gt=0, description="How often to read the CO2 value."
    )
    response_timeout: Duration = Field(
        default=1.0, gt=0, description="How long to wait for an answer (one retry)."
    )
    abc: bool | None = Field(
        default=None,
        description="Automatic baseline correction: false turns it off, true on; unset leaves the sensor's setting.",
    )


class Mhz19Driver(SerialDriver[Mhz19Options]):
    """Reads CO2 (ppm) and the sensor's internal temperature with command 0x86.

    With ``abc`` set, the automatic baseline correction is switched on or off after
    every open (command 0x79; the sensor does not answer it). Rejections:
    ``checksum``, ``garbage`` (by the framer), ``malformed`` (an answer to another
    command), ``no_response``/``late_answer`` (counted by the core).
    """

    Options: ClassVar[type[Mhz19Options]] = Mhz19Options
    description: ClassVar[str] = "Winsen MH-Z19 CO2 sensor, polled"
    units: Mapping[str, str] = MappingProxyType({"co2": "ppm", "temperature": "degC"})

    def __init__(self, device: str, options: Mhz19Options) -> None:
        super().__init__(device, options)
        self.poll_interval = options.poll_interval
        self.response_timeout = options.response_timeout
        self.retries = 1
        self._abc = options.abc

    def framer(self) -> Framer:
        """9-byte answers starting with ``FF``, checksum verified."""
        return FixedLengthFramer(FRAME_LENGTH, header=HEADER, checksum=frame_ok)

    def request(self) -> bytes:
        """Command 0x86: read the gas concentration."""
        return command(READ_CO2)

    async def on_open(self, port: SerialPort) -> None:
        """Switch automatic baseline correction on or off, if configured."""
        if self._abc is not None:
            await port.write(command(ABC, ABC_ON if self._abc else ABC_OFF))

    async def poll(self, port: SerialPort) -> list[RawSample]:
        """Send 0x86 and decode the answer to it (other frames count as unsolicited)."""
        frame = await port.transact(self.request(), accept=lambda f: f[1] == READ_CO2)
        return self.parse(frame)

    def parse(self, frame: bytes) -> list[RawSample]:
        """An answer to 0x86 → ``co2`` (ppm) and ``temperature`` (°C, whole degrees)."""
        if not frame_ok(frame):  # the framer checks this too; a frame from elsewhere may not
            msg = f"checksum mismatch in answer {frame.hex(' ')}"
            raise RejectedInput(msg, reason="checksum")
        if frame[1] != READ_CO2:
            msg = f"answer to command {frame[1]:02X}, not to 86 (read CO2): {frame.hex(' ')}"
            raise RejectedInput(msg, reason="malformed")
        co2 = int.from_bytes(frame[2:4], "big")
        temperature = frame[4] - TEMPERATURE_OFFSET
        return [RawSample({"co2": co2, "temperature": temperature})]
