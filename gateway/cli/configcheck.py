"""``check-config``: every mistake of a configuration in one pass, and its warnings.

Errors (:class:`~gateway.errors.ConfigError`) come from :func:`gateway.config.load_config`.
Warnings are what is likely wrong but may be right at run time, so they never fail a
check: a serial port that does not exist now (the device may be plugged in later),
options that have no effect together, and secrets other users of the host can read.
They are computed from the files as written, so they are shown beside errors too.
"""

from __future__ import annotations

import os
import stat
import textwrap
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.config import (
    MAX_DEPTH,
    Config,
    config_sources,
    file_options,
    load_config,
    merge_tables,
)
from gateway.driver import Driver, SerialOptions
from gateway.errors import ConfigError

Finding = tuple[str, str]
"""(TOML path or file, message)."""

# Option keys whose value is a secret when written inline.
_INLINE_SECRETS = ("token", "password")


@dataclass
class CheckResult:
    """What ``check-config`` found: the configuration (None when it has errors)."""

    config: Config | None
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)


def check_config(
    path: str | Path, drivers: Mapping[str, type[Driver[Any]]] | None = None
) -> CheckResult:
    """Validate the configuration at ``path`` and collect its warnings."""
    if drivers is None:
        from gateway.plugins import load_drivers

        drivers = load_drivers()
    try:
        result = CheckResult(load_config(path, drivers=drivers))
    except ConfigError as err:
        result = CheckResult(None, list(err.problems))
    if all(where for where, _ in result.errors):  # not for files that cannot be read
        result.warnings = config_warnings(config_sources(Path(path)), drivers)
    return result


def log_warnings(config: Config) -> None:
    """Log the configuration's warnings once at start (``run``), as check-config says them."""
    import structlog

    log = structlog.get_logger("gateway.config")
    for where, message in config_warnings(list(config.sources)):
        log.warning("configuration warning", option=where, warning=message)


def config_warnings(
    sources: list[Path], drivers: Mapping[str, type[Driver[Any]]] | None = None
) -> list[Finding]:
    """Warnings for the files ``sources`` (unreadable or invalid files give none)."""
    if drivers is None:
        from gateway.plugins import load_drivers

        drivers = load_drivers()
    merged: dict[str, Any] = {}
    warnings: list[Finding] = []
    for source in sources:
        try:
            data = tomllib.loads(source.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError, RecursionError):
            continue  # reported as an error
        warnings += _world_readable_inline_secrets(source, data)
        merge_tables(merged, data)
    warnings += _missing_ports(merged, drivers)
    warnings += _influx_no_effect(merged)
    warnings += _local_store_off(merged)
    warnings += _world_readable_files(merged)
    return warnings


def _table(data: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data if isinstance(data, dict) else {}


def _from_env(value: str) -> bool:
    return "${" in value.replace("$${", "")


def _missing_ports(
    data: Mapping[str, Any], drivers: Mapping[str, type[Driver[Any]]]
) -> Iterator[Finding]:
    for name, raw in _table(data, "devices").items():
        if not isinstance(raw, dict) or raw.get("enabled") is False:
            continue
        driver, port = raw.get("driver"), raw.get("port")
        cls = drivers.get(driver) if isinstance(driver, str) else None
        if cls is None or not issubclass(cls.Options, SerialOptions):
            continue
        # Only device paths: a USB match ("usb:VID:PID") is looked up when the port opens.
        if not isinstance(port, str) or not port.startswith("/") or _from_env(port):
            continue
        if not os.path.exists(port):
            yield (
                f"devices.{name}.port",
                f'"{port}" does not exist now; fine if the device is plugged in later '
                "(the gateway keeps trying to open it)",
            )


def _influx_no_effect(data: Mapping[str, Any]) -> Iterator[Finding]:
    influx = _table(data, "sinks", "influxdb")
    if not influx:
        return
    where = "sinks.influxdb"
    api = influx.get("api", "v2")
    given = [k for k in influx if influx.get(k) not in (None, "")]
    if api == "v1":
        if influx.get("username"):
            for key in ("token", "token_file"):
                if key in given:
                    yield (
                        f"{where}.{key}",
                        'has no effect: with api = "v1" and a username the gateway signs in '
                        "with password / password_file",
                    )
        else:
            for key in ("token", "token_file"):
                if key in given:
                    yield (
                        f"{where}.{key}",
                        'with api = "v1" this is sent as "Authorization: Token", which '
                        "InfluxDB 1.x accepts only from 1.8 on (as username:password); for "
                        "InfluxDB 1.x give username and password_file instead",
                    )
        for key in ("org", "bucket"):
            if key in given:
                yield f"{where}.{key}", 'has no effect with api = "v1" (it writes to database)'
    elif api == "v2":
        for key in ("database", "retention_policy", "username", "password", "password_file"):
            if key in given:
                yield (
                    f"{where}.{key}",
                    'has no effect with api = "v2" (it signs in with token / token_file '
                    'and writes to bucket); for InfluxDB 1.x set api = "v1"',
                )
    elif api == "v3":
        for key in ("org", "bucket", "retention_policy", "username", "password", "password_file"):
            if key in given:
                yield (
                    f"{where}.{key}",
                    'has no effect with api = "v3" (it signs in with token / token_file '
                    "and writes to database, InfluxDB 3's db)",
                )


def _local_store_off(data: Mapping[str, Any]) -> Iterator[Finding]:
    """``[sinks.local]`` options while the store is off by default (InfluxDB configured)."""
    local = _table(data, "sinks", "local")
    influx = _table(data, "sinks", "influxdb")
    if "enabled" in local or not influx or influx.get("enabled") is False:
        return
    for key in local:
        yield (
            f"sinks.local.{key}",
            "has no effect: the local store is off by default when [sinks.influxdb] is "
            "configured; set sinks.local.enabled = true to keep both",
        )


def _readable_by_others(path: str | Path) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False  # missing or unreadable files are errors, not warnings
    return stat.S_ISREG(mode) and bool(mode & stat.S_IROTH)


def _world_readable_files(data: Mapping[str, Any]) -> Iterator[Finding]:
    for where, file, secret in file_options(data):
        if (secret or where.endswith(".key_file")) and _readable_by_others(file):
            yield (
                where,
                f'"{file}" holds a secret and every user of this host can read it; '
                f"fix: chmod o-rwx {file}",
            )


def _world_readable_inline_secrets(source: Path, data: Mapping[str, Any]) -> Iterator[Finding]:
    if not _readable_by_others(source):
        return
    for path in _inline_secrets(data, ""):
        yield (
            path,
            f'a secret written inline in "{source}", which every user of this host can read; '
            f"fix: chmod o-rwx {source} (or move it to a *_file option or ${{ENV}})",
        )


def _inline_secrets(data: Any, prefix: str, depth: int = 0) -> Iterator[str]:
    if not isinstance(data, dict) or depth > MAX_DEPTH:  # deeper is an error already
        return
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key in _INLINE_SECRETS and isinstance(value, str) and value and not _from_env(value):
            yield path
        else:
            yield from _inline_secrets(value, path, depth + 1)


def format_findings(
    heading: str, findings: list[Finding], kind: str, width: int | None = None
) -> str:
    """``heading: N kind(s):`` then one indented line per finding, wrapped to ``width``."""
    lines = [f"{heading}: {len(findings)} {kind}(s):"]
    for where, message in findings:
        text = f"  {where}: {message}" if where else f"  {message}"
        if width is None or len(text) <= width:
            lines.append(text)
        else:
            lines += textwrap.wrap(text, width, subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)
