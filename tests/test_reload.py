"""SIGHUP reloads the configuration in the running gateway, losing nothing.

The real process, real pseudo-terminals with the line simulator, a real database
(VictoriaMetrics) and a real datagram socket standing in for systemd's notify socket.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_proc import GatewayProcess, to_toml
from notify_listener import NotifyListener
from servers import Mosquitto, SerialPtyFactory, TcpProxyFactory, VictoriaMetrics, wait_until
from test_faults import (
    GatewayFactory,
    LineFeeder,
    MqttFeeder,
    influx_sink,
    line_device,
    start_serial_gateway,
    stored,
    wait_for_seqs,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    sock = NotifyListener()
    yield sock
    sock.close()


def _events(gw: GatewayProcess, event: str, **match: Any) -> list[dict[str, Any]]:
    return [
        e
        for e in gw.log_events()
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
    ]


def _rewrite(gw: GatewayProcess, config: dict[str, Any]) -> None:
    config["gateway"] = gw.config["gateway"]
    tmp = gw.config_path.with_suffix(".new")
    tmp.write_text(to_toml(config))
    tmp.replace(gw.config_path)


def _hup(gw: GatewayProcess) -> None:
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)


def test_reload_restarts_only_changed_devices_and_loses_nothing(
    victoria: VictoriaMetrics,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    listener: NotifyListener,
    unique_name: str,
) -> None:
    """a unchanged, b changed, c removed, d added, the sink's batch size changed.

    Asserted: only b's and d's ports are (re)opened, a's is never closed; every reading
    a device put into the spool reaches the database exactly once (a's stream is
    complete across the reload); status lists a, b, d; RELOADING=1 then READY=1.
    Then an invalid configuration: every problem logged with its path, nothing restarted,
    still running.
    """
    ptys = {n: serial_pty() for n in "abcd"}
    feeders = {n: LineFeeder(p, rate_hz=40) for n, p in ptys.items()}
    measurement = {n: f"{unique_name}_{n}" for n in "abcd"}

    def device(name: str, **extra: Any) -> dict[str, Any]:
        return {**line_device(feeders[name], ptys[name], measurement[name]), **extra}

    sink = influx_sink(victoria.url)
    gw = gateway_process(
        {
            "sinks": {"influxdb": sink},
            "devices": {n: device(n) for n in "abc"},
        },
        env=listener.env(),
    )
    start_serial_gateway(gw)
    wait_until(lambda: len(_events(gw, "serial port opened")) == 3, timeout=15)
    for n in "abc":
        feeders[n].start()
    try:
        for n in "abc":
            wait_for_seqs(victoria, measurement[n], set(range(20)))
        _rewrite(
            gw,
            {
                "sinks": {"influxdb": {**sink, "batch_size": 1000}},
                "devices": {
                    "a": device("a"),
                    "b": device("b", exclude_fields=["not_sent"]),
                    "d": device("d"),
                },
            },
        )
        _hup(gw)
        gw.wait_for_log("configuration reloaded")
        feeders["c"].stop()
        wait_until(lambda: len(_events(gw, "serial port opened", device="d")) == 1, timeout=15)
        feeders["d"].start()
        reloaded = _events(gw, "configuration reloaded")[0]
        assert reloaded["added"] == ["d"]
        assert reloaded["removed"] == ["c"]
        assert reloaded["changed"] == ["b"]
        assert reloaded["unchanged"] == 1
        assert reloaded["sinks_reconfigured"] == ["influxdb"]
        wait_until(lambda: len(_events(gw, "serial port opened", device="b")) == 2, timeout=15)
        assert len(_events(gw, "serial port opened", device="a")) == 1
        assert _events(gw, "device removed", device="c")
        # b, d and a keep delivering after the reload.
        for n in "abd":
            seen = len(stored(victoria, measurement[n]))
            wait_until(
                lambda n=n, seen=seen: len(stored(victoria, measurement[n])) > seen + 20,
                timeout=15,
            )
        reloading = listener.wait_for("RELOADING", "1")
        assert any(n.at > reloading.at for n in listener.with_key("READY"))

        # --- an invalid configuration changes nothing ---
        opened = len(_events(gw, "serial port opened"))
        _rewrite(
            gw,
            {
                "sinks": {"influxdb": sink},
                "spool": {"commit_interval": -1},
                "devices": {"a": device("a", baudrate="fast"), "e": {"driver": "nosuch"}},
            },
        )
        _hup(gw)
        gw.wait_for_log("configuration reload rejected")
        problems = {e["path"] for e in _events(gw, "configuration problem")}
        assert {"spool.commit_interval", "devices.a.baudrate"} <= problems, problems
        assert any(p.startswith("devices.e") for p in problems), problems
        time.sleep(1.0)
        assert gw.proc is not None
        assert gw.proc.poll() is None
        assert len(_events(gw, "serial port opened")) == opened
        # status.json is rewritten every 2 s.
        wait_until(lambda: gw.status()["reloads"]["rejected"] == 1, timeout=10)
        st = gw.status()
        assert set(st["devices"]) == {"a", "b", "d"}
        assert st["reloads"]["done"] == 1
    finally:
        sent = {n: f.stop() for n, f in feeders.items() if f.is_alive() or f.count}
    assert gw.stop() == 0, gw.log_tail()

    # Nothing spooled is lost: a's stream is complete; for the others every reading the
    # gateway accepted is stored once.
    final = {e["device"]: e for e in _events(gw, "device removed")}
    got_a = wait_for_seqs(victoria, measurement["a"], set(range(sent["a"])), timeout=30)
    assert all(len(rows) == 1 for rows in got_a.values())
    got_c = stored(victoria, measurement["c"])
    assert len(got_c) == final["c"]["readings"]
    assert all(len(rows) == 1 for rows in got_c.values())
    for n in "bd":
        got = stored(victoria, measurement[n])
        assert all(len(rows) == 1 for rows in got.values()), n
        accepted = gw.status()["devices"][n]["readings"]
        assert len(got) == accepted, (n, len(got), accepted)


def test_reload_of_a_broker_keeps_its_queued_messages(
    victoria: VictoriaMetrics,
    mosquitto: Mosquitto,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """A broker setting changes and an MQTT device is added: the broker connection
    restarts (its persistent session keeps QoS 1 messages meanwhile), the serial device
    runs on untouched, and every published message is stored exactly once."""
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=40)
    serial_m = f"{unique_name}_s"
    broker = {
        "host": mosquitto.host,
        "port": mosquitto.port,
        "client_id": unique_name,
        "reconnect_initial": 0.2,
        "reconnect_max": 1.0,
    }

    def mqtt_device(name: str) -> dict[str, Any]:
        return {
            "driver": "json",
            "topics": [f"{unique_name}/{name}/{{sensor}}/state"],
            "qos": 1,
            "measurement": f"{unique_name}_{name}",
            "fields": {"seq": {"type": "int"}},
        }

    sink = influx_sink(victoria.url)
    gw = gateway_process(
        {
            "sinks": {"influxdb": sink},
            "brokers": {"default": broker},
            "devices": {"s": line_device(feeder, pty, serial_m), "m1": mqtt_device("m1")},
        }
    )
    start_serial_gateway(gw)
    gw.wait_for_log("connected to MQTT broker")
    pubs = {
        "m1": MqttFeeder(mosquitto, f"{unique_name}/m1/x/state", rate_hz=100),
        "m2": MqttFeeder(mosquitto, f"{unique_name}/m2/x/state", rate_hz=100),
    }
    feeder.start()
    pubs["m1"].start()
    try:
        wait_for_seqs(victoria, f"{unique_name}_m1", set(range(50)))
        _rewrite(
            gw,
            {
                "sinks": {"influxdb": sink},
                "brokers": {"default": {**broker, "keepalive": 30}},
                "devices": {
                    "s": line_device(feeder, pty, serial_m),
                    "m1": mqtt_device("m1"),
                    "m2": mqtt_device("m2"),
                },
            },
        )
        _hup(gw)
        gw.wait_for_log("configuration reloaded")
        gw.wait_for_log("connected to MQTT broker", occurrence=2)
        pubs["m2"].start()
        reloaded = _events(gw, "configuration reloaded")[0]
        assert reloaded["added"] == ["m2"]
        assert reloaded["changed"] == []
        assert reloaded["brokers_restarted"] == ["default"]
        time.sleep(1.0)
    finally:
        sent = {n: p.stop() for n, p in pubs.items() if p.is_alive() or p.count}
        sent["s"] = feeder.stop()
    assert len(_events(gw, "serial port opened")) == 1
    for name in ("m1", "m2"):
        got = wait_for_seqs(victoria, f"{unique_name}_{name}", set(range(sent[name])), timeout=30)
        dups = {seq: rows for seq, rows in got.items() if len(rows) > 1}
        assert not dups, f"{name}: stored twice: {sorted(dups)}"
    got_s = wait_for_seqs(victoria, serial_m, set(range(sent["s"])), timeout=30)
    assert all(len(rows) == 1 for rows in got_s.values())
    assert gw.stop() == 0, gw.log_tail()


def test_sink_reconfigured_during_an_outage_keeps_its_backlog(
    victoria: VictoriaMetrics,
    tcp_proxy: TcpProxyFactory,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """The database is unreachable, readings pile up in the spool, the sink's settings
    change by reload: once the database is back, every reading is stored exactly once."""
    proxy = tcp_proxy(victoria.host, victoria.port)
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=100)
    sink = influx_sink(proxy.url)
    gw = gateway_process(
        {"sinks": {"influxdb": sink}, "devices": {"s": line_device(feeder, pty, unique_name)}}
    )
    start_serial_gateway(gw)
    feeder.start()
    try:
        wait_for_seqs(victoria, unique_name, set(range(20)))
        proxy.blackhole()
        time.sleep(1.5)
        _rewrite(
            gw,
            {
                "sinks": {"influxdb": {**sink, "batch_size": 50, "flush_interval": 0.1}},
                "devices": {"s": line_device(feeder, pty, unique_name)},
            },
        )
        _hup(gw)
        gw.wait_for_log("configuration reloaded")
        assert _events(gw, "configuration reloaded")[0]["sinks_reconfigured"] == ["influxdb"]
        time.sleep(0.5)
        proxy.pass_through()
        time.sleep(0.5)
    finally:
        sent = feeder.stop()
    got = wait_for_seqs(victoria, unique_name, set(range(sent)), timeout=30)
    assert all(len(rows) == 1 for rows in got.values())
    assert len(_events(gw, "serial port opened")) == 1
    assert gw.stop() == 0, gw.log_tail()
