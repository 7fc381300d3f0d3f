"""Configuration: TOML files → validated, typed objects, with every mistake reported.

The main file may be accompanied by drop-ins in ``conf.d/*.toml`` beside it, merged in
name order (tables merge, later values win). Strings may use ``${NAME}`` to take a value
from the environment (``$${`` writes a literal ``${``); secrets can also come from files
(``token_file``, ``password_file``) so none needs to sit in the main file.

:func:`load_config` raises :class:`~gateway.errors.ConfigError` listing every problem
with its TOML path, e.g. ``devices.boiler.baudrate: expected an integer, got "96OO"``.
Besides types it refuses what could never work at run time: names InfluxDB refuses,
topic levels a static or device tag would overwrite, a state directory this user cannot
write. No message shows a secret, a URL's credentials or a value taken from ``${ENV}``.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import socket
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.driver import Driver, MqttDriver, MqttOptions, SerialOptions
from gateway.errors import ConfigError
from gateway.options import Duration, DurationOrZero, Options, PathOption, Size, expand_path
from gateway.pipeline.lineprotocol import LineProtocolError, encode
from gateway.pipeline.normalize import NormalizeConfig
from gateway.pipeline.reading import Reading
from gateway.service.statedir import user_state_dir

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
# Hostile files: a configuration is a few kB; the deepest real option is 5 tables down.
MAX_CONFIG_BYTES = 16 * 1024**2
MAX_DEPTH = 32


def _not_below(field_name: str) -> Any:
    """A validator: this duration must not be less than ``field_name`` (a lower bound)."""

    def check(value: float, info: ValidationInfo) -> float:
        lower = info.data.get(field_name)  # absent when it failed its own validation
        if lower is not None and value < lower:
            raise ValueError(f"must not be less than {field_name} ({lower:g} s), got {value:g} s")
        return value

    return check


def _default_state_dir() -> str:
    """/var/lib/sensor-gateway, or the user's own state directory when this user cannot
    write there (run by hand; the gateway says so when it starts)."""
    if _dir_problem(Path(DEFAULT_STATE_DIR)) is None:
        return DEFAULT_STATE_DIR
    return str(user_state_dir())


class GatewaySection(Options):
    """``[gateway]``: process-wide settings."""

    state_dir: PathOption = Field(default_factory=lambda: _default_state_dir())
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"
    shutdown_grace: Duration = DEFAULT_SHUTDOWN_GRACE_S
    restart_backoff_initial: Duration = 1.0
    restart_backoff_max: Duration = Field(default=60.0, validate_default=True)
    metrics_interval: Duration = 60.0
    clock_sync_check: bool = True
    time_resolution: Duration = 0.001
    """Arrival timestamps of one device are at least this far apart (see docs)."""
    http_listen: str | None = None
    """``host:port`` of the optional /healthz and /metrics endpoint (off when unset)."""
    health_sink_failing: Duration = 300.0
    """/healthz answers 503 once a sink has been failing this long."""
    status_group: str | None = None
    """Group given the status socket, so its members run ``status`` without sudo (unset:
    the gateway's own group)."""

    @field_validator("status_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None:
            import grp

            try:
                grp.getgrnam(value)
            except KeyError:
                raise ValueError(
                    f'no group "{value}" on this system; create it (groupadd {value}) or '
                    "leave status_group unset for the gateway's own group"
                ) from None
        return value

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            from gateway.service.http import parse_listen

            parse_listen(value)
        return value

    _backoff_order = field_validator("restart_backoff_max")(_not_below("restart_backoff_initial"))


class SpoolSection(Options):
    """``[spool]``: the durable outbox every reading passes through."""

    path: PathOption | None = None
    commit_interval: Duration = DEFAULT_COMMIT_INTERVAL_S
    max_bytes: Size = DEFAULT_SPOOL_MAX_BYTES
    max_age: Duration | None = None
    synchronous: Literal["normal", "full"] = "normal"


class InfluxSection(Options):
    """``[sinks.influxdb]``: where readings are written."""

    enabled: bool = True
    url: str
    api: Literal["v2", "v1", "v3"] = "v2"
    # v2 (token also v3)
    org: str = ""
    bucket: str = ""
    token: SecretStr | None = None
    token_file: PathOption | None = None
    # v1 and v3 (InfluxDB 3's "db")
    database: str = ""
    retention_policy: str = ""
    username: str = ""
    password: SecretStr | None = None
    password_file: PathOption | None = None
    # writer
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    flush_interval: Duration = DEFAULT_FLUSH_INTERVAL_S
    timeout: Duration = 10.0
    gzip: bool = True
    retry_max_interval: Duration = 60.0
    retry_after_max: Duration = 300.0
    verify_tls: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        scheme, sep, rest = url.partition("://")
        host = (rest if sep else url).split("/", 1)[0]
        if "@" in host:
            # Keeps secrets out of the URL, which is logged and shown by check-config.
            raise ValueError("put credentials in token / username / password, not in the url")
        if not sep or scheme.lower() not in ("http", "https"):
            raise ValueError(f"expected an http:// or https:// URL, got {_show(url)}")
        if not host:
            raise ValueError(f"the URL has no host, got {_show(url)}")
        return url

    @model_validator(mode="after")
    def _api_fields(self) -> InfluxSection:
        problems = []
        if self.api == "v2" and not self.bucket:
            problems.append('"bucket" is required when api = "v2"')
        if self.api in ("v1", "v3") and not self.database:
            problems.append(f'"database" is required when api = "{self.api}"')
        if self.api == "v3" and self.token is None and self.token_file is None:
            problems.append('"token" or "token_file" is required when api = "v3"')
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
    path: PathOption | None = None
    retention: DurationOrZero = 30 * 86400.0
    """0 keeps everything."""
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0)
    flush_interval: Duration = DEFAULT_FLUSH_INTERVAL_S


class SinksSection(Options):
    """``[sinks]``."""

    influxdb: InfluxSection | None = None
    local: LocalSection = LocalSection()


class BrokerSection(Options):
    """``[brokers.<name>]``: one MQTT broker; its devices share one connection."""

    host: str = Field(min_length=1)
    port: int = Field(default=1883, gt=0, lt=65536)
    username: str | None = None
    password: SecretStr | None = None
    password_file: PathOption | None = None
    client_id: str | None = None
    # MQTT carries the keepalive in two bytes.
    keepalive: int = Field(default=60, gt=0, le=65535)
    tls: bool = False
    ca_file: PathOption | None = None
    cert_file: PathOption | None = None
    key_file: PathOption | None = None
    reconnect_initial: Duration = 1.0
    reconnect_max: Duration = Field(default=30.0, validate_default=True)
    # MQTT 5 lets us state how many unacknowledged QoS 1 messages the broker may send
    # (Receive Maximum); a 3.1.1 broker decides (mosquitto: max_inflight_messages, 20).
    protocol: Literal["5", "3.1.1"] = "5"
    receive_maximum: int = Field(default=2000, ge=2, le=65535)
    inflight_window: int = Field(default=20, ge=2, le=65535)
    # Messages the broker queues for us while we are away (mosquitto max_queued_messages).
    broker_queue_limit: int = Field(default=1000, ge=0)
    # Zero-config devices (docs/discovery.md): off unless listed.
    discovery: list[Literal["homeassistant", "tasmota"]] = Field(default_factory=list)
    discovery_prefix: str = Field(
        default="homeassistant", pattern=r"^[^+#/\x00]([^+#\x00]*[^+#/\x00])?$"
    )
    discovery_exclude: list[str] = Field(default_factory=list)
    # A hostile or broken publisher can announce thousands of devices; 200 is far more
    # than a home or small site has on one broker, and bounds memory and subscriptions.
    discovery_max_devices: int = Field(default=200, ge=1, le=10_000)

    _backoff_order = field_validator("reconnect_max")(_not_below("reconnect_initial"))

    @model_validator(mode="before")
    @classmethod
    def _tls_port(cls, data: Any) -> Any:
        # MQTT over TLS listens on 8883 (IANA); 1883 with TLS would fail in the handshake.
        tls = isinstance(data, dict) and any(data.get(k) for k in ("tls", "ca_file", "cert_file"))
        if tls and "port" not in data:
            return {**data, "port": 8883}
        return data

    @model_validator(mode="after")
    def _key_with_cert(self) -> BrokerSection:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError('"key_file" needs "cert_file" (the client certificate)')
        return self

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
    # A factory: the default state directory depends on who runs it, checked per load.
    gateway: GatewaySection = Field(default_factory=GatewaySection)
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

    @property
    def disabled_sinks(self) -> list[str]:
        """Sinks configured but turned off with ``enabled = false``: the spool keeps what
        they have not had yet until they are turned on again."""
        names = []
        if self.sinks.influxdb is not None and not self.sinks.influxdb.enabled:
            names.append("influxdb")
        if self.sinks.local.enabled is False:
            names.append("local")
        return names


def load_config(
    path: str | Path,
    drivers: Mapping[str, type[Driver[Any]]] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    check_access: bool = True,
) -> Config:
    """Read, merge, interpolate and validate the configuration at ``path``.

    ``check_access`` also checks, for the user running this, that the state directory,
    spool and local store are writable (or creatable) and the ``*_file`` options
    readable; commands that only read what a gateway wrote (query, status) pass False.

    Raises:
        ConfigError: with every problem found, each with its TOML path.
    """
    main = Path(path)
    sources = config_sources(main)
    merged, problems = _read_merged(sources)
    if problems:
        raise ConfigError(problems, source=str(main))
    return config_from_dict(
        merged, drivers=drivers, env=env, sources=tuple(sources), check_access=check_access
    )


def load_gateway_section(path: str | Path, env: Mapping[str, str] | None = None) -> GatewaySection:
    """Only ``[gateway]`` of the configuration at ``path`` (``conf.d/*.toml`` merged).

    For commands that talk to a running gateway (``status``): the rest is the gateway's
    business, and may name what only the service sees (``${CREDENTIALS_DIRECTORY}``).

    Raises:
        ConfigError: a file cannot be read or parsed, or ``[gateway]`` has errors.
    """
    main = Path(path)
    sources = config_sources(main)
    merged, problems = _read_merged(sources)
    used = _EnvUsed()
    raw = _interpolate(
        {"gateway": merged.get("gateway", {})},
        os.environ if env is None else env,
        "",
        problems,
        used,
    )
    top = None
    try:
        top = _TopLevel.model_validate(raw)
    except ValidationError as err:
        problems += _pydantic_problems(err, "", _TopLevel, used.templates)
    if problems or top is None:
        raise ConfigError([(p, used.scrub(m)) for p, m in problems], source=str(main))
    return top.gateway


def config_from_dict(
    data: Mapping[str, Any],
    drivers: Mapping[str, type[Driver[Any]]] | None = None,
    env: Mapping[str, str] | None = None,
    sources: tuple[Path, ...] = (),
    *,
    check_access: bool = True,
) -> Config:
    """Validate an already-parsed configuration (used by ``load_config`` and the demo)."""
    if drivers is None:
        from gateway.plugins import load_drivers

        drivers = load_drivers()
    problems: list[tuple[str, str]] = []
    env_used = _EnvUsed()
    data = _interpolate(data, os.environ if env is None else env, "", problems, env_used)
    try:
        top = _TopLevel.model_validate(data)
    except ValidationError as err:
        problems += _pydantic_problems(err, "", _TopLevel, env_used.templates)
        top = None
    raw_devices = data.get("devices", {}) if isinstance(data.get("devices"), dict) else {}
    devices: dict[str, DeviceSpec] = {}
    for name, raw in raw_devices.items():
        spec = _device(name, raw, drivers, problems, env_used.templates)
        if spec is not None:
            devices[name] = spec
    # Device cross-checks need only the broker names, so they run (and report) even when
    # another part of the top level is invalid: check-config lists every mistake at once.
    raw_brokers = data.get("brokers")
    broker_names = list(raw_brokers) if isinstance(raw_brokers, dict) else []
    problems += [
        (_join("brokers", b), "a broker name must not be empty") for b in broker_names if not b
    ]
    problems += _cross_checks(broker_names, devices)
    problems += _broker_refs(raw_devices, drivers, broker_names, devices)
    if check_access:
        # From the raw tables, so a mistake elsewhere in a section hides nothing here.
        problems += _file_problems(data)
        storage = _storage_sections(data) if top is None else (top.gateway, top.spool, top.sinks)
        if storage is not None:
            problems += _storage_problems(*storage)
    if problems:
        where = str(sources[0]) if sources else None
        raise ConfigError([(p, env_used.scrub(m)) for p, m in problems], source=where)
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


def _read_toml(source: Path, problems: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The parsed file, or None with the reason in ``problems`` (named by file and line).

    A missing or unreadable file is fatal at once: nothing else can be checked.
    """
    try:
        with source.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([("", f"configuration file {source} not found")]) from None
    except OSError as err:
        raise ConfigError([("", f"cannot read {source}: {err.strerror}")]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        problems.append(("", f"{source}: over {MAX_CONFIG_BYTES >> 20} MiB, not a configuration"))
        return None
    if (nul := raw.find(b"\0")) >= 0:
        where = _line_col(raw, nul)
        problems.append(("", f"{source}: a binary file, not TOML text (a NUL byte at {where})"))
        return None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as err:
        where = _line_col(raw, err.start)
        problems.append(
            (
                "",
                f"{source}: not UTF-8 text (byte 0x{raw[err.start]:02x} at {where}); "
                "TOML files must be saved as UTF-8",
            )
        )
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problems.append(("", f"{source}: TOML syntax error: {err}"))
        return None
    except RecursionError:
        line = _deepest_line(text)
        at = f"line {line}: " if line else ""
        problems.append(
            (
                "",
                f"{source}: {at}arrays or inline tables nested too deeply "
                f"(the limit is {MAX_DEPTH} levels)",
            )
        )
        return None
    except ValueError as err:  # Python's limit on digits in int(), e.g. x = 99999…
        line = next(
            (n for n, s in enumerate(text.splitlines(), 1) if re.search(r"[0-9a-fA-F_]{4300}", s)),
            None,
        )
        at = f"line {line}: " if line else ""
        reason = "an integer with more than 4300 digits" if "digits" in str(err) else str(err)
        problems.append(("", f"{source}: {at}{reason}"))
        return None
    if (deep := _too_deep(data)) is not None:
        problems.append(
            (
                deep,
                f"tables or arrays nested too deeply (the limit is {MAX_DEPTH} levels) in {source}",
            )
        )
        return None
    return data


def _line_col(raw: bytes, offset: int) -> str:
    line = raw.count(b"\n", 0, offset) + 1
    column = offset - raw.rfind(b"\n", 0, offset)
    return f"line {line}, column {column}"


def _too_deep(data: dict[str, Any]) -> str | None:
    """The TOML path (shortened) of a value nested deeper than MAX_DEPTH, else None."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:  # iterative: the data may be thousands of levels deep
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{path}…"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if isinstance(child, dict | list):
                stack.append((child, _join(path, key), depth + 1))
    return None


def _deepest_line(text: str) -> int | None:
    """The line where arrays and inline tables nest deepest (for a file too deep to parse).

    A rough scan (strings and comments skipped, table headers ignored), only used to
    point at the place in a file tomllib could not parse at all.
    """
    depth = best = 0
    line = best_line = 1
    i, n = 0, len(text)
    line_start = True
    while i < n:
        char = text[i]
        if char == "\n":
            line += 1
            line_start = True
        elif char in " \t\r":
            pass
        elif char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif char in "\"'":
            delim = char * 3 if text.startswith(char * 3, i) else char
            i += len(delim)
            while i < n and not text.startswith(delim, i):
                if text[i] == "\\" and char == '"':
                    i += 1
                elif text[i] == "\n":
                    line += 1
                i += 1
            i += len(delim)
            line_start = False
            continue
        elif char == "[" and depth == 0 and line_start:  # a table header
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        elif char in "[{":
            depth += 1
            if depth > best:
                best, best_line = depth, line
            line_start = False
        elif char in "]}":
            depth = max(0, depth - 1)
            line_start = False
        else:
            line_start = False
        i += 1
    return best_line if best else None


def config_sources(main: Path) -> list[Path]:
    """The main file and its drop-ins (``conf.d/*.toml`` beside it), in merge order."""
    dropins = main.parent / "conf.d"
    return [main, *sorted(dropins.glob("*.toml"))] if dropins.is_dir() else [main]


def merge_tables(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Merge TOML tables: a later file's keys win, tables merge key by key."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge_tables(into[key], value)
        else:
            into[key] = value


def _read_merged(sources: list[Path]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    merged: dict[str, Any] = {}
    for source in sources:
        data = _read_toml(source, problems)
        if data is not None:
            merge_tables(merged, data)
    return merged, problems


_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass
class _EnvUsed:
    """What ``${NAME}`` interpolation put where, so no message shows those values."""

    templates: dict[str, str] = field(default_factory=dict)
    """TOML path → the string as written, for every string that took a value from env."""
    values: dict[str, str] = field(default_factory=dict)
    """NAME → value, for every variable used."""

    def scrub(self, message: str) -> str:
        """``message`` with each variable's value written back as ``${NAME}``."""
        for name, value in sorted(self.values.items(), key=lambda kv: -len(kv[1])):
            # Very short values would mangle ordinary words and guard no real secret.
            if len(value) >= 4:
                for shown in {value, json.dumps(value)[1:-1]}:
                    message = message.replace(shown, f"${{{name}}}")
        return message


def _interpolate(
    value: Any,
    env: Mapping[str, str],
    path: str,
    problems: list[tuple[str, str]],
    used: _EnvUsed,
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
            used.templates[path] = value
            used.values[name] = env[name]
            return env[name]

        return _ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, _join(path, k), problems, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{path}[{i}]", problems, used) for i, v in enumerate(value)]
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
    templates: Mapping[str, str],
) -> DeviceSpec | None:
    where = _join("devices", name)
    if not name:
        problems.append((where, "a device name must not be empty"))
        return None
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
        # The keys every device has can still be checked, in the same pass.
        known = {k: v for k, v in raw.items() if k in DeviceSection.model_fields}
        try:
            core_only = DeviceSection.model_validate(known)
        except ValidationError as err:
            problems += _pydantic_problems(err, where, DeviceSection, templates)
        else:
            problems += _names_refused(where, name, core_only, None)
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
        problems += _pydantic_problems(err, where, DeviceSection, templates)
    try:
        options = driver_cls.Options.model_validate(opts)
    except ValidationError as err:
        problems += _pydantic_problems(err, where, driver_cls.Options, templates)
    if section is None or options is None or bad:
        if section is not None:  # its names are checked in the same pass
            problems += _names_refused(where, name, section, None)
        return None
    spec = DeviceSpec(name, section, driver_cls, options)
    try:
        driver = spec.build_driver()
    except (ValueError, TypeError) as err:
        problems.append((where, str(err)))
        return None
    refused = _names_refused(where, name, section, driver)
    problems += refused
    return None if refused else spec


def _names_refused(
    where: str, name: str, section: DeviceSection, driver: Driver[Any] | None
) -> list[tuple[str, str]]:
    """The names this device would write that InfluxDB refuses, or that overwrite each other.

    The line-protocol encoder refuses them at run time reading by reading; here the ones
    fixed by the configuration are refused once, with their TOML path. Without a
    ``driver`` (its options are invalid) the names its options derive are not checked.
    """
    problems: list[tuple[str, str]] = []

    def check(
        path: str,
        measurement: str = "m",
        tag: tuple[str, str] = ("t", "v"),
        field: str = "f",
        what: str = "",
    ) -> bool:
        """Encode a reading with these names; on refusal note the encoder's reason at path."""
        try:
            encode(Reading(measurement, dict([tag]), {field: 1.0}, 0))
        except LineProtocolError as err:
            problems.append((path, f"{what}{err}"))
            return False
        return True

    if section.measurement is not None:
        check(f"{where}.measurement", measurement=section.measurement)
    for key, value in section.tags.items():
        check(_join(f"{where}.tags", key), tag=(key, value))
    device_tag = section.device_tag
    if device_tag is not None and check(f"{where}.device_tag", tag=(device_tag, "v")):
        check(
            where,
            tag=(device_tag, name),
            what=f'the device name is the value of the tag "{device_tag}" (device_tag): ',
        )
    for source, rule in section.fields.items():
        path = _join(f"{where}.fields", source) + (".name" if rule.name is not None else "")
        check(path, field=rule.name or source)
    for path, key, what in _driver_tag_keys(where, driver) if driver is not None else ():
        if not check(path, tag=(key, "v"), what=f"{what} becomes a tag: "):
            continue
        if key == device_tag:
            problems.append(
                (
                    path,
                    f'{what} would be the tag "{key}", but the device tag (device_tag = '
                    f'"{key}") overwrites it with the device name, so all its sensors would '
                    "write one series and same-time readings overwrite each other; rename "
                    "it or set device_tag to another key",
                )
            )
        elif key in section.tags:
            problems.append(
                (
                    path,
                    f'{what} would be the tag "{key}", but the static tag '
                    f"{_join('tags', key)} overwrites it, so all its sensors would write one "
                    "series and same-time readings overwrite each other; rename one of them",
                )
            )
    return problems


def _driver_tag_keys(where: str, driver: Driver[Any]) -> Iterator[tuple[str, str, str]]:
    """(TOML path, tag key, description) of each tag key a driver derives from its options.

    Named topic levels of MQTT drivers, and the keys of a ``tags_from_payload`` table
    (the json driver's option; a plugin with an option so named means the same).
    """
    if isinstance(driver, MqttDriver):
        for i, topic in enumerate(driver.options.topics):
            for level in topic.split("/"):
                if level.startswith("{") and level.endswith("}"):
                    yield f"{where}.topics[{i}]", level[1:-1], f"the topic level {level}"
    payload_tags = getattr(driver.options, "tags_from_payload", None)
    if isinstance(payload_tags, Mapping):
        for key in payload_tags:
            if isinstance(key, str):
                path = _join(f"{where}.tags_from_payload", key)
                yield path, key, f'the payload tag "{key}"'


def _cross_checks(
    broker_names: list[str], devices: Mapping[str, DeviceSpec]
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
            if other != name and (why := _bus_problem(spec, devices[other])):
                problems.append((f"{where}.port", why))
    return problems


def _bus_problem(spec: DeviceSpec, first: DeviceSpec) -> str | None:
    """Why ``spec`` may not share its port with ``first`` (None: they are on one bus)."""
    opts, theirs = spec.options, first.options
    assert isinstance(opts, SerialOptions)
    assert isinstance(theirs, SerialOptions)
    shared = getattr(spec.driver_cls, "shares_port", False)
    if not shared or spec.driver_cls is not first.driver_cls:
        why = "" if shared else f" (driver {spec.section.driver} cannot share a port)"
        return f'"{opts.port}" is already used by device "{first.name}"{why}'
    if opts.port != theirs.port:
        return (
            f'"{opts.port}" is the port of device "{first.name}" ("{theirs.port}"); '
            "devices on one bus must name it the same way"
        )
    try:
        mine, other = spec.build_driver(), first.build_driver()
    except (ValueError, TypeError):
        return None  # reported where the driver is built
    if getattr(mine, "poll_interval", None) is None:
        return f'"{opts.port}" is shared with device "{first.name}", but only polled devices can share a port'
    lines = [d.line_settings() for d in (mine, other) if hasattr(d, "line_settings")]
    if len(lines) == 2 and lines[0] != lines[1]:
        return (
            f'device "{first.name}" on the same bus uses {lines[1]}, this one {lines[0]}; '
            "devices on one bus need the same line settings"
        )
    return None


def _broker_refs(
    raw_devices: Mapping[str, Any],
    drivers: Mapping[str, type[Driver[Any]]],
    broker_names: list[str],
    devices: Mapping[str, DeviceSpec],
) -> list[tuple[str, str]]:
    """Unknown brokers of MQTT devices whose other options are invalid (the valid ones
    are checked by :func:`_cross_checks`), so one pass reports both mistakes."""
    problems: list[tuple[str, str]] = []
    for name, raw in raw_devices.items():
        if name in devices or not isinstance(raw, dict) or raw.get("enabled") is False:
            continue
        driver = raw.get("driver")
        cls = drivers.get(driver) if isinstance(driver, str) else None
        if cls is None or not issubclass(cls.Options, MqttOptions):
            continue
        broker = raw.get("broker", cls.Options.model_fields["broker"].default)
        if isinstance(broker, str) and broker and broker not in broker_names:
            hint = _did_you_mean(broker, broker_names)
            problems.append(
                (
                    _join(_join("devices", name), "broker"),
                    f'no broker "{broker}" is configured{hint}; '
                    f"add a [brokers.{broker}] table with its host",
                )
            )
    return problems


def file_options(data: Mapping[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(TOML path, expanded path, holds a secret) of every ``*_file`` option in raw data.

    Read from the raw tables, so an invalid key beside one does not hide it; values
    that are not valid paths are skipped (reported by validation).
    """
    sinks = data.get("sinks")
    influx = sinks.get("influxdb") if isinstance(sinks, dict) else None
    tables: list[tuple[str, Any, tuple[str, ...]]] = [
        ("sinks.influxdb", influx, ("token_file", "password_file"))
    ]
    brokers = data.get("brokers")
    if isinstance(brokers, dict):
        tables += [(_join("brokers", b), t, ("password_file",)) for b, t in brokers.items()]
    for base, table, secrets in tables:
        if not isinstance(table, dict):
            continue
        for key in ("token_file", "password_file", "ca_file", "cert_file", "key_file"):
            value = table.get(key)
            if isinstance(value, str):
                try:
                    yield f"{base}.{key}", expand_path(value), key in secrets
                except ValueError:
                    continue


def _file_problems(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``*_file`` options must name files this user can read."""
    problems: list[tuple[str, str]] = []
    for where, file, secret in file_options(data):
        if reason := _unreadable(file, secret):
            problems.append((where, f'"{file}" {reason}'))
    return problems


def _storage_sections(
    data: Mapping[str, Any],
) -> tuple[GatewaySection, SpoolSection, SinksSection] | None:
    """The storage settings alone, when the sections around them hold other mistakes."""

    def table(*keys: str) -> dict[str, Any]:
        current: Any = data
        for key in keys:
            current = current.get(key) if isinstance(current, dict) else None
        return current if isinstance(current, dict) else {}

    def pick(raw: dict[str, Any], *keys: str) -> dict[str, Any]:
        return {k: raw[k] for k in keys if k in raw}

    influx = table("sinks", "influxdb")
    local = pick(table("sinks", "local"), "enabled", "path")
    if "enabled" not in local:
        local["enabled"] = not influx or influx.get("enabled") is False
    try:
        return (
            GatewaySection.model_validate(pick(table("gateway"), "state_dir")),
            SpoolSection.model_validate(pick(table("spool"), "path")),
            SinksSection.model_validate({"local": local}),
        )
    except ValidationError:
        return None  # already reported


_STATE_DIR_HINT = "; set gateway.state_dir to a directory this user can write"


def _storage_problems(
    gateway: GatewaySection, spool: SpoolSection, sinks: SinksSection
) -> list[tuple[str, str]]:
    """The state directory, spool and local store must be writable (or creatable) here.

    check-config answers for the user running it: run it as the service's user.
    """
    problems: list[tuple[str, str]] = []
    config = Config(gateway, spool, sinks, {}, {})
    reason = _dir_problem(config.state_dir)
    if reason:
        problems.append(("gateway.state_dir", f'"{config.state_dir}" {reason}{_STATE_DIR_HINT}'))
    files = [("spool.path", spool.path, config.spool_path)]
    if config.local_enabled:
        files.append(("sinks.local.path", sinks.local.path, config.local_path))
    for where, given, path in files:
        if given is None and reason:
            continue  # under the state directory, already reported
        if reason_file := _db_file_problem(path):
            default = "" if given is not None else " (the default, in gateway.state_dir)"
            problems.append((where, f'"{path}"{default} {reason_file}'))
    return problems


def _dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be used as a writable directory, or None (creatable is fine)."""
    try:
        if path.exists():
            if not path.is_dir():
                return "is not a directory"
            if not os.access(path, os.W_OK | os.X_OK):
                return "is not writable by this user"
            return None
        ancestor = Path(os.path.abspath(path)).parent
        while not os.path.lexists(ancestor):
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f'cannot be created: "{ancestor}" is not a directory'
        if not os.access(ancestor, os.W_OK | os.X_OK):
            return f'cannot be created: "{ancestor}" is not writable by this user'
    except OSError as err:
        return f"cannot be used: {err.strerror}"
    return None


def _db_file_problem(path: Path) -> str | None:
    """Why an SQLite file at ``path`` cannot be opened for writing, or None."""
    try:
        if path.is_dir():
            return "is a directory, not a file"
        if path.exists() and not path.is_file():
            return "is not a regular file"
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            return "is not writable by this user"
    except OSError as err:
        return f"cannot be used: {err.strerror}"
    # SQLite creates its journal and WAL files beside the database.
    reason = _dir_problem(path.parent)
    return f'cannot be used: its directory "{path.parent}" {reason}' if reason else None


def _unreadable(file: str, secret: bool) -> str | None:
    """Why ``file`` cannot be read as this option needs, or None."""
    try:
        if not os.path.exists(file):
            return "does not exist"
        if os.path.isdir(file):
            return "is a directory, not a file"
        if not os.access(file, os.R_OK):
            return "is not readable by this user"
        if secret:
            with open(file, "rb") as fh:
                raw = fh.read(64 * 1024 + 1)
            if len(raw) > 64 * 1024:
                return "is too large for a secret (over 64 KiB)"
            if not raw.decode("utf-8").strip():
                return "is empty"
    except UnicodeDecodeError:
        return "is not UTF-8 text"
    except OSError as err:
        return f"cannot be read: {err.strerror}"
    return None


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


# user:password@ (or a bare token@) before a host: shown as ***@.
_USERINFO_RE = re.compile(r"(^|://|\s)[^\s/@]*@")


def _show(value: Any) -> str:
    if isinstance(value, str):
        if "@" in value:
            value = _USERINFO_RE.sub(r"\1***@", value)
        if len(value) > 80:
            value = value[:77] + "…"
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


# Keys whose values are secrets (also a plugin's api_key, client_secret…): an error about
# them says the value's kind, never the value.
_SECRET_KEY_RE = re.compile(r"token|passw|secret|api_?key|credential", re.IGNORECASE)


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY_RE.search(key)) and not key.endswith("_file")


class _Hidden:
    """Stands in for a secret in an error message (shown by :func:`_show` via ``repr``)."""

    def __init__(self, value: Any) -> None:
        kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
        self.kind = kinds.get(type(value), "a value")

    def __repr__(self) -> str:
        return f"{self.kind} (not shown: it is a secret)"


class _FromEnv:
    """Stands in for a value taken from the environment: shows the string as written."""

    def __init__(self, template: str) -> None:
        self.template = template

    def __repr__(self) -> str:
        return json.dumps(self.template, ensure_ascii=False)


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
    err: ValidationError,
    prefix: str,
    model: type[BaseModel],
    templates: Mapping[str, str],
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
        if loc and _is_secret_key(loc[-1]):
            given = _Hidden(given)
        elif path in templates:
            given = _FromEnv(templates[path])
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
