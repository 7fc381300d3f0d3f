"""Configuration files: drop-ins, ${ENV}, secrets from files, every mistake with its path,
and every sample configuration shipped (config/, devices/*/sample.toml) passing
``check-config``."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.plugins import load_drivers

REPO = Path(__file__).parents[1]
SAMPLE_CONFIGS = sorted((REPO / "config").glob("*.toml"))
DROPIN_EXAMPLES = sorted((REPO / "config").glob("conf.d*/*.toml"))
DEVICE_SAMPLES = sorted((REPO / "devices").glob("*/sample.toml"))
SECRET = "s3cr3t-T0KEN-value"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems(path: Path, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=env or {})
    return caught.value.problems


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["check-config", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def only_port_warnings(err: str) -> bool:
    """True if ``err`` holds nothing but warnings that a serial port is not plugged in.

    The samples name ports like /dev/serial/by-id/usb-… that a test machine lacks.
    """
    lines = err.splitlines()
    return all(
        line.endswith(" warning(s):") or (".port: " in line and "does not exist now" in line)
        for line in lines
    )


MAIN = """\
[gateway]
state_dir = "{state}"

[devices.boiler]
driver = "line"
port = "/dev/ttyUSB0"
baudrate = 9600
measurement = "boiler"
"""


# --- drop-ins -----------------------------------------------------------------------------


def test_dropins_merge_in_name_order(tmp_path: Path) -> None:
    main_file = write(tmp_path / "gateway.toml", MAIN.format(state=tmp_path / "state"))
    write(
        tmp_path / "conf.d" / "20-later.toml",
        '[devices.boiler]\nbaudrate = 38400\n\n[devices.attic]\ndriver = "line"\n'
        'port = "/dev/ttyUSB1"\n',
    )
    write(
        tmp_path / "conf.d" / "10-earlier.toml",
        '[devices.boiler]\nbaudrate = 19200\ntags = { site = "home" }\n',
    )
    write(tmp_path / "conf.d" / "README", "not toml, not read")
    config = load_config(main_file, env={})
    boiler = config.devices["boiler"]
    # Tables merge key by key; the later file wins; the main file's keys stay.
    assert boiler.options.baudrate == 38400  # type: ignore[attr-defined]
    assert boiler.section.tags == {"site": "home"}
    assert boiler.section.measurement == "boiler"
    assert list(config.devices) == ["boiler", "attic"]
    assert config.sources == (
        main_file,
        tmp_path / "conf.d" / "10-earlier.toml",
        tmp_path / "conf.d" / "20-later.toml",
    )


def test_a_mistake_in_a_dropin_has_its_path(tmp_path: Path) -> None:
    main_file = write(tmp_path / "gateway.toml", MAIN.format(state=tmp_path / "state"))
    write(tmp_path / "conf.d" / "boiler.toml", '[devices.boiler]\nbaudrate = "fast"\n')
    assert problems(main_file) == [("devices.boiler.baudrate", 'expected an integer, got "fast"')]


def test_a_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    main_file = write(tmp_path / "gateway.toml", MAIN.format(state=tmp_path / "state"))
    broken = write(tmp_path / "conf.d" / "broken.toml", "[devices.x\n")
    [(path, message)] = problems(main_file)
    assert path == ""
    assert message.startswith(f"{broken}: TOML syntax error")


# --- ${ENV} ---------------------------------------------------------------------------------


def test_env_interpolation(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gateway.toml",
        """\
[gateway]
state_dir = "${STATE}/gw"

[sinks.influxdb]
url = "http://${INFLUX_HOST}:8086"
bucket = "sensors-$${literal}"
token = "${INFLUX_TOKEN}"
""",
    )
    env = {"STATE": str(tmp_path), "INFLUX_HOST": "db.local", "INFLUX_TOKEN": SECRET}
    config = load_config(path, env=env)
    assert config.state_dir == tmp_path / "gw"
    assert config.influx is not None
    assert config.influx.url == "http://db.local:8086"
    assert config.influx.bucket == "sensors-${literal}"
    assert config.influx.resolved_token() == SECRET
    assert SECRET not in repr(config)


def test_a_missing_env_var_is_an_error_at_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gateway.toml",
        f'[gateway]\nstate_dir = "{tmp_path}"\n\n'
        '[sinks.influxdb]\nurl = "http://${INFLUX_HOST}:8086"\nbucket = "b"\n'
        'token = "${INFLUX_TOKEN}"\n',
    )
    assert problems(path, env={"INFLUX_HOST": "db"}) == [
        ("sinks.influxdb.token", "environment variable INFLUX_TOKEN is not set")
    ]
    assert len(problems(path)) == 2  # every missing variable, not the first only


# --- secrets from files ------------------------------------------------------------------------


def influx_with(tmp_path: Path, line: str) -> Path:
    return write(
        tmp_path / "gateway.toml",
        f'[gateway]\nstate_dir = "{tmp_path}"\n\n'
        f'[sinks.influxdb]\nurl = "http://127.0.0.1:8086"\nbucket = "b"\n{line}\n',
    )


def test_token_file_is_read(tmp_path: Path) -> None:
    token_file = write(tmp_path / "influx.token", f"  {SECRET}\n")
    config = load_config(influx_with(tmp_path, f'token_file = "{token_file}"'), env={})
    assert config.influx is not None
    assert config.influx.resolved_token() == SECRET
    assert SECRET not in repr(config)


def test_token_file_problems(tmp_path: Path) -> None:
    missing = tmp_path / "nope.token"
    assert problems(influx_with(tmp_path, f'token_file = "{missing}"')) == [
        ("sinks.influxdb.token_file", f'"{missing}" does not exist')
    ]
    token_file = write(tmp_path / "influx.token", SECRET)
    [(path, message)] = problems(
        influx_with(tmp_path, f'token = "{SECRET}"\ntoken_file = "{token_file}"')
    )
    assert path == "sinks.influxdb"
    assert 'give either "token" or "token_file", not both' in message
    assert SECRET not in message


@pytest.mark.parametrize("value", ["123456789", "true", "[1, 2]"])
def test_a_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path, value: str) -> None:
    [(path, message)] = problems(influx_with(tmp_path, f"token = {value}"))
    assert path == "sinks.influxdb.token"
    assert message.startswith("expected a string, got ")
    assert value not in message
    assert "secret" in message


# --- every mistake at once -----------------------------------------------------------------------


def test_every_mistake_is_reported_with_its_path(tmp_path: Path) -> None:
    path = write(
        tmp_path / "gateway.toml",
        """\
[gateway]
shutdown_grace = "10 sec"

[devices.boiler]
driver = "line"
port = "/dev/ttyUSB0"
baudrate = "96OO"
stopbit = 1
fields.t = { unit = "degFF", to_unit = "degC" }

[devices.rooms]
driver = "jsn"
topics = ["a/b"]

[devices.hall]
driver = "json"
broker = "main"
topics = ["house/{room}/state"]
""".replace("[gateway]\n", f'[gateway]\nstate_dir = "{tmp_path}"\n'),
    )
    found = dict(problems(path))
    assert found.pop("gateway.shutdown_grace") == (
        'expected a duration like "200ms", "5s", "10m", "2h" or "30d", got "10 sec"'
    )
    assert found.pop("devices.boiler.baudrate") == 'expected an integer, got "96OO"'
    assert found.pop("devices.boiler.stopbit") == (
        'unknown key for a "line" device (did you mean "stopbits"?)'
    )
    assert found.pop("devices.boiler.fields.t.unit").startswith(
        'unknown unit "degFF" (did you mean "degF" or "degC"?)'
    )
    installed = ", ".join(sorted(load_drivers()))  # json, line and any plugin
    assert found.pop("devices.rooms.driver") == (
        f'unknown driver "jsn" (did you mean "json"?) (installed: {installed})'
    )
    # Reported although another section is invalid too.
    assert found.pop("devices.hall.broker") == (
        'no broker "main" is configured; add a [brokers.main] table with its host'
    )
    assert found == {}


# --- the shipped samples pass check-config ------------------------------------------------------


def _missing_files(data: Any) -> Iterator[str]:
    """Paths given as ``*_file`` options that do not exist on this machine."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key.endswith("_file") and isinstance(value, str) and not Path(value).exists():
                yield value
            else:
                yield from _missing_files(value)


def _here(sample: Path, into: Path) -> Path:
    """A copy of ``sample`` whose ``*_file`` secrets point at files that exist.

    The samples name files like /etc/sensor-gateway/influx.token that a test machine
    does not have, and keep their data in /var/lib/sensor-gateway, which only root may
    create: a drop-in beside the copy gives it a state directory of its own. Everything
    else is checked as shipped.
    """
    text = sample.read_text()
    for n, missing in enumerate(_missing_files(tomllib.loads(text))):
        stand_in = write(into / f"secret-{n}", "stand-in secret\n")
        stand_in.chmod(0o600)  # a secret only its owner reads: no check-config warning
        text = text.replace(f'"{missing}"', f'"{stand_in}"')
    write(into / "conf.d" / "00-state-dir.toml", f'[gateway]\nstate_dir = "{into / "state"}"\n')
    return write(into / sample.name, text)


@pytest.mark.parametrize("sample", SAMPLE_CONFIGS, ids=lambda p: p.name)
def test_sample_config_passes_check_config(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = check_config(sample, capsys)
    if code != 0:  # only files this machine lacks, or a state_dir only root may create
        lines = err.splitlines()[1:]
        assert lines
        assert all(
            ("_file: " in line and "does not exist" in line)
            or line.startswith("  gateway.state_dir: ")
            or line.endswith(" warning(s):")
            or "does not exist now" in line
            for line in lines
        ), err
    code, out, err = check_config(_here(sample, tmp_path), capsys)
    assert code == 0, err
    assert only_port_warnings(err), err
    assert ": OK — " in out


@pytest.mark.parametrize("dropin", DROPIN_EXAMPLES, ids=lambda p: p.name)
def test_dropin_example_merges_with_the_main_example(
    dropin: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main_example = REPO / "config" / "gateway.example.toml"
    main_file = _here(main_example, tmp_path)
    write(tmp_path / "conf.d" / dropin.name, dropin.read_text())
    code, out, err = check_config(main_file, capsys)
    assert code == 0, err
    assert only_port_warnings(err), err
    for name in tomllib.loads(dropin.read_text()).get("devices", {}):
        assert f"  {name}: " in out


@pytest.mark.parametrize("sample", DEVICE_SAMPLES, ids=lambda p: p.parent.name)
def test_driver_sample_passes_check_config(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A driver's sample holds device tables only; the main file gives the rest.
    main_file = write(
        tmp_path / "gateway.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n\n[brokers.default]\nhost = "127.0.0.1"\n',
    )
    write(tmp_path / "conf.d" / "sample.toml", sample.read_text())
    code, out, err = check_config(main_file, capsys)
    assert code == 0, err
    assert only_port_warnings(err), err
    devices = tomllib.loads(sample.read_text())["devices"]
    assert devices
    for name, table in devices.items():
        assert f"  {name}: {table['driver']}\n" in out


def test_the_sample_configs_exist() -> None:
    assert SAMPLE_CONFIGS
    assert DROPIN_EXAMPLES
