"""The ``sds011`` driver: PM2.5 and PM10 from a Nova Fitness SDS011 dust sensor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import ClassVar, Final, Literal, Self

from pydantic import Field, model_validator

from devices.sds011._protocol import (
    DATA,
    FRAME_LENGTH,
    HEADER,
    QUERY_DATA,
    REPLY,
    REPORTING_MODE,
    SLEEP_WORK,
    TRAILER,
    WORKING_PERIOD,
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

__all__ = ["Sds011Driver", "Sds011Options"]

Mode = Literal["active", "query"]
# The datasheet's working period: 0 (measure continuously, a frame a second) to 30 min.
MAX_WORKING_PERIOD_MIN: Final = 30
# In query mode, a reading a minute is plenty for air quality and spares the laser
# (rated 8000 h of operation).
DEFAULT_POLL_INTERVAL_S: Final = 60.0
# Active mode, working period 0: a frame every second.
_CONTINUOUS_PERIOD_S: Final = 1.0


class Sds011Options(SerialOptions):
    """Options of the ``sds011`` driver (see ``devices/sds011/sample.toml``)."""

    mode: Mode = Field(
        default="active",
        description="active: the sensor reports on its own; query: the gateway asks every poll_interval.",
    )
    working_period: int = Field(
        default=0,
        ge=0,
        le=MAX_WORKING_PERIOD_MIN,
        description="active: minutes between measurements (0 = every second); the sensor sleeps in between.",
    )
    poll_interval: Duration = Field(
        default=DEFAULT_POLL_INTERVAL_S, gt=0, description="query: how often to ask."
    )
    response_timeout: Duration = Field(
        default=1.0, gt=0, description="How long to wait for the sensor to answer a command."
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        check_consistency(self)
        return self


def check_consistency(options: Sds011Options) -> None:
    """ValueError for an option that does not apply to the chosen mode."""
    set_ = options.model_fields_set
    if options.mode == "active" and "poll_interval" in set_:
        msg = 'poll_interval only applies to mode = "query" (in active mode use working_period)'
        raise ValueError(msg)
    if options.mode == "query" and options.working_period:
        msg = 'working_period only applies to mode = "active" (in query mode use poll_interval)'
        raise ValueError(msg)


class Sds011Driver(SerialDriver[Sds011Options]):
    """Reads PM2.5 and PM10 (µg/m³) from 10-byte frames, in active or query mode.

    After every open the sensor is woken, put in the configured reporting mode and (in
    active mode) given its working period; a sensor that does not confirm is not ready
    and the port is retried. Rejections: ``checksum``, ``garbage`` and ``malformed`` (by
    the framer), ``malformed`` (a frame of an unknown kind).
    """

    Options: ClassVar[type[Sds011Options]] = Sds011Options
    description: ClassVar[str] = "Nova Fitness SDS011 dust sensor: PM2.5 and PM10"
    units: Mapping[str, str] = MappingProxyType({"pm2_5": "µg/m³", "pm10": "µg/m³"})

    def __init__(self, device: str, options: Sds011Options) -> None:
        super().__init__(device, options)
        check_consistency(options)
        self.response_timeout = options.response_timeout
        self.retries = 2
        if options.mode == "query":
            self.poll_interval = options.poll_interval
        else:
            period = options.working_period * 60.0
            self.expected_interval = period or _CONTINUOUS_PERIOD_S

    def framer(self) -> Framer:
        """10-byte frames from ``AA`` to ``AB`` with their checksum verified."""
        return FixedLengthFramer(FRAME_LENGTH, header=HEADER, trailer=TRAILER, checksum=frame_ok)

    async def on_open(self, port: SerialPort) -> None:
        """Wake the sensor, set its reporting mode and, in active mode, its working period."""
        query = self.options.mode == "query"
        await self._set(port, SLEEP_WORK, 1, "work (wake up)")
        await self._set(port, REPORTING_MODE, 1 if query else 0, f"{self.options.mode} mode")
        if not query:
            period = self.options.working_period
            await self._set(port, WORKING_PERIOD, period, f"working period {period} min")

    async def poll(self, port: SerialPort) -> list[RawSample]:
        """Query mode: ask for a measurement."""
        frame = await port.transact(command(QUERY_DATA), accept=_kind(DATA))
        return self.parse(frame)

    def parse(self, frame: bytes) -> list[RawSample]:
        """A measurement frame → PM2.5 and PM10; command replies carry no reading."""
        if not frame_ok(frame):  # the framer checks this too; a frame from elsewhere may not
            msg = f"checksum mismatch in frame {frame.hex(' ')}"
            raise RejectedInput(msg, reason="checksum")
        if frame[1] == REPLY:
            return []
        if frame[1] != DATA:
            msg = f"unknown frame kind {frame[1]:02X} (expected C0 or C5) in {frame.hex(' ')}"
            raise RejectedInput(msg, reason="malformed")
        pm2_5 = int.from_bytes(frame[2:4], "little") / 10
        pm10 = int.from_bytes(frame[4:6], "little") / 10
        return [RawSample({"pm2_5": pm2_5, "pm10": pm10})]

    async def _set(self, port: SerialPort, number: int, value: int, what: str) -> None:
        reply = await port.transact(command(number, 1, value), accept=_reply_to(number))
        if reply[4] != value:
            msg = f"the sensor did not switch to {what}: it confirmed {reply[4]}"
            raise RejectedInput(msg, reason="device_error")


def _kind(kind: int) -> Callable[[bytes], bool]:
    return lambda frame: frame[1] == kind


def _reply_to(number: int) -> Callable[[bytes], bool]:
    return lambda frame: frame[1] == REPLY and frame[2] == number
