"""A small TOML writer for configurations the gateway writes itself (the demo's).

Tables down to ``inline_depth`` levels get ``[a.b]`` headers; deeper ones are written
as inline tables. Strings are JSON strings, which TOML reads as basic strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def dumps(data: Mapping[str, Any], inline_depth: int = 2) -> str:
    """``data`` as TOML text."""
    out: list[str] = []
    _table(out, [], data, inline_depth)
    return "\n".join(out).lstrip("\n") + "\n"


def _table(out: list[str], path: list[str], data: Mapping[str, Any], inline_depth: int) -> None:
    values = {
        k: v for k, v in data.items() if not (isinstance(v, Mapping) and len(path) < inline_depth)
    }
    tables = {k: v for k, v in data.items() if k not in values}
    if path and (values or not tables):
        out.append(f"\n[{'.'.join(_key(p) for p in path)}]")
    out += [f"{_key(k)} = {_value(v)}" for k, v in values.items()]
    for key, sub in tables.items():
        _table(out, [*path, key], sub, inline_depth)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
