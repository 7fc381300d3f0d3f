"""Turning a sink off and on again keeps its backlog (the real gateway, real VictoriaMetrics).

``enabled = false``, restart, ``enabled = true``, restart: the spool keeps a disabled
sink's cursor, so what was spooled before and during the window still reaches InfluxDB
(VictoriaMetrics here) once it is enabled again — every reading exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from gateway_proc import GatewayProcess, to_toml
from servers import SerialPtyFactory, VictoriaMetrics
from test_faults import influx_sink, start_serial_gateway, stored, wait_for_seqs, wait_status

from devices.line.simulator import LineSimulator
from gateway.config import load_config

PER_PHASE = 150
INFLUX = {"url": "http://h:8086", "bucket": "b", "token": "t"}


@pytest.mark.parametrize(
    ("sinks", "disabled"),
    [
        pytest.param({"influxdb": {**INFLUX, "enabled": False}}, ["influxdb"], id="influx-off"),
        pytest.param({"influxdb": INFLUX}, [], id="influx-on"),
        # Removed, or only off by default: its backlog is let go (counted as dropped).
        pytest.param({}, [], id="no-influx"),
        pytest.param({"influxdb": INFLUX, "local": {"enabled": False}}, ["local"], id="local-off"),
    ],
)
def test_disabled_sinks_are_the_ones_turned_off(
    tmp_path: Path, sinks: dict[str, Any], disabled: list[str]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(to_toml({"gateway": {"state_dir": str(tmp_path)}, "sinks": sinks}))
    assert load_config(path, env={}).disabled_sinks == disabled


def _events(gw: GatewayProcess, event: str) -> list[dict[str, Any]]:
    return [e for e in gw.log_events() if e.get("event") == event]


@pytest.mark.integration
def test_influx_turned_off_and_on_again_gets_every_reading_once(
    victoria: VictoriaMetrics,
    serial_pty: SerialPtyFactory,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    pty = serial_pty()
    sim = LineSimulator(pty.master_fd, "kv", seed=7)
    device = {
        "driver": "line",
        **sim.options(pty.path),
        "measurement": unique_name,
        "fields": {"seq": {"type": "int"}},
    }
    gw = gateway_process(
        {"sinks": {"influxdb": influx_sink(victoria.url)}, "devices": {"dev": device}}
    )

    def run_phase(influx_enabled: bool) -> set[int]:
        """Start with InfluxDB on or off, feed PER_PHASE readings, stop cleanly."""
        gw.config["sinks"]["influxdb"]["enabled"] = influx_enabled
        gw.config_path.write_text(to_toml(gw.config))
        start_serial_gateway(gw)
        seqs = set(sim.write_lines(PER_PHASE))
        assert gw.proc is not None
        pid = gw.proc.pid  # status.json of the previous run is still there at first
        wait_status(
            gw,
            lambda st: st["pid"] == pid and st["devices"]["dev"]["readings"] == PER_PHASE,
            f"{PER_PHASE} readings received",
        )
        if influx_enabled:
            wait_for_seqs(victoria, unique_name, seqs)
        assert gw.stop() == 0
        return seqs

    # 1. InfluxDB on: readings flow.
    first = run_phase(influx_enabled=True)
    # 2. InfluxDB off (the local store takes over by default): nothing reaches it.
    during = run_phase(influx_enabled=False)
    assert not stored(victoria, unique_name).keys() & during
    (kept,) = _events(gw, "backlog kept for a sink that is not enabled")
    assert kept["sink"] == "influxdb"
    # 3. InfluxDB on again: the window's readings arrive, then the new ones.
    after = run_phase(influx_enabled=True)

    everything = first | during | after
    assert len(everything) == 3 * PER_PHASE
    got = wait_for_seqs(victoria, unique_name, everything)
    assert got.keys() == everything
    assert all(len(rows) == 1 for rows in got.values()), "every reading exactly once"
    dropped = [e for e in gw.log_events() if e.get("event") == "spool dropped readings"]
    assert not any("influxdb" in key for e in dropped for key in e.get("total", {}))
