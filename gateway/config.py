"""Configuration: TOML files → validated, typed objects, with every mistake reported.

The main file may be accompanied by drop-ins in ``conf.d/*.toml`` beside it, merged in
name order (tables merge, later values win). Strings may use ``${NAME}`` to take a value
from the environment (``$${`` writes a literal ``${``); secrets can also come from files
(``token_file``, ``password_file``) so none needs to sit in the main file.

:func:`load_config` raises :class:`~gateway.errors.ConfigError` listing every problem
with its TOML path, e.g. ``devices.boiler.baudrate: expected an integer, got "96OO"``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator

from gateway.driver import Driver, MqttOptions, SerialOptions
from gateway.errors import ConfigError
from gateway.options import Duration, Options, Size
from gateway.pipeline.normalize import NormalizeConfig

# Defaults, and where the numbers come from.
DEFAULT_STATE_DIR = "/var/lib/sensor-gateway"
# systemd's default TimeoutStopSec is 90 s; we stop well within it.
DEFAULT_SHUTDOWN_GRACE_S = 10.0
# A commit window of 200 ms keeps an SD card from being written per reading while a
# crash loses at most a fifth of a second of readings.
DEFAULT_COMMIT_INTERVAL_S = 0.2
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024**2
# InfluxDB's own recommendation for batch writes is 5000 lines.
DEFAULT_BATCH_SIZE = 5000
DEFAULT_FLUSH_INTERVAL_S = 1.0


class GatewaySection(Options):
    """``[gateway]``: process-wide settings."""

    state_dir: str = DEFAULT_STATE_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_grace: Duration = DEFAULT_SHUTDOWN_GRACE_S
    restart_backoff_initial: Duration = 1.0
    restart_backoff_max: Duration = 60.0
    metrics_interval: Duration = 60.0
    clock_sync_check: bool = True
    time_resolution: Duration = 0.001
    """Arrival timestamps of one device are at least this far apart (see docs)."""


class SpoolSection(Options):
    """``[spool]``: the durable outbox every reading passes through."""

    path: str | None = None
    commit_interval: Duration = DEFAULT_COMMIT_INTERVAL_S
    max_bytes: Size = DEFAULT_SPOOL_MAX_BYTES
    max_age: Duration | None = None
    synchronous: Literal["normal", "full"] = "normal"


class InfluxSection(Options):
    """``[sinks.influxdb]``: where readings are written."""

    enabled: bool = True
    url: str = Field(pattern=r"^https?://")
    api: Literal["v2", "v1"] = "v2"
    # v2
    org: str = ""
    bucket: str = ""
    token: SecretStr | None = None
    token_file: str | None = None
    # v1
    database: str = ""
    retention_policy: str = ""
    username: str = ""
    password: SecretStr | None = None
    password_file: str | None = None
    # writer
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    flush_interval: Duration = DEFAULT_FLUSH_INTERVAL_S
    timeout: Duration = 10.0
    gzip: bool = True
    retry_max_interval: Duration = 60.0
    retry_after_max: Duration = 300.0
    verify_tls: bool = True

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSection:
        problems = []
        if "@" in self.url.split("//", 1)[-1].split("/", 1)[0]:
            # Keeps secrets out of the URL, which is logged and shown by check-config.
            problems.append("put credentials in token / username / password, not in the url")
        if self.api == "v2" and not self.bucket:
            problems.append('"bucket" is required when api = "v2"')
        if self.api == "v1" and not self.database:
            problems.append('"database" is required when api = "v1"')
        if self.token is not None and self.token_file is not None:
            problems.append('give either "token" or "token_file", not both')
        if self.password is not None and self.password_file is not None:
            problems.append('give either "password" or "password_file", not both')
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def resolved_token(self) -> str:
        """The token, read from ``token_file`` when given that way."""
        return _secret(self.token, self.token_file)

    def resolved_password(self) -> str:
        """The v1 password, read from ``password_file`` when given that way."""
        return _secret(self.password, self.password_file)


class LocalSection(Options):
    """``[sinks.local]``: the embedded, queryable store (on by default without InfluxDB)."""

    enabled: bool | None = None
    path: str | None = None
    retention: Duration = 30 * 86400.0
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    flush_interval: Duration = DEFAULT_FLUSH_INTERVAL_S


class SinksSection(Options):
    """``[sinks]``."""

    influxdb: InfluxSection | None = None
    local: LocalSection = LocalSection()


class BrokerSection(Options):
    """``[brokers.<name>]``: one MQTT broker; its devices share one connection."""

    host: str
    port: int = Field(default=1883, gt=0, lt=65536)
    username: str | None = None
    password: SecretStr | None = None
    password_file: str | None = None
    client_id: str | None = None
    keepalive: int = Field(default=60, gt=0)
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    reconnect_initial: Duration = 1.0
    reconnect_max: Duration = 30.0

    def resolved_password(self) -> str | None:
        """The password, read from ``password_file`` when given that way."""
        if self.password is None and self.password_file is None:
            return None
        return _secret(self.password, self.password_file)


class DeviceSection(NormalizeConfig):
    """The keys every device table has besides its driver's options."""

    driver: str
    enabled: bool = True


class _TopLevel(Options):
    gateway: GatewaySection = GatewaySection()
    spool: SpoolSection = SpoolSection()
    sinks: SinksSection = SinksSection()
    brokers: dict[str, BrokerSection] = Field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One configured device: its core settings, its driver class and validated options."""

    name: str
    section: DeviceSection
    driver_cls: type[Driver[Any]]
    options: Options

    def build_driver(self) -> Driver[Any]:
        """A new driver instance (validates, no I/O)."""
        return self.driver_cls(self.name, self.options)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole validated configuration."""

    gateway: GatewaySection
    spool: SpoolSection
    sinks: SinksSection
    brokers: dict[str, BrokerSection]
    devices: dict[str, DeviceSpec]
    sources: tuple[Path, ...] = field(default=())

    @property
    def state_dir(self) -> Path:
        return Path(self.gateway.state_dir)

    @property
    def spool_path(self) -> Path:
        return Path(self.spool.path) if self.spool.path else self.state_dir / "spool.db"

    @property
    def local_enabled(self) -> bool:
        """The local store runs when asked to, or by default when InfluxDB is not on."""
        if self.sinks.local.enabled is not None:
            return self.sinks.local.enabled
        influx = self.sinks.influxdb
        return influx is None or not influx.enabled

    @property
    def local_path(self) -> Path:
        local = self.sinks.local
        return Path(local.path) if local.path else self.state_dir / "readings.db"

    @property
    def influx(self) -> InfluxSection | None:
        influx = self.sinks.influxdb
        return influx if influx is not None and influx.enabled else None


def load_config(
    path: str | Path,
    drivers: Mapping[str, type[Driver[Any]]] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Read, merge, interpolate and validate the configuration at ``path``.

    Raises:
        ConfigError: with every problem found, each with its TOML path.
    """
    main = Path(path)
    sources = [main]
    dropin_dir = main.parent / "conf.d"
    if dropin_dir.is_dir():
        sources += sorted(dropin_dir.glob("*.toml"))
    problems: list[tuple[str, str]] = []
    merged: dict[str, Any] = {}
    for source in sources:
        try:
            with source.open("rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError([("", f"configuration file {source} not found")]) from None
        except OSError as err:
            raise ConfigError([("", f"cannot read {source}: {err.strerror}")]) from None
        except tomllib.TOMLDecodeError as err:
            problems.append(("", f"{source}: TOML syntax error: {err}"))
            continue
        _merge(merged, data)
    if problems:
        raise ConfigError(problems, source=str(main))
    return config_from_dict(merged, drivers=drivers, env=env, sources=tuple(sources))


def config_from_dict(
    data: Mapping[str, Any],
    drivers: Mapping[str, type[Driver[Any]]] | None = None,
    env: Mapping[str, str] | None = None,
    sources: tuple[Path, ...] = (),
) -> Config:
    """Validate an already-parsed configuration (used by ``load_config`` and the demo)."""
    if drivers is None:
        from gateway.plugins import load_drivers

        drivers = load_drivers()
    problems: list[tuple[str, str]] = []
    data = _interpolate(data, os.environ if env is None else env, "", problems)
    try:
        top = _TopLevel.model_validate(data)
    except ValidationError as err:
        problems += _pydantic_problems(err, "", _TopLevel)
        top = None
    raw_devices = data.get("devices", {}) if isinstance(data.get("devices"), dict) else {}
    devices: dict[str, DeviceSpec] = {}
    for name, raw in raw_devices.items():
        spec = _device(name, raw, drivers, problems)
        if spec is not None:
            devices[name] = spec
    # Device cross-checks need only the broker names, so they run (and report) even when
    # another part of the top level is invalid: check-config lists every mistake at once.
    raw_brokers = data.get("brokers")
    broker_names = list(raw_brokers) if isinstance(raw_brokers, dict) else []
    problems += _cross_checks(top, broker_names, devices)
    if problems:
        where = str(sources[0]) if sources else None
        raise ConfigError(problems, source=where)
    assert top is not None
    return Config(top.gateway, top.spool, top.sinks, top.brokers, devices, sources)


def default_client_id() -> str:
    """A client id stable across restarts, so the broker can keep our session."""
    return f"sensor-gateway-{socket.gethostname()}"


# --- internals -------------------------------------------------------------------


def _secret(value: SecretStr | None, path: str | None) -> str:
    if value is not None:
        return value.get_secret_value()
    if path is None:
        return ""
    return Path(path).read_text(encoding="utf-8").strip()


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(
    value: Any, env: Mapping[str, str], path: str, problems: list[tuple[str, str]]
) -> Any:
    if isinstance(value, str):
        if "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name = m.group(1)
            if name not in env:
                problems.append((path, f"environment variable {name} is not set"))
                return ""
            return env[name]

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, _join(path, k), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    part = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    return f"{path}.{part}" if path else part


def _device(
    name: str,
    raw: Any,
    drivers: Mapping[str, type[Driver[Any]]],
    problems: list[tuple[str, str]],
) -> DeviceSpec | None:
    where = _join("devices", name)
    if not isinstance(raw, dict):
        problems.append((where, f"expected a table, got {_show(raw)}"))
        return None
    driver_name = raw.get("driver")
    if not isinstance(driver_name, str):
        if driver_name is None:
            problems.append(
                (f"{where}.driver", f"missing; choose one of: {', '.join(sorted(drivers))}")
            )
        else:
            problems.append((f"{where}.driver", f"expected a string, got {_show(driver_name)}"))
        return None
    driver_cls = drivers.get(driver_name)
    if driver_cls is None:
        problems.append(
            (
                f"{where}.driver",
                f'unknown driver "{driver_name}"{_did_you_mean(driver_name, drivers)}'
                f" (installed: {', '.join(sorted(drivers))})",
            )
        )
        return None
    core_keys = set(DeviceSection.model_fields)
    option_keys = set(driver_cls.Options.model_fields)
    core: dict[str, Any] = {}
    opts: dict[str, Any] = {}
    bad = False
    for key, value in raw.items():
        if key in core_keys:
            core[key] = value
        elif key in option_keys:
            opts[key] = value
        else:
            bad = True
            hint = _did_you_mean(key, core_keys | option_keys)
            problems.append((_join(where, key), f'unknown key for a "{driver_name}" device{hint}'))
    section = options = None
    try:
        section = DeviceSection.model_validate(core)
    except ValidationError as err:
        problems += _pydantic_problems(err, where, DeviceSection)
    try:
        options = driver_cls.Options.model_validate(opts)
    except ValidationError as err:
        problems += _pydantic_problems(err, where, driver_cls.Options)
    if section is None or options is None or bad:
        return None
    spec = DeviceSpec(name, section, driver_cls, options)
    try:
        spec.build_driver()
    except (ValueError, TypeError) as err:
        problems.append((where, str(err)))
        return None
    return spec


def _cross_checks(
    top: _TopLevel | None, broker_names: list[str], devices: Mapping[str, DeviceSpec]
) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    ports: dict[str, str] = {}
    for name, spec in devices.items():
        if not spec.section.enabled:
            continue
        where = _join("devices", name)
        opts = spec.options
        if isinstance(opts, MqttOptions) and opts.broker not in broker_names:
            hint = _did_you_mean(opts.broker, broker_names)
            problems.append(
                (
                    f"{where}.broker",
                    f'no broker "{opts.broker}" is configured{hint}; '
                    f"add a [brokers.{opts.broker}] table with its host",
                )
            )
        if isinstance(opts, SerialOptions):
            other = ports.setdefault(os.path.realpath(opts.port), name)
            if other != name:
                problems.append(
                    (f"{where}.port", f'"{opts.port}" is already used by device "{other}"')
                )
    if top is None:
        return problems
    influx = top.sinks.influxdb
    secret_files: list[tuple[str, str | None]] = []
    if influx is not None:
        secret_files += [
            ("sinks.influxdb.token_file", influx.token_file),
            ("sinks.influxdb.password_file", influx.password_file),
        ]
    for bname, broker in top.brokers.items():
        base = _join("brokers", bname)
        secret_files += [
            (f"{base}.password_file", broker.password_file),
            (f"{base}.ca_file", broker.ca_file),
            (f"{base}.cert_file", broker.cert_file),
            (f"{base}.key_file", broker.key_file),
        ]
    for where, file in secret_files:
        if file is not None and not os.access(file, os.R_OK):
            reason = (
                "does not exist" if not os.path.exists(file) else "is not readable by this user"
            )
            problems.append((where, f'"{file}" {reason}'))
    return problems


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _show(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


# Keys whose values are secrets: an error about them says the value's kind, never the value.
_SECRET_KEYS = frozenset({"token", "password"})


class _Hidden:
    """Stands in for a secret in an error message (shown by :func:`_show` via ``repr``)."""

    def __init__(self, value: Any) -> None:
        kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
        self.kind = kinds.get(type(value), "a value")

    def __repr__(self) -> str:
        return f"{self.kind} (not shown: it is a secret)"


_EXPECTED = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "list_type": "expected an array",
}


def _pydantic_problems(
    err: ValidationError, prefix: str, model: type[BaseModel]
) -> list[tuple[str, str]]:
    problems = []
    for e in err.errors():
        loc = [p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # pydantic adds the member type to the location of union members; drop it.
        loc = [
            p
            for p in loc
            if p not in ("str", "int", "float", "bool", "constrained-str", "none")
            and not (isinstance(p, str) and p.startswith(("function-", "lax-", "strict-")))
        ]
        path = prefix
        for part in loc:
            path = _join(path, part)
        kind = e["type"]
        given = e.get("input")
        if loc and loc[-1] in _SECRET_KEYS:
            given = _Hidden(given)
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            hint = _did_you_mean(str(loc[-1]), parent.model_fields) if parent else ""
            problems.append((path, f"unknown key{hint}"))
        elif kind == "missing":
            problems.append((path, "required key is missing"))
        elif kind in _EXPECTED:
            problems.append((path, f"{_EXPECTED[kind]}, got {_show(given)}"))
        elif kind == "literal_error":
            expected = e.get("ctx", {}).get("expected", "")
            problems.append((path, f"expected one of {expected}, got {_show(given)}"))
        elif kind == "value_error":
            problems.append((path, str(e["msg"]).removeprefix("Value error, ")))
        else:
            problems.append((path, f"{e['msg']}, got {_show(given)}"))
    return problems


def _model_at(model: type[BaseModel], loc: list[Any]) -> type[BaseModel] | None:
    """The model class a (partial) error location points into, for did-you-mean hints."""
    current: Any = model
    for part in loc:
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return None
            current = _unwrap(info.annotation)
        elif isinstance(part, str):  # a dict key: step into the dict's value type
            current = _unwrap(getattr(current, "__args__", (None, None))[-1])
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args and type(None) in args:  # Optional[X]
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else annotation
    return annotation
