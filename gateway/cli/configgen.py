"""``sensor-gateway config``: a commented starting configuration, like ``telegraf config``.

The gateway's own sections come first, their defaults commented out; then, for each
driver asked for, its ``sample.toml`` (the file beside the driver's module: the single
source of truth its README and tests use too). A driver without a sample gets a device
table built from its options: required ones with a placeholder, the others commented
out with their defaults. Every line fits 80 columns.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.driver import Driver, MqttOptions, SerialOptions

DEFAULT_DRIVERS = ("line",)
WIDTH = 80

HEADER = """\
# A sensor-gateway configuration written by:
#   {command}
#
# Check it with:   sensor-gateway check-config -c gateway.toml
# Run it with:     sensor-gateway run -c gateway.toml
#
# Options whose default usually works are commented out, showing the default.
# Durations: seconds or "200ms", "5s", "10m", "2h", "30d"; sizes: bytes or
# "64MB", "256KiB". Strings may use ${{NAME}} for a value from the environment.
# Every option: docs/configuration.md.
# A driver's options: sensor-gateway drivers NAME.

[gateway]
## Where the spool, the local store and status.json live.
# state_dir = "/var/lib/sensor-gateway"

## "debug", "info", "warning" or "error"; `run -v` / `run -q` change it for
## one run.
# log_level = "info"

[spool]
## Every reading is committed here before any sink sees it. When full, the
## oldest readings are dropped (and counted).
# max_bytes = "256MiB"

## The embedded store `sensor-gateway query` reads; on unless InfluxDB is
## configured.
[sinks.local]
# retention = "30d"

## InfluxDB 2.x/3.x/Cloud (api = "v2"), 1.x (api = "v1", database = "...") or
## InfluxDB 3's native API (api = "v3", database = "...", token).
## Uncomment to write there instead of (or, with [sinks.local] enabled = true,
## as well as) the local store.
# [sinks.influxdb]
# url = "http://127.0.0.1:8086"
# org = "home"
# bucket = "sensors"
# token_file = "/etc/sensor-gateway/influx.token"
"""

BROKER = """
## The MQTT broker the MQTT devices below subscribe to ([brokers.<name>],
## "default" unless a device says broker = "<name>").
[brokers.default]
host = "127.0.0.1"
# port = 1883
# username = "gateway"
# password_file = "/etc/sensor-gateway/mqtt.password"
"""


class UnknownDriver(LookupError):
    """A driver asked for is not installed."""


def generate(names: Sequence[str], drivers: Mapping[str, type[Driver[Any]]]) -> str:
    """The commented configuration for devices of the drivers ``names`` (in that order)."""
    unknown = [n for n in names if n not in drivers]
    if unknown:
        raise UnknownDriver(
            f"no driver named {', '.join(repr(n) for n in unknown)}; "
            f"installed: {', '.join(sorted(drivers))}"
        )
    chosen = list(dict.fromkeys(names or DEFAULT_DRIVERS))
    command = textwrap.wrap(
        " ".join(["sensor-gateway config", *(f"--driver\xa0{n}" for n in names)]),
        WIDTH - 6,
        break_on_hyphens=False,
        break_long_words=False,
    )
    # \xa0 keeps "--driver NAME" on one line.
    parts = [fit(HEADER.format(command="\n#     ".join(command).replace("\xa0", " ")))]
    if any(issubclass(drivers[n].Options, MqttOptions) for n in chosen):
        parts.append(fit(BROKER))
    for name in chosen:
        parts.append(f"\n# --- {name} devices " + "-" * max(0, 60 - len(name)) + "\n")
        parts.append(fit(sample(name, drivers[name])))
    return "".join(parts).rstrip("\n") + "\n"


_OPTION_LINE = re.compile(r"^#+ ?[A-Za-z_][\w.]* = ")
_ARRAY_LINE = re.compile(r"^([A-Za-z_][\w.]*) = (\[.*\])\s*$")


def fit(text: str, width: int = WIDTH) -> str:
    """TOML text with its prose comments re-wrapped and long arrays split over lines, so
    every line fits ``width`` (samples are written to the code's 100 columns)."""
    out: list[str] = []
    paragraph: list[str] = []
    prefix = ""

    def flush() -> None:
        if paragraph:
            words = " ".join(line[len(prefix) :].strip() for line in paragraph)
            if any(len(line) > width for line in paragraph):
                out.extend(
                    textwrap.wrap(
                        words,
                        width,
                        initial_indent=prefix,
                        subsequent_indent=prefix,
                        break_on_hyphens=False,
                    )
                )
            else:
                out.extend(paragraph)
            paragraph.clear()

    for line in text.splitlines():
        stripped = line.rstrip()
        this = "## " if stripped.startswith("## ") else "# " if stripped.startswith("# ") else ""
        prose = (
            this and not stripped[len(this) :].startswith(" ") and not _OPTION_LINE.match(stripped)
        )
        if prose and this == prefix:
            paragraph.append(stripped)
            continue
        flush()
        if prose:
            prefix = this
            paragraph.append(stripped)
            continue
        prefix = ""
        array = _ARRAY_LINE.match(stripped)
        indented = re.match(r"^(#+ +)", stripped)
        if indented and len(stripped) > width:
            # An indented comment (a table of names and meanings): wrap under its text.
            hang = indented.group(1) + "  "
            out += textwrap.wrap(stripped, width, subsequent_indent=hang, break_on_hyphens=False)
        elif array and len(stripped) > width:
            items = tomllib.loads(f"v = {array.group(2)}")["v"]
            out.append(f"{array.group(1)} = [")
            out += [f"    {json.dumps(item, ensure_ascii=False)}," for item in items]
            out.append("]")
        else:
            out.append(stripped)
    flush()
    return "\n".join(out) + "\n"


def sample(name: str, cls: type[Driver[Any]]) -> str:
    """The driver's ``sample.toml``, or a device table built from its options."""
    module = sys.modules.get(cls.__module__)
    where = getattr(module, "__file__", None)
    if where is not None:
        for folder in (Path(where).parent, Path(where).parent.parent):
            path = folder / "sample.toml"
            if path.is_file():
                return path.read_text(encoding="utf-8")
    return _from_options(name, cls)


def _from_options(name: str, cls: type[Driver[Any]]) -> str:
    from gateway.cli.drivers import show_default

    lines = [f"# {cls.description}", f"[devices.{name}_1]", f'driver = "{name}"']
    for key, fld in cls.Options.model_fields.items():
        if fld.description:
            lines += textwrap.wrap(
                fld.description, 78, initial_indent="## ", subsequent_indent="## "
            )
        if fld.is_required():
            lines.append(f"{key} = {_placeholder(key, cls)}")
        else:
            default = fld.get_default(call_default_factory=True)
            shown = show_default(fld.rebuild_annotation(), default)
            lines.append(f"# {key} = {shown.removeprefix('default ')}")
        lines.append("")
    return "\n".join(lines)


def _placeholder(key: str, cls: type[Driver[Any]]) -> str:
    if key == "port" and issubclass(cls.Options, SerialOptions):
        return json.dumps("/dev/ttyUSB0")
    if key == "topics":
        return json.dumps(["sensors/{sensor}/state"])
    annotation = cls.Options.model_fields[key].annotation
    examples: dict[Any, str] = {int: "1", float: "1.0", bool: "false"}
    return examples.get(annotation, json.dumps("CHANGE-ME"))
