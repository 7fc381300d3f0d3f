"""The driver API: what a device driver implements, and nothing more.

A driver does protocol work only. It declares its options, turns frames (serial)
or payloads (MQTT) into :class:`~gateway.reading.RawSample` values, and raises
:class:`~gateway.errors.RejectedInput` for input it cannot decode. Opening ports,
reconnecting, backoff, normalization, buffering and delivery belong to the core.

Drivers are found through the entry-point group ``sensor_gateway.devices``; the
built-in ones register the same way (see ``docs/writing-a-driver.md``).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Annotated, ClassVar, Generic, Literal, TypeVar

from pydantic import AfterValidator, Field, field_validator

from gateway.errors import RejectedInput
from gateway.options import Duration, DurationOrZero, Options, Size
from gateway.pipeline.reading import NO_UNITS, RawSample
from gateway.serial.framers import (
    DEFAULT_MAX_FRAME_BYTES,
    FixedLengthFramer,
    Framer,
    LengthPrefixedFramer,
    LineFramer,
    MarkerFramer,
)
from gateway.serial.ports import LineSettings, parse_selector
from gateway.serial.transport import NoResponse, SerialPort

__all__ = [
    "Driver",
    "FixedLengthFramer",
    "Framer",
    "LengthPrefixedFramer",
    "LineFramer",
    "LineSettings",
    "MarkerFramer",
    "MqttDriver",
    "MqttOptions",
    "NoResponse",
    "RawSample",
    "RejectedInput",
    "SerialDriver",
    "SerialOptions",
    "SerialPort",
    "TopicPattern",
]

# Most serial sensors speak 9600 baud 8N1; it is what pyserial defaults to as well.
DEFAULT_BAUDRATE = 9600
# Stream ports with steady traffic are read together at most this often (see
# gateway.serial.batchread): one wake-up per turn instead of one per line.
DEFAULT_READ_WINDOW_S = 0.05
# A stream device declaring expected_interval is stale after this many silent periods.
STALE_FACTOR = 5
# MQTT sensor payloads are small; 256 KiB leaves room for bulky JSON without letting a
# 10 MB body through to the JSON parser.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


class SerialOptions(Options):
    """Options every serial driver has: where the port is and how to talk to it."""

    port: str = Field(
        min_length=1,
        description=(
            "A device path (/dev/serial/by-id/…, /dev/serial/by-path/…, /dev/ttyUSB0) or a "
            'USB match "usb:VID:PID[:SERIAL]"; `sensor-gateway ports` shows what to paste.'
        ),
    )
    baudrate: int = Field(default=DEFAULT_BAUDRATE, gt=0, description="Line speed in baud.")
    bytesize: Literal[5, 6, 7, 8] = Field(default=8, description="Data bits per character.")
    parity: Literal["N", "E", "O", "M", "S"] = Field(
        default="N", description="Parity: N(one), E(ven), O(dd), M(ark), S(pace)."
    )
    stopbits: Literal[1, 2] = Field(default=1, description="Stop bits.")
    rtscts: bool = Field(default=False, description="Hardware flow control (RTS/CTS).")
    xonxoff: bool = Field(default=False, description="Software flow control (XON/XOFF).")
    max_frame_bytes: Size = Field(
        default=DEFAULT_MAX_FRAME_BYTES, description="A longer frame is discarded and counted."
    )
    stale_after: Duration | None = Field(
        default=None,
        description="Reopen the port and flag the device stale after this long without a valid frame.",
    )
    read_window: DurationOrZero = Field(
        default=DEFAULT_READ_WINDOW_S,
        ge=0,
        description=(
            "Steady stream traffic is read in turns this far apart, with other ports "
            "(fewer wake-ups); a line may be stamped up to this late. 0: read each as it comes."
        ),
    )

    @field_validator("port")
    @classmethod
    def _valid_path(cls, port: str) -> str:
        if "\0" in port:
            raise ValueError("a port path cannot contain a NUL character")
        parse_selector(port)  # raises ValueError saying what is wrong
        return port


def _topic_pattern(topic: str) -> str:
    TopicPattern(topic)  # raises ValueError with the reason
    return topic


class MqttOptions(Options):
    """Options every MQTT driver has: which broker, which topics, which QoS."""

    broker: str = Field(default="default", description="The [brokers.<name>] table to use.")
    # Each pattern is checked on its own, so every bad one is reported with its index.
    topics: list[Annotated[str, AfterValidator(_topic_pattern)]] = Field(
        min_length=1, description="Topic patterns: + and # wildcards, {name} levels become tags."
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="Subscription QoS.")
    max_payload_bytes: Size = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, description="A larger payload is rejected unread."
    )
    stale_after: Duration | None = Field(
        default=None,
        description="Flag the device stale after this long without a reading (unset: never).",
    )


OptionsT = TypeVar("OptionsT", bound=Options)
SerialOptionsT = TypeVar("SerialOptionsT", bound=SerialOptions)
MqttOptionsT = TypeVar("MqttOptionsT", bound=MqttOptions)


class Driver(ABC, Generic[OptionsT]):
    """Base of every driver.

    Subclasses set ``Options`` (their option schema, a subclass of the transport's
    options), ``description`` (one line for ``sensor-gateway drivers``) and implement
    the transport's decode method. The constructor validates and stores; it does no I/O.
    """

    kind: ClassVar[Literal["serial", "mqtt"]]
    Options: ClassVar[type[Options]]
    description: ClassVar[str] = ""
    units: Mapping[str, str] = NO_UNITS
    """Field name → unit of what the driver emits (after its own conversions), e.g.
    ``{"co2": "ppm"}``; a class attribute, or set per instance in ``__init__``. The
    device config's ``fields.<name>.unit`` / ``to_unit`` win. Shown by ``query``."""

    def __init__(self, device: str, options: OptionsT) -> None:
        self.device = device
        self.options = options


class SerialDriver(Driver[SerialOptionsT]):
    """A device on a serial port (USB or UART).

    Stream devices talk on their own: leave ``poll_interval`` unset and implement
    :meth:`parse`. Polled devices answer requests: set ``poll_interval`` (seconds) and
    either return the request bytes from :meth:`request` (the default :meth:`poll`
    sends it with ``port.transact`` and parses the answer) or override :meth:`poll`
    to talk through the port yourself. :meth:`on_open` sends init commands after every
    open. ``expected_interval`` (a stream device's frame period) makes the core reopen
    a device silent for :data:`STALE_FACTOR` periods when ``stale_after`` is not set.
    """

    kind: ClassVar[Literal["serial", "mqtt"]] = "serial"
    Options: ClassVar[type[Options]] = SerialOptions
    poll_interval: float | None = None
    response_timeout: float = 1.0
    retries: int = 0
    expected_interval: float | None = None
    # Polled devices of a driver that sets shares_port may share one port (an RS-485 bus):
    # their polls take turns, bus_gap seconds apart.
    shares_port: ClassVar[bool] = False
    bus_gap: float = 0.0

    def framer(self) -> Framer:
        """The framer for this device's byte stream (lines by default)."""
        return LineFramer(self.options.max_frame_bytes)

    def line_settings(self) -> LineSettings:
        """Baud rate, framing and flow control to open the port with (from the options).

        Override when a protocol's defaults depend on another option (DSMR 2.2 is
        9600 7E1, DSMR 5 115200 8N1): look at ``options.model_fields_set`` to tell a
        value the user set from a default.
        """
        opts = self.options
        return LineSettings(
            opts.baudrate, opts.bytesize, opts.parity, opts.stopbits, opts.rtscts, opts.xonxoff
        )

    async def on_open(self, port: SerialPort) -> None:
        """Talk to the device after each open, before reading (init commands).

        Use ``await port.transact(command)`` or ``await port.write(command)``. A
        :class:`NoResponse` or :class:`RejectedInput` here closes the port and the core
        retries with backoff (the device is not ready).
        """

    def request(self) -> bytes | None:
        """The bytes to send for each poll (polled devices only)."""
        return None

    async def poll(self, port: SerialPort) -> Iterable[RawSample]:
        """One poll: by default send :meth:`request` and parse the answer frame.

        Raise :class:`NoResponse` (``transact`` does) if the device did not answer and
        :class:`RejectedInput` for a bad answer; both are counted and polling goes on.
        """
        request = self.request()
        frame = await (port.read_frame() if request is None else port.transact(request))
        return self.parse(frame)

    @abstractmethod
    def parse(self, frame: bytes) -> Iterable[RawSample]:
        """Decode one frame into samples; raise RejectedInput for a bad frame."""


class MqttDriver(Driver[MqttOptionsT]):
    """A device that publishes to an MQTT broker.

    ``topics`` in the options are patterns: MQTT wildcards ``+`` and ``#`` plus named
    segments like ``sensors/{room}/state``, whose value becomes a tag. The core
    subscribes, routes matching messages here and enforces the payload size cap.
    """

    kind: ClassVar[Literal["serial", "mqtt"]] = "mqtt"
    Options: ClassVar[type[Options]] = MqttOptions

    def __init__(self, device: str, options: MqttOptionsT) -> None:
        super().__init__(device, options)
        self.patterns = [TopicPattern(t) for t in options.topics]

    def subscriptions(self) -> list[str]:
        """The MQTT topic filters to subscribe to."""
        return [p.filter for p in self.patterns]

    def topic_tags(self, topic: str) -> Mapping[str, str] | None:
        """Tags from named segments of the first matching pattern; None if none matches."""
        for pattern in self.patterns:
            tags = pattern.match(topic)
            if tags is not None:
                return tags
        return None

    @abstractmethod
    def decode(self, topic: str, payload: bytes) -> Iterable[RawSample]:
        """Decode one message into samples; raise RejectedInput for a bad payload."""


_NAMED = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class TopicPattern:
    """An MQTT topic filter with optional named single-level segments.

    ``sensors/{room}/state`` subscribes to ``sensors/+/state`` and turns the segment
    into the tag ``room``; ``+`` and ``#`` keep their MQTT meaning. A shared subscription
    ``$share/<group>/<pattern>`` subscribes as given; messages arrive with their own
    topic, so they are matched against ``<pattern>``. A pattern starting with a wildcard
    never matches a topic starting with ``$`` (``$SYS/...``, MQTT §4.7.2).
    """

    __slots__ = ("_levels", "filter", "pattern")

    def __init__(self, pattern: str) -> None:
        if not pattern:
            raise ValueError("an MQTT topic pattern cannot be empty")
        share = ""
        if pattern.startswith("$share/"):
            _, group, *rest = pattern.split("/", 2)
            if not group or "+" in group or "#" in group or not rest or not rest[0]:
                raise ValueError(
                    f'shared subscription "{pattern}" must look like $share/<group>/<topic filter>'
                )
            share = f"$share/{group}/"
            pattern = rest[0]
        levels = pattern.split("/")
        parsed: list[str | None] = []  # None = '+', str starting with '{' = named
        for i, level in enumerate(levels):
            if level == "#":
                if i != len(levels) - 1:
                    raise ValueError(f'"#" must be the last level in topic pattern "{pattern}"')
            elif ("#" in level or "+" in level) and level != "+":
                raise ValueError(f'wildcards must fill a whole level in topic pattern "{pattern}"')
            elif ("{" in level or "}" in level) and not _NAMED.match(level):
                raise ValueError(
                    f'named segment "{level}" in topic pattern "{pattern}" must look like {{name}}'
                )
            parsed.append(level)
        self.pattern = share + pattern
        self._levels = parsed
        self.filter = share + "/".join("+" if lv and lv.startswith("{") else lv for lv in levels)

    def match(self, topic: str) -> dict[str, str] | None:
        """Named segments of ``topic`` if it matches the pattern, else None."""
        if topic.startswith("$"):
            first = self._levels[0]
            if first is None or first in ("+", "#") or first.startswith("{"):
                return None
        parts = topic.split("/")
        tags: dict[str, str] = {}
        for i, level in enumerate(self._levels):
            if level == "#":
                return tags
            if i >= len(parts):
                return None
            part = parts[i]
            if level == "+":
                continue
            if level is not None and level.startswith("{"):
                if not part:
                    return None
                tags[level[1:-1]] = part
            elif level != part:
                return None
        return tags if len(parts) == len(self._levels) else None
