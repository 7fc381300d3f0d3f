"""The ``example_counter`` driver: a polled serial device answering ``READ`` requests."""

from __future__ import annotations

import re
from typing import ClassVar, Final

from gateway.driver import RawSample, RejectedInput, SerialDriver, SerialOptions
from gateway.options import Duration
from pydantic import Field

__all__ = ["CounterDriver", "CounterOptions"]

REQUEST: Final = b"READ\n"
# The device needs about 50 ms to answer; a second is generous without stalling polls.
DEFAULT_RESPONSE_TIMEOUT_S: Final = 1.0
# The counter's temperature changes slowly; every 5 s is plenty and cheap on the bus.
DEFAULT_POLL_INTERVAL_S: Final = 5.0

_ANSWER: Final = re.compile(rb"COUNT (\d{1,18}) TEMP (-?\d{1,4}(?:\.\d{1,6})?)")


class CounterOptions(SerialOptions):
    """Options of the ``example_counter`` driver (see ``sample.toml``)."""

    unit_id: int = Field(
        ge=1, le=247, description='The unit\'s number (1-247); tags every reading as "unit".'
    )
    poll_interval: Duration = Field(
        default=DEFAULT_POLL_INTERVAL_S, gt=0, description="How often to send READ."
    )
    response_timeout: Duration = Field(
        default=DEFAULT_RESPONSE_TIMEOUT_S, gt=0, description="How long to wait for the answer."
    )


class CounterDriver(SerialDriver[CounterOptions]):
    """A counter that answers ``READ`` with ``COUNT <n> TEMP <t>``.

    Rejections: ``device_error`` (the device answered ``ERR …``) and ``malformed``
    (anything else that is not an answer).
    """

    Options: ClassVar[type[CounterOptions]] = CounterOptions
    description: ClassVar[str] = "example polled counter: READ → COUNT <n> TEMP <t>"

    def __init__(self, device: str, options: CounterOptions) -> None:
        super().__init__(device, options)
        # Setting poll_interval is what makes the core poll instead of just listening.
        self.poll_interval = options.poll_interval
        self.response_timeout = options.response_timeout
        self._tags = {"unit": str(options.unit_id)}

    def request(self) -> bytes:
        """The bytes the core writes for every poll."""
        return REQUEST

    def parse(self, frame: bytes) -> list[RawSample]:
        """Decode one answer line into a sample with ``count`` and ``temperature``."""
        match = _ANSWER.fullmatch(frame.strip())
        if match is None:
            if frame.startswith(b"ERR"):
                text = frame[3:].strip().decode("ascii", "replace")
                msg = f"the device answered an error: {text or '(no detail)'}"
                raise RejectedInput(msg, reason="device_error")
            msg = f"expected 'COUNT <n> TEMP <t>', got {frame[:60]!r}"
            raise RejectedInput(msg, reason="malformed")
        count, temperature = match.groups()
        fields = {"count": int(count), "temperature": float(temperature)}
        return [RawSample(fields, self._tags)]
