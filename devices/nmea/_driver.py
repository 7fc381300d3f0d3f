"""The ``nmea`` driver: one reading per GNSS epoch from a receiver's NMEA 0183 stream."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import ClassVar, Final

from pydantic import Field

from devices.nmea._sentences import Decoded, checked_sentence, decode
from gateway.driver import RawSample, SerialDriver, SerialOptions

__all__ = ["NmeaDriver", "NmeaOptions"]

# NMEA 0183 specifies 4800 baud; most USB receivers (SiRF, u-blox) still start there.
DEFAULT_BAUDRATE: Final = 4800
# Receivers report once a second; the core calls a device stale after five of these
# (10 s) without a reading, leaving room for a slow first epoch.
EPOCH_INTERVAL_S: Final = 2.0
# A receiver sends a timed sentence (GGA, RMC, GLL, ZDA) every epoch; an epoch that
# collected this many sentences without one is emitted anyway, keeping memory bounded.
MAX_UNTIMED_SENTENCES: Final = 16
# Which sentence a field is taken from when several carry it (lower wins): GGA has the
# most precise position and the altitude, RMC the speed and course.
_RANK: Final = {"GGA": 0, "RMC": 1, "GLL": 2, "VTG": 3, "GSA": 4, "ZDA": 5}
# A receiver's combined (GN) solution beats a single constellation's.
_COMBINED_TALKER: Final = "GN"
# Dropped from a sentence that flags its position as not a fix (RMC/GLL status V, GGA quality 0).
_FIX_FIELDS: Final = ("latitude", "longitude", "altitude", "geoid_separation", "speed", "course")
_NS_PER_DAY: Final = 86_400 * 10**9


class NmeaOptions(SerialOptions):
    """Options of the ``nmea`` driver (see ``devices/nmea/sample.toml``)."""

    baudrate: int = Field(default=DEFAULT_BAUDRATE, gt=0, description="Line speed in baud.")
    require_checksum: bool = Field(
        default=True, description="Reject sentences without a *hh checksum (reason checksum)."
    )


@dataclass(slots=True)
class _Epoch:
    """The sentences of one receiver epoch (one time of day), merged."""

    time_of_day_ns: int | None = None
    date: date | None = None
    values: dict[str, float | int] = field(default_factory=dict)
    ranks: dict[str, tuple[int, int]] = field(default_factory=dict)
    gga_satellites: dict[str, int] = field(default_factory=dict)
    gsa_satellites: int | None = None
    sentences: int = 0
    last_type: str = ""

    def add(self, talker: str, kind: str, decoded: Decoded) -> None:
        assert decoded.values is not None
        values = decoded.values
        if not decoded.valid:
            for name in _FIX_FIELDS:
                values.pop(name, None)
        if decoded.time_of_day_ns is not None:
            self.time_of_day_ns = decoded.time_of_day_ns
        if decoded.date is not None:
            self.date = decoded.date
        if kind == "GGA" and "satellites" in values:
            self.gga_satellites.setdefault(talker, int(values.pop("satellites")))
        if "gsa_satellites" in values:
            self.gsa_satellites = (self.gsa_satellites or 0) + int(values.pop("gsa_satellites"))
        rank = (_RANK[kind], 0 if talker == _COMBINED_TALKER else 1)
        for name, value in values.items():
            if name == "fix_mode" and name in self.values:  # one GSA per constellation
                self.values[name] = max(int(self.values[name]), int(value))
            elif name not in self.ranks or rank < self.ranks[name]:
                self.values[name] = value
                self.ranks[name] = rank
        self.sentences += 1
        self.last_type = kind

    def sample(self) -> RawSample | None:
        fields: dict[str, float | int] = dict(self.values)
        if self.gga_satellites:
            sats = self.gga_satellites
            # GN counts every constellation; GP + GL GGAs count their own satellites each.
            fields["satellites"] = sats.get(_COMBINED_TALKER, sum(sats.values()))
        elif self.gsa_satellites is not None:
            fields["satellites"] = self.gsa_satellites
        if not fields:
            return None
        time_ns = None
        if self.date is not None and self.time_of_day_ns is not None:
            midnight = datetime(self.date.year, self.date.month, self.date.day, tzinfo=UTC)
            time_ns = int(midnight.timestamp()) * 10**9 + self.time_of_day_ns
        return RawSample(fields, time_ns=time_ns)


class NmeaDriver(SerialDriver[NmeaOptions]):
    """Decodes GGA, RMC, GLL, VTG, GSA and ZDA sentences, one reading per epoch.

    A receiver sends a burst of sentences per epoch (usually one per second), all
    describing the same fix. They are merged into one reading, stamped with the GPS
    time when a date is known (RMC, ZDA). The epoch ends with the sentence type that
    ended the previous one (learnt like gpsd does; the first reading waits for a time
    change), so a reading leaves as soon as its epoch is complete.
    Rejections: ``checksum`` (bad or, with ``require_checksum``, missing ``*hh``),
    ``encoding`` (non-ASCII bytes), ``malformed`` (no ``$``, bad address or field).
    """

    Options: ClassVar[type[NmeaOptions]] = NmeaOptions
    expected_interval = EPOCH_INTERVAL_S
    description: ClassVar[str] = (
        "GNSS receivers speaking NMEA 0183: position, speed, fix, satellites"
    )
    units: Mapping[str, str] = MappingProxyType(
        {
            "latitude": "°",
            "longitude": "°",
            "altitude": "m",
            "geoid_separation": "m",
            "speed": "kn",
            "course": "°",
        }
    )

    def __init__(self, device: str, options: NmeaOptions) -> None:
        super().__init__(device, options)
        self._require_checksum = options.require_checksum
        self._epoch = _Epoch()
        self._ender: str | None = None

    def parse(self, frame: bytes) -> list[RawSample]:
        """Decode one sentence; the epoch's reading when this sentence completes it."""
        sentence = checked_sentence(frame, self._require_checksum)
        if sentence is None:
            return []
        decoded = decode(sentence)
        if decoded is None:  # GSV, proprietary and other sentences carry no reading
            return []
        out: list[RawSample] = []
        epoch = self._epoch
        tod = decoded.time_of_day_ns
        if epoch.time_of_day_ns is not None and tod is not None and tod != epoch.time_of_day_ns:
            # A new second: whatever ended the last epoch is the receiver's last sentence.
            self._ender = epoch.last_type
            out += self._flush()
        self._epoch.add(sentence.talker, sentence.type, decoded)
        epoch = self._epoch
        if (epoch.time_of_day_ns is not None and sentence.type == self._ender) or (
            epoch.time_of_day_ns is None and epoch.sentences >= MAX_UNTIMED_SENTENCES
        ):
            out += self._flush()
        return out

    def _flush(self) -> list[RawSample]:
        sample = self._epoch.sample()
        self._epoch = _Epoch()
        return [] if sample is None else [sample]
