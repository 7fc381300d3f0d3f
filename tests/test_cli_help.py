"""What a newcomer reads first fits an 80-column terminal: ``--help`` of every command
(with a one-line description and an example), ``drivers``, and ``config``, whose output
also passes ``check-config``."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from gateway.cli import _parser, main
from gateway.cli.drivers import format_duration, format_size
from gateway.plugins import load_drivers

WIDTH = 80
# A single TOML string without blanks (a device path) cannot be broken.
UNBREAKABLE = re.compile(r'^[A-Za-z_][\w.]* = "[^" ]+"$')


def commands() -> list[str]:
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return sorted(action.choices)
    raise AssertionError("no subcommands")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": str(WIDTH), "PATH": "/usr/bin:/bin"},
        cwd=Path(__file__).resolve().parents[1],
    )


def assert_fits(text: str) -> None:
    long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not long, "\n".join(long)


@pytest.mark.parametrize("command", commands())
def test_every_command_help_has_a_description_and_an_example(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert_fits(out)
    description = out.partition("\n\n")[2].split("\n\n")[0]
    assert description, out
    assert not description.startswith(("options:", "positional")), out
    assert "\nexamples:\n" in out, f"give {command!r} an entry in gateway/cli/help.py HELP"
    examples = out.split("\nexamples:\n", 1)[1]
    assert f"  sensor-gateway {command}" in examples


def test_the_main_help_fits() -> None:
    result = cli("--help")
    assert result.returncode == 0
    assert_fits(result.stdout)


def test_options_that_had_no_help_have_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["query", "--help"])
    assert "json: one object per line" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["dead-letter", "--help"])
    assert "at most this many, newest (default 100)" in capsys.readouterr().out


# --- drivers -------------------------------------------------------------------------------


def test_drivers_is_a_short_list() -> None:
    result = cli("drivers")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["DRIVER", "KIND", "WHAT", "IT", "READS"]
    names = [line.split()[0] for line in lines[1 : 1 + len(load_drivers())]]
    assert names == sorted(load_drivers())
    assert "Options of one: sensor-gateway drivers NAME" in result.stdout
    assert "\n    port:" not in result.stdout  # details only with a name
    assert_fits(result.stdout)


@pytest.mark.parametrize("name", sorted(load_drivers()))
def test_one_driver_in_detail(name: str) -> None:
    result = cli("drivers", name)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith(f"{name} (")
    assert "Keys every device takes:" in out
    for key in ("measurement", "fields", "tags", "device_tag", "enabled"):
        assert f"\n    {key}: " in out
    assert "null" not in out
    assert_fits(out)


def test_sizes_and_durations_as_the_docs_write_them() -> None:
    out = cli("drivers", "json").stdout
    assert '    max_payload_bytes: size — default "256KiB"\n' in out
    assert "    select: list of string (optional) — not set\n" in out
    out = cli("drivers", "line").stdout
    assert '    max_frame_bytes: size — default "4KiB"\n' in out
    assert (format_size(256 * 1024), format_size(1000**2), format_size(1234)) == (
        "256KiB",
        "1MB",
        "1234B",
    )
    assert (format_duration(5), format_duration(0.2), format_duration(30 * 86400)) == (
        "5s",
        "200ms",
        "30d",
    )
    assert (format_duration(90), format_duration(1.5)) == ("90s", "1500ms")


def test_drivers_nope_lists_what_exists() -> None:
    result = cli("drivers", "jsno")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "sensor-gateway: no driver named 'jsno' (did you mean \"json\"?); "
        f"installed: {', '.join(sorted(load_drivers()))}"
    )


# --- config --------------------------------------------------------------------------------


def check(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """check-config on ``config_text``, with a state directory of the test's own."""
    path = tmp_path / "gateway.toml"
    path.write_text(config_text)
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "state.toml").write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    return cli("check-config", "-c", str(path))


@pytest.mark.parametrize("drivers", [[], *[[n] for n in sorted(load_drivers())], ["*"]])
def test_config_output_passes_check_config(drivers: list[str], tmp_path: Path) -> None:
    if drivers == ["*"]:
        drivers = sorted(load_drivers())
    args = [a for name in drivers for a in ("--driver", name)]
    result = cli("config", *args)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("# A sensor-gateway configuration written by:\n")
    command = " ".join(line.lstrip("# ") for line in text.splitlines()[1:4] if "--" in line)
    assert all(f"--driver {name}" in command for name in drivers), text
    long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert all(UNBREAKABLE.match(line) for line in long), long
    devices = tomllib.loads(text).get("devices", {})
    assert {t["driver"] for t in devices.values()} == set(drivers or ["line"])
    checked = check(text, tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert ": OK — " in checked.stdout
    # Only warnings that the example ports are not plugged in here.
    for line in checked.stderr.splitlines()[1:]:
        assert "does not exist now" in line, checked.stderr


def test_config_with_an_unknown_driver() -> None:
    result = cli("config", "--driver", "nope")
    assert result.returncode == 1
    assert "no driver named 'nope'; installed: " in result.stderr
    assert result.stdout == ""
