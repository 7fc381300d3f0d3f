"""What ``sensor-gateway run --test`` prints: an aligned table or JSON lines.

Readings, rejections and the summary go to stdout; notices (a broker connected, a port
opened or busy) to stderr, so ``-o json`` output is JSON lines only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, tzinfo
from typing import TextIO

from gateway.cli.trial import TrialEvents
from gateway.pipeline.intake import DeviceInput
from gateway.pipeline.reading import FieldValue, Reading

__all__ = ["JsonOutput", "TableOutput"]

# What a dropped field's reason means (gateway.pipeline.normalize.DropReason).
DROP_REASONS = {
    "out_of_range": "outside its min/max",
    "not_numeric": "text where a number is needed",
    "nan": "NaN or infinite",
    "type": "a value of the wrong type",
    "duplicate": "named like a configured field's output",
}
_GAP = "  "


def _local_ms(time_ns: int, tz: tzinfo | None) -> str:
    moment = datetime.fromtimestamp(time_ns // 1_000_000_000, UTC).astimezone(tz)
    micros = (time_ns % 1_000_000_000) // 1000
    return moment.replace(microsecond=micros).isoformat(timespec="milliseconds")


def _rfc3339(time_ns: int) -> str:
    seconds, frac = divmod(time_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None).isoformat()
    return f"{stamp}.{frac:09d}Z"


def _value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value) if isinstance(value, float) else str(value)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-"


class TableOutput(TrialEvents):
    """One aligned row per reading with its line protocol indented under it; one row per
    rejection, marked ``!``; a summary table at the end."""

    def __init__(
        self, out: TextIO, err: TextIO, devices: list[str], tz: tzinfo | None = None
    ) -> None:
        self.out = out
        self.err = err
        self.tz = tz
        # Columns grow to the widest value seen so far (a streamed table cannot look ahead).
        self._widths = [
            len(_local_ms(0, tz)),
            max([len("DEVICE"), *map(len, devices)]),
            len("MEASUREMENT"),
            len("TAGS"),
        ]

    def _row(self, cells: list[str], rest: str) -> None:
        for i, cell in enumerate(cells):
            self._widths[i] = max(self._widths[i], len(cell))
        text = _GAP.join(c.ljust(w) for c, w in zip(cells, self._widths, strict=False))
        self.out.write(f"{text}{_GAP}{rest}".rstrip() + "\n")
        self.out.flush()

    def _say(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def start(self, devices: list[str], duration: float, pins: int | None) -> None:
        self._say(
            f"trying {len(devices)} device(s) ({', '.join(devices)}) for {duration:g} s; "
            "nothing is stored. Ctrl-C ends it sooner."
        )
        if pins is None:
            self._say("no spool yet: no field types pinned by the gateway")
        else:
            self._say(f"field types checked against the {pins} the gateway has pinned")
        self._row(["TIME", "DEVICE", "MEASUREMENT", "TAGS"], "FIELDS")

    def notice(self, text: str, device: str | None = None) -> None:
        self._say(f"device {device}: {text}" if device else text)

    def unavailable(self, device: str, reason: str) -> None:
        self._say(f"device {device}: unavailable: {reason} (trying again)")

    def reading(self, device: str, reading: Reading, line: str) -> None:
        tags = ",".join(
            f"{k}={v}" for k, v in reading.tags.items() if not (k == "device" and v == device)
        )
        units = reading.units
        fields = " ".join(
            f"{k}={_value(v)}" + (f" {units[k]}" if k in units else "")
            for k, v in reading.fields.items()
        )
        self._row(
            [_local_ms(reading.time_ns, self.tz), device, reading.measurement, tags or "-"], fields
        )
        self.out.write(f"    {line}\n")
        self.out.flush()

    def rejection(
        self, device: str, reason: str, message: str, where: Mapping[str, object]
    ) -> None:
        text = f"! {reason}: {message}"
        if reason in DROP_REASONS:
            text += f" ({DROP_REASONS[reason]})"
        context = [f"{k}={v}" for k, v in where.items() if k != "reason"]
        if context:
            text += " — " + ", ".join(context)
        self._row([_local_ms(time.time_ns(), self.tz), device], text)

    def summary(self, entries: list[DeviceInput], elapsed: float) -> None:
        header = ["DEVICE", "INPUTS", "READINGS", "REJECTED", "FIELDS DROPPED"]
        rows = [
            [
                e.name,
                str(e.stats.frames),
                str(e.stats.readings),
                _counts(e.stats.rejected),
                _counts(e.stats.dropped_fields),
            ]
            for e in entries
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        self.out.write(f"\nsummary after {elapsed:.1f} s (nothing was stored):\n")
        for cells in [header, *rows]:
            line = _GAP.join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            self.out.write(line.rstrip() + "\n")
        for e in entries:
            if e.stats.last_error and not e.stats.readings:
                self.out.write(f"{e.name}: {e.stats.last_error}\n")
        self.out.flush()


class JsonOutput(TrialEvents):
    """JSON lines on stdout: ``{"device", "reading", "line"}``, ``{"device",
    "rejection"}``, ``{"device", "unavailable"}`` and a last ``{"summary"}``; notices
    as text on stderr."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def _emit(self, obj: Mapping[str, object]) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
        self.out.flush()

    def start(self, devices: list[str], duration: float, pins: int | None) -> None:
        self.notice(f"trying {', '.join(devices)} for {duration:g} s; nothing is stored")

    def notice(self, text: str, device: str | None = None) -> None:
        self.err.write((f"device {device}: {text}" if device else text) + "\n")
        self.err.flush()

    def unavailable(self, device: str, reason: str) -> None:
        self._emit({"device": device, "unavailable": reason})

    def reading(self, device: str, reading: Reading, line: str) -> None:
        units = {k: u for k, u in reading.units.items() if k in reading.fields}
        self._emit(
            {
                "device": device,
                "reading": {
                    "time": _rfc3339(reading.time_ns),
                    "measurement": reading.measurement,
                    "tags": dict(reading.tags),
                    "fields": dict(reading.fields),
                    "units": units,
                },
                "line": line,
            }
        )

    def rejection(
        self, device: str, reason: str, message: str, where: Mapping[str, object]
    ) -> None:
        detail = {k: v for k, v in where.items() if k != "reason"}
        self._emit(
            {"device": device, "rejection": {"reason": reason, "message": message, **detail}}
        )

    def summary(self, entries: list[DeviceInput], elapsed: float) -> None:
        devices: dict[str, object] = {}
        for e in entries:
            s = e.stats
            item: dict[str, object] = {
                "inputs": s.frames,
                "readings": s.readings,
                "rejected": dict(s.rejected),
                "dropped_fields": dict(s.dropped_fields),
            }
            if s.last_error:
                item["last_error"] = s.last_error
            devices[e.name] = item
        self._emit({"summary": devices, "seconds": round(elapsed, 1)})
