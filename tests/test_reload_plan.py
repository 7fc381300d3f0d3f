"""The reload plan: which devices, brokers and sinks a configuration change touches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.config import Config, config_from_dict
from gateway.service.reload import plan


def _config(tmp_path: Path, **sections: Any) -> Config:
    data: dict[str, Any] = {
        "gateway": {"state_dir": str(tmp_path / "state")},
        "brokers": {"home": {"host": "127.0.0.1"}},
        "devices": {
            "serial1": {"driver": "line", "port": "/dev/ttyUSB0"},
            "serial2": {"driver": "line", "port": "/dev/ttyUSB1"},
            "mq1": {"driver": "json", "broker": "home", "topics": ["a/+"]},
        },
    }
    for key, value in sections.items():
        data[key] = value
    return config_from_dict(data)


def test_nothing_changed(tmp_path: Path) -> None:
    p = plan(_config(tmp_path), _config(tmp_path))
    assert (p.added, p.removed, p.changed, p.brokers, p.sinks, p.needs_restart) == (
        [],
        [],
        [],
        [],
        [],
        [],
    )
    assert p.unchanged == ["mq1", "serial1", "serial2"]


def test_devices_added_removed_changed(tmp_path: Path) -> None:
    new = _config(
        tmp_path,
        devices={
            "serial1": {"driver": "line", "port": "/dev/ttyUSB0", "baudrate": 19200},
            "mq1": {"driver": "json", "broker": "home", "topics": ["a/+"]},
            "mq2": {"driver": "json", "broker": "home", "topics": ["b/+"]},
        },
    )
    p = plan(_config(tmp_path), new)
    assert p.added == ["mq2"]
    assert p.removed == ["serial2"]
    assert p.changed == ["serial1"]
    assert p.unchanged == ["mq1"]
    assert p.brokers == ["home"]  # a device added on it


def test_disabled_device_counts_as_removed(tmp_path: Path) -> None:
    old = _config(tmp_path)
    devices = {
        "serial1": {"driver": "line", "port": "/dev/ttyUSB0"},
        "serial2": {"driver": "line", "port": "/dev/ttyUSB1", "enabled": False},
        "mq1": {"driver": "json", "broker": "home", "topics": ["a/+"]},
    }
    assert plan(old, _config(tmp_path, devices=devices)).removed == ["serial2"]


def test_broker_settings_restart_its_connection_only(tmp_path: Path) -> None:
    new = _config(tmp_path, brokers={"home": {"host": "127.0.0.1", "keepalive": 30}})
    p = plan(_config(tmp_path), new)
    assert p.brokers == ["home"]
    assert p.changed == []


def test_sink_settings_and_restart_only_sections(tmp_path: Path) -> None:
    old = _config(tmp_path, sinks={"local": {"enabled": True}})
    new = _config(
        tmp_path,
        sinks={"local": {"enabled": True, "flush_interval": 3.0}},
        spool={"commit_interval": 0.5},
    )
    p = plan(old, new)
    assert p.sinks == ["local"]
    assert p.needs_restart == ["spool"]
    toggled = _config(
        tmp_path,
        sinks={
            "local": {"enabled": True},
            "influxdb": {"url": "http://127.0.0.1:1", "bucket": "b", "org": "o", "token": "t"},
        },
    )
    assert plan(old, toggled).needs_restart == ["sinks (turned on or off)"]
