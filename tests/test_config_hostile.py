"""Hostile and impossible configurations: each ends in a clear message and exit 2.

Through the real CLI (``python -m gateway check-config`` and ``run`` as subprocesses):
no traceback, the file named, the TOML path (or line) named, no secret echoed. Then the
validation rules themselves, in-process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.options import parse_duration, parse_size

SECRET = "s3cr3t-PW-value"
DEPTH = 10_000


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def base(tmp_path: Path) -> str:
    """A valid start: a writable state directory of its own."""
    return f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n\n'


def cli(config: Path, env: dict[str, str] | None = None) -> list[tuple[str, int, str, str]]:
    """``check-config`` and ``run`` on ``config``, side by side: (command, code, out, err)."""
    environ = {**os.environ, "HOME": str(config.parent / "home"), **(env or {})}
    procs = {
        command: subprocess.Popen(
            [sys.executable, "-m", "gateway", command, "-c", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            encoding="utf-8",
            errors="backslashreplace",
            env=environ,
            cwd=config.parent,
        )
        for command in ("check-config", "run")
    }
    results = []
    for command, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:  # `run` started a gateway: the config passed
            proc.kill()
            out, err = proc.communicate()
        results.append((command, proc.returncode, out, err))
    return results


def assert_rejected(
    config: Path, *expected: str, env: dict[str, str] | None = None, secret: str = SECRET
) -> None:
    for command, code, out, err in cli(config, env):
        shown = f"{command}: exit {code}\n{out}{err}"
        assert code == 2, shown
        assert "Traceback" not in err, shown
        assert str(config) in err, shown
        for text in expected:
            assert text in err, shown
        assert secret not in out + err, shown


def problems(path: Path, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return caught.value.problems


def only_problem(path: Path, env: dict[str, str] | None = None) -> tuple[str, str]:
    found = problems(path, env)
    assert len(found) == 1, found
    return found[0]


# --- hostile files, through the CLI ----------------------------------------------------------


def test_cli_deeply_nested_array(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", base(tmp_path) + "x = " + "[" * DEPTH + "]" * DEPTH)
    assert_rejected(config, "line 4", "nested too deeply")


def test_cli_deeply_nested_inline_table(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml", base(tmp_path) + "x = " + "{a = " * DEPTH + "1" + "}" * DEPTH
    )
    assert_rejected(config, "line 4", "nested too deeply")


def test_cli_deeply_nested_table_header(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", base(tmp_path) + "[" + ".".join(["t"] * DEPTH) + "]\n")
    assert_rejected(config, "t.t.t.t", "nested too deeply")


def test_cli_latin1_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path).encode() + b'[devices.b]\ndriver = "line"\nport = "/dev/caf\xe9"\n',
    )
    assert_rejected(config, "not UTF-8", "line 6")


def test_cli_binary_file(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", b"\x7fELF\x02\x01\x01\x00\x00\x00\xe9\xff" * 20)
    assert_rejected(config, "binary")


def test_cli_empty_device_name(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path) + '[devices.""]\ndriver = "line"\nport = "/dev/ttyUSB0"\n',
    )
    assert_rejected(config, 'devices."": a device name must not be empty')


# --- what can never work at run time, through the CLI -----------------------------------------


def test_cli_reserved_measurement(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[devices.b]\ndriver = "line"\nport = "/dev/ttyUSB0"\nmeasurement = "_m"\n',
    )
    assert_rejected(config, "devices.b.measurement: ", "reserved by InfluxDB")


def test_cli_topic_level_named_time(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[brokers.default]\nhost = "127.0.0.1"\n\n'
        + '[devices.m]\ndriver = "json"\ntopics = ["t/{time}/state"]\n',
    )
    assert_rejected(config, "devices.m.topics[0]: ", '"time" is reserved by InfluxDB')


def test_cli_payload_tag_named_time(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[brokers.default]\nhost = "127.0.0.1"\n\n'
        + '[devices.m]\ndriver = "json"\ntopics = ["t/+"]\n'
        + 'tags_from_payload = { time = "meta.t" }\n',
    )
    assert_rejected(config, "devices.m.tags_from_payload.time: ", "reserved by InfluxDB")


def test_cli_topic_level_named_like_the_device_tag(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[brokers.default]\nhost = "127.0.0.1"\n\n'
        + '[devices.m]\ndriver = "json"\ntopics = ["t/{device}"]\n',
    )
    assert_rejected(config, "devices.m.topics[0]: ", "device_tag", "one series")


def test_cli_zero_backoff(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path).replace("\n\n", "\nrestart_backoff_initial = 0\n\n"),
    )
    assert_rejected(config, "gateway.restart_backoff_initial: must be greater than 0")


def test_cli_zero_http_timeout(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[sinks.influxdb]\nurl = "http://127.0.0.1:8086"\nbucket = "b"\ntimeout = "0s"\n',
    )
    assert_rejected(config, "sinks.influxdb.timeout: must be greater than 0")


def test_cli_state_dir_not_a_directory(tmp_path: Path) -> None:
    a_file = write(tmp_path / "a-file", "")
    config = write(tmp_path / "gw.toml", f'[gateway]\nstate_dir = "{a_file}"\n')
    assert_rejected(config, "gateway.state_dir: ", "not a directory", "set gateway.state_dir")


def test_cli_tilde_is_expanded_never_created(tmp_path: Path) -> None:
    # HOME is a file: "~/gw" expands to a path that cannot be created; both commands must
    # say so about the expanded path, and nothing named "~" may appear.
    home = write(tmp_path / "home-file", "")
    config = write(tmp_path / "gw.toml", '[gateway]\nstate_dir = "~/gw"\n')
    assert_rejected(config, f"{home}/gw", "set gateway.state_dir", env={"HOME": str(home)})
    assert not (tmp_path / "~").exists()


def test_cli_tilde_paths_pass_check_config(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(home / "influx.token", SECRET).chmod(0o600)
    config = write(
        tmp_path / "gw.toml",
        '[gateway]\nstate_dir = "~/gw"\n\n[sinks.influxdb]\nurl = "http://127.0.0.1:8086"\n'
        'bucket = "b"\ntoken_file = "~/influx.token"\n',
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "HOME": str(home)},
        cwd=tmp_path,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert f"spool {home}/gw/spool.db" in result.stdout
    assert not (tmp_path / "~").exists()


def test_cli_credentials_in_a_url_are_not_echoed(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path) + f'[sinks.influxdb]\nurl = "ftp://user:{SECRET}@host"\nbucket = "b"\n',
    )
    assert_rejected(config, "sinks.influxdb.url: ")


def test_cli_env_values_are_not_echoed(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[sinks.influxdb]\nurl = "${INFLUX_URL}"\nbucket = "b"\n\n'
        + '[devices.b]\ndriver = "line"\nport = "/dev/ttyUSB0"\nbaudrate = "${BAUD}"\n',
    )
    assert_rejected(
        config,
        "sinks.influxdb.url: ",
        'devices.b.baudrate: expected an integer, got "${BAUD}"',
        env={"INFLUX_URL": f"http://me:{SECRET}@db:8086", "BAUD": SECRET},
    )


# --- file-level checks, in-process -----------------------------------------------------------


def test_deep_nesting_in_a_dropin_names_the_dropin(tmp_path: Path) -> None:
    main = write(tmp_path / "gw.toml", base(tmp_path))
    # Brackets in strings, comments and table headers do not count.
    text = "[t]\na = \"[[[[{{\"\nb = '''\n[[[\n'''  # [[[[\n"
    dropin = write(
        tmp_path / "conf.d" / "deep.toml", text + "x = " + "[" * DEPTH + "]" * DEPTH + "\n"
    )
    [(path, message)] = problems(main)
    assert path == ""
    assert message.startswith(f"{dropin}: line 6: ")
    assert "nested too deeply" in message


def test_moderate_nesting_is_reported_with_its_path(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", base(tmp_path) + "x = " + "[" * 40 + "]" * 40 + "\n")
    path, message = only_problem(config)
    assert path.startswith("gateway.x[0][0]")
    assert "nested too deeply" in message


def test_an_integer_too_long_to_read(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", base(tmp_path) + "x = " + "9" * 5000 + "\n")
    [(path, message)] = problems(config)
    assert path == ""
    assert message.startswith(f"{config}: line 4: ")
    assert "4300 digits" in message


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", b"\xef\xbb\xbf" + base(tmp_path).encode())
    assert load_config(config, env={}).state_dir == tmp_path / "state"


def test_a_directory_instead_of_a_file(tmp_path: Path) -> None:
    [(path, message)] = problems(tmp_path)
    assert (path, str(tmp_path) in message) == ("", True)


# --- names InfluxDB refuses ----------------------------------------------------------------


def device(tmp_path: Path, body: str, name: str = "b") -> Path:
    return write(
        tmp_path / "gw.toml",
        base(tmp_path) + f'[devices.{name}]\ndriver = "line"\nport = "/dev/ttyUSB0"\n{body}\n',
    )


def mqtt_device(tmp_path: Path, body: str) -> Path:
    return write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[brokers.default]\nhost = "127.0.0.1"\n\n'
        + f'[devices.m]\ndriver = "json"\n{body}\n',
    )


@pytest.mark.parametrize(
    ("body", "where", "reason"),
    [
        ('measurement = "_m"', "devices.b.measurement", "reserved"),
        ('measurement = "#m"', "devices.b.measurement", "comment"),
        ('tags = { time = "x" }', "devices.b.tags.time", "reserved"),
        ('tags = { _field = "x" }', "devices.b.tags._field", "reserved"),
        ('tags = { site = "home\\\\" }', "devices.b.tags.site", "backslash"),
        ('tags = { site = "a\\tb" }', "devices.b.tags.site", "control character"),
        ('device_tag = "time"', "devices.b.device_tag", "reserved"),
        ('fields.t = { name = "time" }', "devices.b.fields.t.name", "reserved"),
        ("fields.time = { round = 1 }", "devices.b.fields.time", "reserved"),
    ],
)
def test_names_influxdb_refuses(tmp_path: Path, body: str, where: str, reason: str) -> None:
    path, message = only_problem(device(tmp_path, body))
    assert path == where
    assert reason in message


def test_a_device_name_that_cannot_be_a_tag_value(tmp_path: Path) -> None:
    # The device name is the value of the device tag: a trailing backslash cannot be written.
    path, message = only_problem(device(tmp_path, "", name='"bad\\\\"'))
    assert path == 'devices."bad\\\\"'
    assert "device_tag" in message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('topics = ["t/{time}"]', '"time" is reserved'),
        ('topics = ["t/{_measurement}"]', "reserved"),
        ('topics = ["t/{device}"]', "device_tag"),
        ('topics = ["t/{room}"]\ntags = { room = "hall" }', "tags.room"),
        ('topics = ["t/{sensor}"]\ndevice_tag = "sensor"', "device_tag"),
    ],
)
def test_topic_levels_that_cannot_become_tags(tmp_path: Path, body: str, reason: str) -> None:
    path, message = only_problem(mqtt_device(tmp_path, body))
    assert path == "devices.m.topics[0]"
    assert reason in message


def test_topic_levels_that_are_fine(tmp_path: Path) -> None:
    config = mqtt_device(tmp_path, 'topics = ["t/{device}", "u/{room}"]\ndevice_tag = "gw_device"')
    assert load_config(config, env={}).devices["m"]
    config = mqtt_device(tmp_path, 'topics = ["t/{device}"]\ndevice_tag = "dev"')
    assert load_config(config, env={}).devices["m"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ('tags_from_payload = { time = "meta.t" }', "reserved"),
        ('tags_from_payload = { device = "meta.d" }', "device_tag"),
        ('tags_from_payload = { room = "meta.r" }\ntags = { room = "hall" }', "tags.room"),
    ],
)
def test_payload_tags_that_cannot_become_tags(tmp_path: Path, body: str, reason: str) -> None:
    path, message = only_problem(mqtt_device(tmp_path, 'topics = ["t/+"]\n' + body))
    assert path.startswith("devices.m.tags_from_payload.")
    assert reason in message


def test_a_disabled_device_is_checked_too(tmp_path: Path) -> None:
    path, _ = only_problem(device(tmp_path, 'measurement = "_m"\nenabled = false'))
    assert path == "devices.b.measurement"


def test_an_empty_broker_name(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", base(tmp_path) + '[brokers.""]\nhost = "h"\n')
    assert only_problem(config) == ('brokers.""', "a broker name must not be empty")


# --- durations and sizes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "line"),
    [
        ("gateway", "shutdown_grace = 0"),
        ("gateway", 'restart_backoff_initial = "0ms"'),
        ("gateway", "restart_backoff_max = 0.0"),
        ("gateway", 'metrics_interval = "0s"'),
        ("gateway", "time_resolution = 0"),
        ("spool", "commit_interval = 0"),
        ("spool", "max_bytes = 0"),
        ("spool", 'max_bytes = "0MB"'),
        ("spool", 'max_age = "0d"'),
        ("sinks.local", "flush_interval = 0"),
        ("brokers.default", "reconnect_initial = 0"),
        ("brokers.default", "keepalive = 0"),
        ("gateway", "shutdown_grace = inf"),
        ("gateway", "shutdown_grace = nan"),
        ("gateway", 'shutdown_grace = "-1s"'),
        ("spool", 'max_bytes = "-1MB"'),
    ],
)
def test_zero_negative_and_infinite_durations_and_sizes(
    tmp_path: Path, section: str, line: str
) -> None:
    text = f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n'
    if section == "gateway":
        text += f"{line}\n"
    else:
        host = 'host = "h"\n' if section.startswith("brokers") else ""
        text += f"\n[{section}]\n{host}{line}\n"
    config = write(tmp_path / "gw.toml", text)
    path, message = only_problem(config)
    assert path == f"{section}.{line.split(' ')[0]}"
    assert "greater than 0" in message or "negative" in message or "finite" in message


def test_influx_durations_must_be_positive(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[sinks.influxdb]\nurl = "http://h:8086"\nbucket = "b"\nflush_interval = 0\n'
        + 'timeout = "0s"\nretry_max_interval = 0\nretry_after_max = 0\n',
    )
    assert sorted(p for p, _ in problems(config)) == [
        "sinks.influxdb.flush_interval",
        "sinks.influxdb.retry_after_max",
        "sinks.influxdb.retry_max_interval",
        "sinks.influxdb.timeout",
    ]


@pytest.mark.parametrize("line", ["max_frame_bytes = 0", 'stale_after = "0s"', "baudrate = 0"])
def test_serial_driver_options_must_be_positive(tmp_path: Path, line: str) -> None:
    path, message = only_problem(device(tmp_path, line))
    assert path == f"devices.b.{line.split(' ')[0]}"
    assert "greater than 0" in message


def test_mqtt_driver_payload_cap_must_be_positive(tmp_path: Path) -> None:
    path, _ = only_problem(mqtt_device(tmp_path, 'topics = ["t/+"]\nmax_payload_bytes = "0B"'))
    assert path == "devices.m.max_payload_bytes"


def test_zero_retention_still_means_keep_everything(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", base(tmp_path) + "[sinks.local]\nretention = 0\n")
    assert load_config(config, env={}).sinks.local.retention == 0


def test_backoff_bounds_in_order(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path).replace("\n\n", '\nrestart_backoff_initial = "2m"\n\n')
        + '[brokers.b]\nhost = "h"\nreconnect_initial = "1m"\nreconnect_max = "10s"\n',
    )
    assert sorted(p for p, _ in problems(config)) == [
        "brokers.b.reconnect_max",
        "gateway.restart_backoff_max",
    ]


def test_duration_and_size_parsing() -> None:
    assert parse_duration("1us") == pytest.approx(1e-6)
    assert parse_duration("250ns") == pytest.approx(2.5e-7)
    assert parse_duration(0) == 0.0  # zero is a value; options decide whether it means "off"
    for bad in (math.inf, math.nan, "-5s", -1, True, "5 sec"):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_duration(bad)
    assert parse_size("1KiB") == 1024
    for bad in (-1, "-1MB", 1.5, True):
        with pytest.raises(ValueError):  # noqa: PT011
            parse_size(bad)


# --- paths ------------------------------------------------------------------------------------


def test_state_dir_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = write(tmp_path / "a-file", "")
    for state_dir, reason in [
        (a_file, "is not a directory"),
        (a_file / "sub", "cannot be created"),
        ("", "must not be empty"),
    ]:
        config = write(tmp_path / "gw.toml", f'[gateway]\nstate_dir = "{state_dir}"\n')
        path, message = only_problem(config)
        assert path == "gateway.state_dir"
        assert reason in message
    # Not writable by this user (root writes anywhere, so ask os.access to say no).
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode)
    )
    for state_dir in (locked, locked / "new"):
        config = write(tmp_path / "gw.toml", f'[gateway]\nstate_dir = "{state_dir}"\n')
        path, message = only_problem(config)
        assert path == "gateway.state_dir"
        assert "not writable" in message
        assert "set gateway.state_dir" in message


def test_read_only_commands_skip_the_access_checks(tmp_path: Path) -> None:
    # query and status only read what a gateway wrote: another user may run them.
    a_file = write(tmp_path / "a-file", "")
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{a_file}"\n\n[sinks.influxdb]\nurl = "http://h:8086"\n'
        f'bucket = "b"\ntoken_file = "{tmp_path / "nope"}"\n',
    )
    assert len(problems(config)) == 2
    assert load_config(config, env={}, check_access=False).state_dir == a_file


def test_a_state_dir_that_can_be_created_is_fine(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", f'[gateway]\nstate_dir = "{tmp_path / "a" / "b"}"\n')
    assert load_config(config, env={}).state_dir == tmp_path / "a" / "b"
    assert not (tmp_path / "a").exists()  # checking creates nothing


def test_spool_and_store_paths(tmp_path: Path) -> None:
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path) + f'[spool]\npath = "{a_dir}"\n\n[sinks.local]\npath = "{a_dir}/x/y.db"\n',
    )
    # The store's directory does not exist yet but can be created: fine.
    assert problems(config) == [("spool.path", f'"{a_dir}" is a directory, not a file')]
    config = write(tmp_path / "gw.toml", base(tmp_path) + '[sinks.local]\npath = "/dev/null"\n')
    assert only_problem(config) == ("sinks.local.path", '"/dev/null" is not a regular file')


def test_every_path_option_expands_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for name in ("token", "password", "ca", "cert", "key"):
        write(home / name, "x")
    config = write(
        tmp_path / "gw.toml",
        """\
[gateway]
state_dir = "~/state"
[spool]
path = "~/spool/s.db"
[sinks.local]
enabled = true
path = "~/local/r.db"
[sinks.influxdb]
url = "http://h:8086"
bucket = "b"
token_file = "~/token"
[brokers.default]
host = "h"
password_file = "~/password"
ca_file = "~/ca"
cert_file = "~/cert"
key_file = "~/key"
""",
    )
    cfg = load_config(config, env={})
    assert cfg.state_dir == home / "state"
    assert cfg.spool_path == home / "spool" / "s.db"
    assert cfg.local_path == home / "local" / "r.db"
    assert cfg.influx is not None
    assert cfg.influx.token_file == str(home / "token")
    assert cfg.influx.resolved_token() == "x"
    broker = cfg.brokers["default"]
    assert (broker.password_file, broker.ca_file, broker.cert_file, broker.key_file) == tuple(
        str(home / n) for n in ("password", "ca", "cert", "key")
    )


def test_an_unknown_user_home_is_an_error(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", '[gateway]\nstate_dir = "~no-such-user-xyz/gw"\n')
    path, message = only_problem(config)
    assert path == "gateway.state_dir"
    assert "~no-such-user-xyz" in message


def test_a_nul_byte_in_a_path(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path}\\u0000x"\n\n'
        '[devices.b]\ndriver = "line"\nport = "/dev/tty\\u0000"\n',
    )
    assert sorted(p for p, _ in problems(config)) == ["devices.b.port", "gateway.state_dir"]


def test_secret_files_must_be_files(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + f'[sinks.influxdb]\nurl = "http://h:8086"\nbucket = "b"\ntoken_file = "{tmp_path}"\n',
    )
    assert only_problem(config) == (
        "sinks.influxdb.token_file",
        f'"{tmp_path}" is a directory, not a file',
    )


# --- secrets never echoed ----------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://user:{SECRET}@host",
        f"http://user:{SECRET}@host:8086",
        f"https://{SECRET}@host",
        f"{SECRET}@host:8086",
    ],
)
def test_a_url_with_credentials_is_not_echoed(tmp_path: Path, url: str) -> None:
    config = write(
        tmp_path / "gw.toml", base(tmp_path) + f'[sinks.influxdb]\nurl = "{url}"\nbucket = "b"\n'
    )
    path, message = only_problem(config)
    assert path == "sinks.influxdb.url"
    assert SECRET not in message


def test_env_values_are_never_echoed(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path)
        + '[brokers.default]\nhost = "h"\nport = "${PORT}"\n\n'
        + '[devices.m]\ndriver = "json"\ntopics = ["a/${TOPIC}"]\n',
    )
    found = problems(config, env={"PORT": SECRET, "TOPIC": f"#/{SECRET}"})
    assert sorted(p for p, _ in found) == ["brokers.default.port", "devices.m.topics[0]"]
    assert all(SECRET not in message for _, message in found), found


def test_a_broker_password_of_a_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        base(tmp_path) + '[brokers.default]\nhost = "h"\npassword = 987654321\n',
    )
    path, message = only_problem(config)
    assert path == "brokers.default.password"
    assert "987654321" not in message
