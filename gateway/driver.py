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
from typing import ClassVar, Generic, Literal, TypeVar

from pydantic import Field, field_validator

from gateway.errors import RejectedInput
from gateway.options import Duration, Options, Size
from gateway.pipeline.reading import RawSample

__all__ = [
    "Driver",
    "Framer",
    "LineFramer",
    "MqttDriver",
    "MqttOptions",
    "RawSample",
    "RejectedInput",
    "SerialDriver",
    "SerialOptions",
    "TopicPattern",
]

# Most serial sensors speak 9600 baud 8N1; it is what pyserial defaults to as well.
DEFAULT_BAUDRATE = 9600
# A text frame longer than this is garbage or a missing terminator, not a reading.
DEFAULT_MAX_FRAME_BYTES = 4096
# MQTT sensor payloads are small; 256 KiB leaves room for bulky JSON without letting a
# 10 MB body through to the JSON parser.
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


class SerialOptions(Options):
    """Options every serial driver has: where the port is and how to talk to it."""

    port: str = Field(min_length=1, description="Serial device path; prefer /dev/serial/by-id/….")
    baudrate: int = Field(default=DEFAULT_BAUDRATE, gt=0, description="Line speed in baud.")
    bytesize: Literal[5, 6, 7, 8] = 8
    parity: Literal["N", "E", "O", "M", "S"] = "N"
    stopbits: Literal[1, 2] = 1
    max_frame_bytes: Size = Field(
        default=DEFAULT_MAX_FRAME_BYTES, description="A longer frame is discarded and counted."
    )
    stale_after: Duration | None = Field(
        default=None,
        description="Reopen the port and flag the device stale after this long without a valid frame.",
    )

    @field_validator("port")
    @classmethod
    def _valid_path(cls, port: str) -> str:
        if "\0" in port:
            raise ValueError("a port path cannot contain a NUL character")
        return port


class MqttOptions(Options):
    """Options every MQTT driver has: which broker, which topics, which QoS."""

    broker: str = Field(default="default", description="The [brokers.<name>] table to use.")
    topics: list[str] = Field(
        min_length=1, description="Topic patterns: + and # wildcards, {name} levels become tags."
    )
    qos: Literal[0, 1, 2] = Field(default=1, description="Subscription QoS.")
    max_payload_bytes: Size = Field(
        default=DEFAULT_MAX_PAYLOAD_BYTES, description="A larger payload is rejected unread."
    )

    @field_validator("topics")
    @classmethod
    def _valid_patterns(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            TopicPattern(topic)  # raises ValueError with the reason
        return topics


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

    def __init__(self, device: str, options: OptionsT) -> None:
        self.device = device
        self.options = options


class Framer(ABC):
    """Cuts a byte stream into frames, with a bounded buffer.

    A framer never raises for bad bytes: an over-long frame is discarded, counted in
    ``overflows`` (the core turns that into a ``frame_too_long`` rejection) and the
    framer resynchronizes at the next frame boundary.
    """

    overflows: int = 0

    @abstractmethod
    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the complete frames now available (possibly none)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget any partial frame (after a reconnect)."""


class LineFramer(Framer):
    """Frames are lines ending in ``terminator``; a CR before it is stripped."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_FRAME_BYTES, terminator: bytes = b"\n") -> None:
        self.max_bytes = max_bytes
        self.overflows = 0
        self._term = terminator
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames: list[bytes] = []
        while (end := self._buf.find(self._term)) >= 0:
            frame = bytes(self._buf[:end])
            del self._buf[: end + len(self._term)]
            if self._discarding:  # the tail of an over-long line, already counted
                self._discarding = False
            elif len(frame) > self.max_bytes:
                self.overflows += 1
            else:
                frames.append(frame.rstrip(b"\r"))
        if len(self._buf) > self.max_bytes:
            # No terminator within the limit: drop what we have and skip to the next one,
            # so a device streaming garbage cannot grow our memory.
            self._buf.clear()
            if not self._discarding:
                self.overflows += 1
            self._discarding = True
        return frames

    def reset(self) -> None:
        self._buf.clear()
        self._discarding = False


class SerialDriver(Driver[SerialOptionsT]):
    """A device on a serial port (USB or UART).

    Stream devices talk on their own: leave ``poll_interval`` unset and implement
    :meth:`parse`. Polled devices answer requests: return the request bytes from
    :meth:`request` and set ``poll_interval`` (seconds); the core writes the request,
    waits up to ``response_timeout`` for the answer frame and hands it to :meth:`parse`.
    """

    kind: ClassVar[Literal["serial", "mqtt"]] = "serial"
    Options: ClassVar[type[Options]] = SerialOptions
    poll_interval: float | None = None
    response_timeout: float = 1.0

    def framer(self) -> Framer:
        """The framer for this device's byte stream (lines by default)."""
        return LineFramer(self.options.max_frame_bytes)

    def request(self) -> bytes | None:
        """The bytes to send for each poll (polled devices only)."""
        return None

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
    into the tag ``room``; ``+`` and ``#`` keep their MQTT meaning.
    """

    __slots__ = ("_levels", "filter", "pattern")

    def __init__(self, pattern: str) -> None:
        if not pattern:
            raise ValueError("an MQTT topic pattern cannot be empty")
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
        self.pattern = pattern
        self._levels = parsed
        self.filter = "/".join("+" if lv and lv.startswith("{") else lv for lv in levels)

    def match(self, topic: str) -> dict[str, str] | None:
        """Named segments of ``topic`` if it matches the pattern, else None."""
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
