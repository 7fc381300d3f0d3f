"""``check-config`` lists every mistake in one pass, and warns about what is likely wrong.

Each mistake below is one the suite already tests alone (test_config.py,
test_config_hostile.py); here they are all in one file, including the pairs that used
to hide each other (an invalid option beside an unknown broker, an unknown key beside a
missing token file, several bad topic patterns), and ``check-config`` runs as a real
process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from gateway_proc import GatewayProcess

from gateway.cli.configcheck import check_config

SECRET = "inl1ne-s3cret"


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def run_check(config: Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "MISSING_VAR"},
    )
    return proc.returncode, proc.stdout, proc.stderr


EVERY_MISTAKE = """\
[gateway]
state_dir = "{tmp}/a-file"
shutdown_grace = "10 sec"
restart_backoff_initial = "2m"

[spool]
commit_interval = 0

[brokers.home]
host = "localhost"
reconnect_initial = "1m"
reconnect_max = "10s"

[brokers.""]
host = "h"

[sinks.influxdb]
url = "http://user:pw@influx:8086"
bucket = "b"
bogus = 1
token_file = "{tmp}/no-such-token"

[devices.boiler]
driver = "line"
port = "/dev/null"
baudrate = "96OO"
stopbit = 1
fields.t = {{ unit = "degFF", to_unit = "degC" }}

[devices.rooms]
driver = "jsn"
topics = ["a/b"]
measurement = "_rooms"

[devices.hall]
driver = "json"
broker = "hom"
qos = 5
topics = ["a/{{x", "b/#/c", "ok/+", "c+/d"]

[devices.cellar]
driver = "json"
broker = "home"
topics = ["cellar/${{MISSING_VAR}}"]

[devices.""]
driver = "line"
port = "/dev/null"
"""


def test_every_mistake_in_one_pass(tmp_path: Path) -> None:
    write(tmp_path / "a-file", "")
    config = write(tmp_path / "gw.toml", EVERY_MISTAKE.format(tmp=tmp_path))
    code, _, err = run_check(config)
    assert code == 2, err
    assert "Traceback" not in err
    expected = [
        "gateway.state_dir: ",
        "gateway.shutdown_grace: ",
        "gateway.restart_backoff_max: ",
        "spool.commit_interval: ",
        "brokers.home.reconnect_max: ",
        'brokers."": a broker name must not be empty',
        "sinks.influxdb.url: put credentials in token / username / password",
        "sinks.influxdb.bogus: unknown key",
        f'sinks.influxdb.token_file: "{tmp_path}/no-such-token" does not exist',
        'devices.boiler.baudrate: expected an integer, got "96OO"',
        'devices.boiler.stopbit: unknown key for a "line" device (did you mean "stopbits"?)',
        "devices.rooms.measurement: ",
        'devices.boiler.fields.t.unit: unknown unit "degFF"',
        'devices.rooms.driver: unknown driver "jsn"',
        'devices.hall.broker: no broker "hom" is configured (did you mean "home"?)',
        "devices.hall.qos: expected one of 0, 1 or 2, got 5",
        'devices.hall.topics[0]: named segment "{x"',
        'devices.hall.topics[1]: "#" must be the last level',
        "devices.hall.topics[3]: wildcards must fill a whole level",
        "devices.cellar.topics[0]: environment variable MISSING_VAR is not set",
        'devices."": a device name must not be empty',
    ]
    missing = [text for text in expected if text not in err]
    assert not missing, err
    assert "topics[2]" not in err  # "ok/+" is fine
    assert "user:pw" not in err
    assert f"{len(expected)} problem(s)" in err.splitlines()[0], err


def test_the_phases_that_used_to_hide_each_other(tmp_path: Path) -> None:
    """Each pair: the second mistake used to appear only once the first was fixed."""
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n[brokers.home]\nhost = "h"\n\n'
        '[devices.hall]\ndriver = "json"\nbroker = "hom"\nqos = 5\ntopics = ["t/+"]\n\n'
        '[sinks.influxdb]\nurl = "http://h:8086"\nbucket = "b"\nbogus = 1\n'
        f'token_file = "{tmp_path / "none"}"\n',
    )
    result = check_config(config)
    assert sorted(p for p, _ in result.errors) == [
        "devices.hall.broker",
        "devices.hall.qos",
        "sinks.influxdb.bogus",
        "sinks.influxdb.token_file",
    ]


def test_storage_is_checked_beside_other_mistakes_in_its_section(tmp_path: Path) -> None:
    write(tmp_path / "a-file", "")
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "a-file"}"\nbogus = 1\n',
    )
    assert sorted(p for p, _ in check_config(config).errors) == [
        "gateway.bogus",
        "gateway.state_dir",
    ]


# --- warnings --------------------------------------------------------------------------------


def test_warnings_do_not_fail_the_check(tmp_path: Path) -> None:
    token = write(tmp_path / "influx.token", "tok\n", 0o644)
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n'
        '[devices.boiler]\ndriver = "line"\nport = "/dev/serial/by-id/usb-not-plugged-in"\n\n'
        '[sinks.influxdb]\nurl = "http://h:8086"\napi = "v1"\ndatabase = "d"\n'
        f'token_file = "{token}"\n',
    )
    code, out, err = run_check(config)
    assert code == 0, err
    assert ": OK — " in out
    assert "3 warning(s):" in err, err
    assert (
        'devices.boiler.port: "/dev/serial/by-id/usb-not-plugged-in" does not exist now; '
        "fine if the device is plugged in later"
    ) in err
    assert 'sinks.influxdb.token_file: with api = "v1" this is sent as' in err
    assert f"every user of this host can read it; fix: chmod o-rwx {token}" in err


def test_a_token_has_no_effect_beside_a_v1_username(tmp_path: Path) -> None:
    token = write(tmp_path / "t", "tok\n")
    pw = write(tmp_path / "p", "pw\n", 0o640)  # group-readable is a deliberate choice
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n'
        '[sinks.influxdb]\nurl = "http://h:8086"\napi = "v1"\ndatabase = "d"\n'
        f'username = "u"\npassword_file = "{pw}"\ntoken_file = "{token}"\n',
    )
    assert check_config(config).warnings == [
        (
            "sinks.influxdb.token_file",
            'has no effect: with api = "v1" and a username the gateway signs in with '
            "password / password_file",
        )
    ]


def test_v1_options_with_api_v2_have_no_effect(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n'
        '[sinks.influxdb]\nurl = "http://h:8086"\nbucket = "b"\ndatabase = "d"\n',
    )
    [(path, message)] = check_config(config).warnings
    assert path == "sinks.influxdb.database"
    assert message.startswith('has no effect with api = "v2"')


def test_an_inline_secret_in_a_world_readable_file(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n'
        f'[brokers.default]\nhost = "h"\nusername = "u"\npassword = "{SECRET}"\n',
        0o644,
    )
    code, out, err = run_check(config)
    assert code == 0, err
    assert f'brokers.default.password: a secret written inline in "{config}"' in err
    assert f"fix: chmod o-rwx {config}" in err
    assert SECRET not in out + err
    config.chmod(0o640)
    assert check_config(config).warnings == []


def test_warnings_are_shown_beside_errors(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\nbogus = 1\n\n'
        '[devices.boiler]\ndriver = "line"\nport = "/dev/ttyNOPE9"\n',
    )
    code, _, err = run_check(config)
    assert code == 2
    assert "1 problem(s):\n  gateway.bogus: unknown key" in err
    assert "1 warning(s):\n  devices.boiler.port: " in err


def test_no_warnings_for_a_port_that_exists_or_a_disabled_device(tmp_path: Path) -> None:
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n'
        '[devices.a]\ndriver = "line"\nport = "/dev/null"\n\n'
        '[devices.b]\ndriver = "line"\nport = "/dev/ttyNOPE9"\nenabled = false\n',
    )
    assert check_config(config).warnings == []


@pytest.mark.integration
def test_run_logs_the_warnings_at_start(tmp_path: Path) -> None:
    gw = GatewayProcess(
        tmp_path,
        {"devices": {"boiler": {"driver": "line", "port": str(tmp_path / "ttyNOPE")}}},
    )
    gw.start()
    try:
        gw.wait_for_log("configuration warning")
        [event] = [e for e in gw.log_events() if e.get("event") == "configuration warning"]
        assert event["option"] == "devices.boiler.port"
        assert "does not exist now" in event["warning"]
        assert event["level"] == "warning"
    finally:
        assert gw.stop() == 0


def test_local_store_options_while_it_is_off_by_default(tmp_path: Path) -> None:
    token = write(tmp_path / "t", "tok\n")
    influx = f'[sinks.influxdb]\nurl = "http://h:8086"\nbucket = "b"\ntoken_file = "{token}"\n'
    config = write(
        tmp_path / "gw.toml",
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n{influx}\n[sinks.local]\nretention = "7d"\n',
    )
    [(path, message)] = check_config(config).warnings
    assert path == "sinks.local.retention"
    assert "set sinks.local.enabled = true to keep both" in message
    config.write_text(config.read_text() + "enabled = true\n")
    assert check_config(config).warnings == []
