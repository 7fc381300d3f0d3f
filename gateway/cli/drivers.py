"""``sensor-gateway drivers``: the installed drivers, short by default, one in detail.

Defaults are shown the way a configuration writes them (``"256KiB"``, ``"5s"``), and
every line fits 80 columns.
"""

from __future__ import annotations

import json
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gateway.options import parse_duration, parse_size
from gateway.plugins import DriverSet

WIDTH = 80

# The keys every device table takes besides its driver's options (docs/configuration.md).
CORE_KEYS_HELP = {
    "driver": "The driver's name, from `sensor-gateway drivers`.",
    "enabled": "false keeps the device configured but not read.",
    "measurement": "InfluxDB measurement (default: the driver's, else the device name).",
    "tags": "Static tags; they win over tags the driver derives.",
    "device_tag": "The tag key carrying the device name.",
    "fields": "Per-field rules (name, unit, to_unit, scale, round, min, max, type).",
    "keep_unlisted_fields": "false keeps only the fields listed in `fields`.",
    "exclude_fields": "Fields to drop.",
    "out_of_range": "drop: a value outside min/max is dropped; flag: kept and flagged.",
    "max_clock_skew_s": "A device time further off (seconds) is replaced by arrival time.",
}


def driver_info(found: DriverSet) -> list[dict[str, Any]]:
    """Every driver with its options, as ``drivers --json`` prints them."""
    info = []
    for name in sorted(found.drivers):
        cls = found.drivers[name]
        info.append(
            {
                "name": name,
                "kind": cls.kind,
                "description": cls.description,
                "package": found.origins.get(name, "?"),
                "options": [_option(key, fld) for key, fld in cls.Options.model_fields.items()],
            }
        )
    return info


def core_keys() -> list[dict[str, Any]]:
    """The keys every device takes (``measurement``, ``fields``, …), like driver options."""
    from gateway.config import DeviceSection

    options = [_option(k, f) for k, f in DeviceSection.model_fields.items()]
    for option in options:
        option["help"] = option["help"] or CORE_KEYS_HELP.get(option["name"], "")
    order = list(CORE_KEYS_HELP)
    return sorted(options, key=lambda o: order.index(o["name"]) if o["name"] in order else 99)


def _option(key: str, fld: FieldInfo) -> dict[str, Any]:
    annotation = fld.rebuild_annotation()
    default = None if fld.is_required() else fld.get_default(call_default_factory=True)
    return {
        "name": key,
        "type": type_name(annotation),
        "required": fld.is_required(),
        "default": None if fld.is_required() else _jsonable(default),
        "shown": "required" if fld.is_required() else show_default(annotation, default),
        "help": fld.description or "",
    }


def render_list(info: list[dict[str, Any]], width: int = WIDTH) -> str:
    """One line per driver: name, kind, what it reads; then how to see one in detail."""
    name_w = max([len(d["name"]) for d in info] + [6])
    lines = [f"{'DRIVER':<{name_w}}  KIND    WHAT IT READS"]
    for d in info:
        head = f"{d['name']:<{name_w}}  {d['kind']:<6}  "
        # A plugin's package stays whole; its description is cut to make room.
        suffix = f" [{d['package']}]" if d["package"] != "sensor-gateway" else ""
        room = max(width - len(head) - len(suffix), 10)
        lines.append(head + _cut(d["description"], room) + suffix)
    lines += [
        "",
        "Options of one: sensor-gateway drivers NAME",
        "A starting config: sensor-gateway config --driver NAME",
    ]
    return "\n".join(lines)


def render_one(d: dict[str, Any], core: list[dict[str, Any]], width: int = WIDTH) -> str:
    """One driver in detail: its options, then the keys every device takes."""
    lines = [f"{d['name']} ({d['kind']}, from {d['package']})"]
    lines += textwrap.wrap(d["description"], width, initial_indent="  ", subsequent_indent="  ")
    lines += ["", f"Options of the {d['name']} driver:"]
    for option in d["options"]:
        lines += _render_option(option, width)
    lines += ["", "Keys every device takes:"]
    for option in core:
        lines += _render_option(option, width)
    lines += [
        "",
        f"A starting config: sensor-gateway config --driver {d['name']}",
        "Reference: docs/configuration.md; the driver's README.md.",
    ]
    return "\n".join(lines)


def render_unknown(name: str, info: list[dict[str, Any]]) -> str:
    """What ``drivers NAME`` says for a name no driver has."""
    import difflib

    names = [d["name"] for d in info]
    close = difflib.get_close_matches(name, names, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    return f"sensor-gateway: no driver named {name!r}{hint}; installed: {', '.join(names)}"


def _render_option(option: Mapping[str, Any], width: int) -> list[str]:
    head = f"    {option['name']}: {option['type']} — {option['shown']}"
    lines = textwrap.wrap(head, width, subsequent_indent=" " * 8, break_on_hyphens=False)
    if option["help"]:
        lines += textwrap.wrap(
            option["help"],
            width,
            initial_indent=" " * 8,
            subsequent_indent=" " * 8,
            break_on_hyphens=False,
        )
    return lines


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def show_default(annotation: Any, value: Any) -> str:
    """``default "256KiB"``, ``default "5s"``, ``default 9600``, or ``not set``."""
    if value is None:
        return "not set"
    kind = _special(annotation)
    if kind == "size" and isinstance(value, int):
        return f'default "{format_size(value)}"'
    if kind == "duration" and isinstance(value, int | float):
        return f'default "{format_duration(float(value))}"'
    if isinstance(value, BaseModel):
        return "default {}" if not value.model_fields_set else f"default {value!r}"
    if value in ({}, []):
        return f"default {json.dumps(value)}"
    return f"default {json.dumps(_jsonable(value), ensure_ascii=False)}"


def format_size(size: int) -> str:
    """Bytes as the docs write them: ``"256KiB"``, ``"4MiB"``, else a byte count."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("kB", 1000)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


def format_duration(seconds: float) -> str:
    """Seconds as the docs write them: ``"200ms"``, ``"5s"``, ``"10m"``, ``"30d"``."""
    units = (("w", 604800.0), ("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))
    for unit, factor in (*units, ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        count = seconds / factor
        if count >= 1 and abs(count - round(count)) < 1e-6:
            return f"{round(count)}{unit}"
    return f"{seconds:g}s"


def _special(annotation: Any) -> str | None:
    """``"size"`` or ``"duration"`` for those option types (optional or not), else None."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        validators = [getattr(m, "func", None) for m in args[1:]]
        if parse_duration in validators:
            return "duration"
        if parse_size in validators:
            return "size"
        return _special(args[0])
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            if (kind := _special(arg)) is not None:
                return kind
    return None


def type_name(annotation: Any) -> str:
    """A short readable name for an option's type: ``integer``, ``"N" | "E"``, ``duration``…"""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        kind = _special(annotation)
        return kind if kind is not None else type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        name = " | ".join(type_name(a) for a in rest)
        return f"{name} (optional)" if len(rest) < len(args) else name
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"table of {type_name(args[1])}" if len(args) == 2 else "table"
    names = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "table"
    return getattr(annotation, "__name__", str(annotation))


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def discovered_devices(config_path: str) -> dict[str, dict[str, Any]]:
    """Broker → device name → what discovery found (``discovered.json`` in the state
    directory of the configuration at ``config_path``); empty when there is none."""
    from gateway.config import load_config
    from gateway.discovery.store import read_discovered

    config = load_config(config_path)
    devices: dict[str, dict[str, Any]] = read_discovered(config.state_dir)["devices"]
    return devices


def render_discovered(found: Mapping[str, Mapping[str, Any]], width: int = WIDTH) -> str:
    """The ``Discovered devices`` section of ``drivers -c FILE``."""
    lines = ["", "Discovered devices (docs/discovery.md):"]
    if not any(found.values()):
        lines.append("  none (is discovery on? brokers.<name>.discovery)")
    for broker in sorted(found):
        for name in sorted(found[broker]):
            info = found[broker][name]
            source = info.get("source", "?")
            lines.append(_cut(f"  {name}  ({source} on broker {broker})", width))
            fields = info.get("fields") or {}
            parts = {
                "fields": [f"{f}\u00a0[{u}]" if u else f for f, u in fields.items()],
                "sensors": info.get("sensors") or [],
                "topics": info.get("topics") or [],
            }
            for label, items in parts.items():
                if items:
                    text = ", ".join(str(i) for i in items)
                    lines += textwrap.wrap(
                        text,
                        width,
                        initial_indent=f"    {label}: ",
                        subsequent_indent=" " * (len(label) + 6),
                        break_on_hyphens=False,
                    )
    return "\n".join(lines)
