"""The ``sensor-gateway`` command: version, help, check-config, drivers, query, status,
dead-letter. Mostly in-process through ``gateway.cli.main``; the entry points themselves
(the console script and ``python -m gateway``) as subprocesses."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from gateway_proc import to_toml
from servers import SerialPty

from gateway import __version__
from gateway.app import Gateway
from gateway.cli import _parser, main
from gateway.config import load_config
from gateway.plugins import load_drivers

SECRET = "s3cr3t-T0KEN-value"
BIN = Path(sys.executable).parent


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def subcommands() -> list[str]:
    parser = _parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("no subcommands")


# --- version and help -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[str(BIN / "sensor-gateway")], [sys.executable, "-m", "gateway"]],
    ids=["console-script", "python-m-gateway"],
)
def test_version(command: list[str]) -> None:
    result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"sensor-gateway {__version__}\n",
        "",
    )


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sensor-gateway")
    commands = subcommands()
    assert {"run", "check-config", "drivers", "query", "status", "dead-letter", "demo"} <= set(
        commands
    )
    for command in commands:
        assert re.search(rf"^    {command}\s", out, re.MULTILINE), command


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([], capsys)
    assert code == 2
    assert out.startswith("usage: sensor-gateway")


@pytest.mark.parametrize("command", subcommands())
def test_command_help(
    command: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUX_TOKEN", SECRET)
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: sensor-gateway {command}")
    assert SECRET not in out


# --- check-config ------------------------------------------------------------------------------


BAD_CONFIG = """\
[gateway]
state_dir = "{state_dir}"
shutdown_grace = "10 sec"

[sinks.influxdb]
url = "http://127.0.0.1:8086"
bucket = "sensors"
token_file = "{token_file}"

[devices.boiler]
driver = "line"
port = "/dev/null"
baudrate = "96OO"
stopbit = 1
fields.t = {{ unit = "degFF", to_unit = "degC" }}

[devices.rooms]
driver = "jsn"
topics = ["a/b"]

[devices.hall]
driver = "json"
broker = "main"
topics = ["house/{{room}}/state"]
"""


def test_check_config_prints_every_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "influx.token"
    token_file.write_text(SECRET)
    token_file.chmod(0o600)
    path = tmp_path / "gateway.toml"
    path.write_text(BAD_CONFIG.format(token_file=token_file, state_dir=tmp_path))
    code, out, err = run(["check-config", "-c", str(path)], capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == f"{path}: 6 problem(s):"
    assert sorted(lines[1:]) == sorted(
        [
            '  gateway.shutdown_grace: expected a duration like "200ms", "5s", "10m", "2h" '
            'or "30d", got "10 sec"',
            '  devices.boiler.baudrate: expected an integer, got "96OO"',
            '  devices.boiler.stopbit: unknown key for a "line" device (did you mean "stopbits"?)',
            next(line for line in lines if line.startswith("  devices.boiler.fields.t.unit: ")),
            '  devices.rooms.driver: unknown driver "jsn" (did you mean "json"?) '
            f"(installed: {', '.join(sorted(load_drivers()))})",
            '  devices.hall.broker: no broker "main" is configured; add a [brokers.main] table '
            "with its host",
        ]
    )
    assert 'unknown unit "degFF" (did you mean "degF" or "degC"?)' in err
    assert SECRET not in out + err


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "influx.token"
    token_file.write_text(SECRET)
    token_file.chmod(0o600)
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""\
[gateway]
state_dir = "{tmp_path}"

[sinks.influxdb]
url = "http://127.0.0.1:8086"
bucket = "sensors"
token_file = "{token_file}"

[brokers.default]
host = "127.0.0.1"

[devices.boiler]
driver = "line"
port = "/dev/null"

[devices.hall]
driver = "json"
topics = ["house/{{room}}/state"]
enabled = false
"""
    )
    code, out, err = run(["check-config", "-c", str(path)], capsys)
    assert (code, err) == (0, "")
    assert out == (
        f"{path}: OK — 1 device(s) enabled, 1 broker(s), sinks: influxdb (v2, "
        f"http://127.0.0.1:8086); spool {tmp_path}/spool.db\n"
        "  boiler: line\n"
        "  hall: json (disabled)\n"
    )
    assert SECRET not in out


def test_check_config_never_prints_an_env_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INFLUX_TOKEN", SECRET)
    path = tmp_path / "gateway.toml"
    base = (
        f'[gateway]\nstate_dir = "{tmp_path}"\n\n'
        '[sinks.influxdb]\nurl = "http://127.0.0.1:8086"\nbucket = "b"\ntoken = "${INFLUX_TOKEN}"\n'
    )
    path.write_text(base)
    code, out, err = run(["check-config", "-c", str(path)], capsys)
    assert code == 0
    assert SECRET not in out + err
    path.write_text(base + 'tokn = "${INFLUX_TOKEN}"\n')
    code, out, err = run(["check-config", "-c", str(path)], capsys)
    assert code == 2
    assert 'sinks.influxdb.tokn: unknown key (did you mean "token"?)' in err
    assert SECRET not in out + err


def test_check_config_without_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    code, _, err = run(["check-config", "-c", str(missing)], capsys)
    assert code == 2
    assert f"configuration file {missing} not found" in err


# --- drivers ---------------------------------------------------------------------------------


def test_drivers_lists_the_built_ins_with_their_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(["drivers"], capsys)
    assert code == 0
    # The name column is as wide as the longest driver name.
    assert re.search(r"\nline +serial  text lines on a serial port", out)
    assert re.search(r"\njson +mqtt    JSON payloads over MQTT", out)
    code, out, _ = run(["drivers", "line"], capsys)
    assert out.startswith("line (serial, from sensor-gateway)\n")
    assert "    port: string — required\n" in out
    assert "    baudrate: integer — default 9600\n" in out
    assert '    format: "kv" | "json" | "csv" | "regex" — default "kv"\n' in out
    code, out, _ = run(["drivers", "json"], capsys)
    assert "    topics: list of string — required\n" in out
    assert '    max_payload_bytes: size — default "256KiB"\n' in out


def test_drivers_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["drivers", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    drivers = {d["name"]: d for d in doc["drivers"]}
    assert {"line", "json"} <= set(drivers)
    line, js = drivers["line"], drivers["json"]
    assert (line["kind"], line["package"], js["kind"], js["package"]) == (
        "serial",
        "sensor-gateway",
        "mqtt",
        "sensor-gateway",
    )
    line_options = {o["name"]: o for o in line["options"]}
    port = line_options["port"]
    assert (port["type"], port["required"], port["default"]) == ("string", True, None)
    assert line_options["stale_after"]["type"] == "duration (optional)"
    assert line_options["columns"]["help"]
    json_options = {o["name"]: o for o in js["options"]}
    assert {"broker", "topics", "qos", "max_payload_bytes", "select", "time_field"} <= set(
        json_options
    )
    assert json_options["qos"]["default"] == 1


def test_drivers_one_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["drivers", "line"], capsys)
    assert code == 0
    assert out.startswith("line (serial")
    assert "json (mqtt" not in out
    code, _, err = run(["drivers", "nosuch"], capsys)
    assert code == 1
    assert "no driver named 'nosuch'; installed: " in err


# --- query, status and dead-letter against a store filled by a short run -------------------------


@dataclass(frozen=True)
class Store:
    config: Path
    base_ms: int
    """The device time of the first reading, epoch ms."""


LINES = 5


def _fill(config_path: Path, pty: SerialPty, base_ms: int) -> None:
    async def go() -> None:
        gateway = Gateway(load_config(config_path, env={}))
        ready = asyncio.Event()
        task = asyncio.create_task(gateway.run(ready=ready.set))
        await ready.wait()
        devices = gateway.pipeline.devices
        async with asyncio.timeout(10):
            while any(d.stats.state != "running" for d in devices.values()):
                await asyncio.sleep(0.01)
            for i in range(LINES):
                ts = base_ms + i * 1000
                os.write(
                    pty.master_fd, f"seq={i} t={20 + i / 4} door={i % 2 == 0} ts={ts}\n".encode()
                )
            while sum(loop.stats.points_written for loop in gateway.loops) < LINES:
                await asyncio.sleep(0.01)
        gateway.stop()
        await task

    asyncio.run(go())


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    tmp = tmp_path_factory.mktemp("cli-store")
    with SerialPty() as pty:
        config = tmp / "gateway.toml"
        config.write_text(
            to_toml(
                {
                    "gateway": {"state_dir": str(tmp / "state"), "clock_sync_check": False},
                    "spool": {"commit_interval": "20ms"},
                    "sinks": {"local": {"flush_interval": "20ms"}},
                    "devices": {
                        "boiler": {
                            "driver": "line",
                            "port": pty.path,
                            "time_field": "ts",
                            "measurement": "heating",
                            "tags": {"site": "home"},
                            "fields": {
                                "seq": {"type": "int"},
                                "t": {"name": "temperature", "round": 2},
                            },
                        }
                    },
                }
            )
        )
        base_ms = (time.time_ns() // 1_000_000_000 - 60) * 1000
        _fill(config, pty, base_ms)
    return Store(config, base_ms)


def _rfc3339(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{ms % 1000 * 1_000_000:09d}Z"
    )


def answered_local(store: Store) -> str:
    return f"the local store {store.config.parent / 'state' / 'readings.db'}"


def test_query_json(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """One JSON object per reading: time, measurement, device, tags, then fields."""
    code, out, _ = run(["query", "-c", str(store.config), "-o", "json"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [
        {
            "time": _rfc3339(store.base_ms + i * 1000),
            "measurement": "heating",
            "device": "boiler",
            "site": "home",
            "door": i % 2 == 0,
            "seq": i,
            "temperature": 20 + i / 4,
        }
        for i in range(LINES)
    ]
    assert [type(v) for v in rows[0].values()][4:] == [bool, int, float]
    assert list(rows[0]) == ["time", "measurement", "device", "site", "door", "seq", "temperature"]


def test_query_csv(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["query", "-c", str(store.config), "-o", "csv", "-f", "seq"], capsys)
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["time", "measurement", "device", "site", "seq"]
    assert rows[1:] == [
        [_rfc3339(store.base_ms + i * 1000), "heating", "boiler", "home", str(i)]
        for i in range(LINES)
    ]


def test_query_table(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["query", "-c", str(store.config), "-d", "boiler"], capsys)
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == ["time", "measurement", "device", "site", "door", "seq", "temperature"]
    assert [line.split()[1:] for line in lines] == [
        ["heating", "boiler", "home", str(i % 2 == 0).lower(), str(i), repr(20 + i / 4)]
        for i in range(LINES)
    ]


def test_query_filters(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["query", "-c", str(store.config), "-o", "json"]
    code, out, _ = run([*args, "--latest"], capsys)
    assert code == 0
    (latest,) = map(json.loads, out.splitlines())
    assert (latest["door"], latest["seq"], latest["temperature"]) == (
        True,
        LINES - 1,
        20 + (LINES - 1) / 4,
    )
    code, out, _ = run([*args, "-n", "2"], capsys)  # two readings, each with 3 fields
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [LINES - 2, LINES - 1]
    since = str(store.base_ms // 1000 + 3)  # epoch seconds
    code, out, _ = run([*args, "-f", "seq", "--since", since], capsys)
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(3, LINES))
    code, out, err = run([*args, "-d", "nosuch"], capsys)
    assert (code, out) == (0, "")
    code, out, err = run([*args[:-2], "-d", "nosuch"], capsys)
    assert (code, out) == (0, "")
    assert err == (
        f"sensor-gateway: answered by {answered_local(store)}\nsensor-gateway: no readings match\n"
    )


def test_query_list(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["query", "-c", str(store.config), "--list"], capsys)
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split() == ["measurement", "device", "field", "count", "first", "last"]
    assert [line.split()[:4] for line in lines] == [
        ["heating", "boiler", name, str(LINES)] for name in ("door", "seq", "temperature")
    ]


def test_query_without_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n')
    code, _, err = run(["query", "-c", str(config)], capsys)
    assert code == 1
    assert f"no local store at {tmp_path}/readings.db" in err
    code, _, err = run(["query", "-c", str(config), "--since", "yesterday"], capsys)
    assert code == 2
    assert 'sensor-gateway: --since: invalid time "yesterday"' in err


def test_status_after_a_run(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    """Not running: said plainly, with only the spool figures of the last status."""
    code, out, _ = run(["status", "-c", str(store.config)], capsys)
    assert code == 1  # not running
    lines = out.splitlines()
    assert lines[0].startswith("sensor-gateway is not running (nothing listens on ")
    assert lines[1].startswith("last known spool (")
    assert "boiler" not in out
    code, out, _ = run(["status", "-c", str(store.config), "--json"], capsys)
    doc = json.loads(out)
    assert doc["running"] is False
    assert doc["last_spool"]["behind"] == {"local": 0}
    code, again, _ = run(["status", "-c", str(store.config), "--format", "json"], capsys)
    assert json.loads(again)["last_spool"] == doc["last_spool"]


def test_status_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n')
    code, out, _ = run(["status", "-c", str(config)], capsys)
    assert code == 1
    assert out.splitlines() == [
        f"sensor-gateway is not running (nothing listens on {tmp_path}/status.sock)",
        f"no earlier status at {tmp_path}/status.json: has the gateway run with this config?",
    ]


def test_dead_letter_on_an_empty_spool(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["dead-letter", "-c", str(store.config)], capsys)
    assert (code, out, err) == (0, "no dead-lettered points\n", "")
    code, out, err = run(["dead-letter", "-c", str(store.config), "--export", "-"], capsys)
    assert (code, out) == (0, "")


def test_dead_letter_without_a_spool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n')
    code, _, err = run(["dead-letter", "-c", str(config)], capsys)
    assert code == 1
    assert f"no spool at {tmp_path}/spool.db" in err


def test_query_relative_times_as_separate_arguments(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--since -1d`` (as the README writes it) must not be taken for an option."""
    args = ["query", "-c", str(store.config), "-o", "json", "-f", "seq", "-n", "100000"]
    code, out, err = run([*args, "--since", "-1d"], capsys)
    assert (code, err) == (0, f"sensor-gateway: answered by {answered_local(store)}\n")
    assert len(out.splitlines()) == LINES
    code, out, err = run([*args, "--until", "-1d"], capsys)
    assert (code, out) == (0, "")


def test_dead_letter_lists_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.delivery.spool import Spool

    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n')
    rejected = [
        (
            'm,device=a x="a" 1',
            'partial write: field type conflict: input field "x" is type string',
        ),
        ("m,device=a y=1 2", "unable to parse"),
    ]

    async def fill() -> None:
        spool = Spool(tmp_path / "spool.db", ["influxdb"])
        await spool.open()
        await spool.dead_letter("influxdb", rejected)
        await spool.close()

    asyncio.run(fill())
    code, out, err = run(["dead-letter", "-c", str(config)], capsys)
    assert (code, err) == (0, "")
    assert "2 dead-lettered point(s); newest 2:" in out
    assert "[influxdb] partial write: field type conflict" in out
    assert "m,device=a y=1 2" in out
    export = tmp_path / "points.lp"
    code, out, err = run(["dead-letter", "-c", str(config), "--export", str(export)], capsys)
    assert code == 0
    assert export.read_text() == "".join(f"{line}\n" for line, _ in rejected)
    assert err == f"wrote 2 line(s) to {export}\n"
