"""The ``tasmota`` driver: data-driven cases from recorded payloads, the simulator, the
whole gateway on a real mosquitto."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.publish
import pytest
from driver_cases.cases import Case, cases, recorded_payloads, run
from gateway_proc import GatewayProcess
from servers import HOST, Mosquitto, wait_until

from devices.tasmota import TasmotaDriver, TasmotaOptions
from devices.tasmota.simulator import TasmotaPublisher
from gateway import query


@pytest.mark.parametrize("case", cases("tasmota"))
def test_case(case: Case) -> None:
    run(case, TasmotaDriver)


def test_every_recorded_tasmota_payload_is_a_case() -> None:
    want, inputs = recorded_payloads("tasmota", lambda s: s == "tasmota")
    assert want
    assert want == inputs


def test_time_defaults_to_the_gateways_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        driver = TasmotaDriver("t", TasmotaOptions())
        (sample,) = driver.decode(
            "tele/x/SENSOR", b'{"Time":"2026-11-20T13:44:23","AM2301":{"Temperature":1}}'
        )
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert sample.time_ns == (1795182263 + 5 * 3600) * 10**9  # EST is UTC-5


def test_simulator_messages_decode_with_its_options() -> None:
    sim = TasmotaPublisher(prefix="p", seed=1, timezone="Asia/Tokyo")
    driver = TasmotaDriver("t", TasmotaOptions.model_validate({**sim.options(), "state": True}))
    before = time.time_ns()
    readings = [s for t, p in sim.messages(2) for s in driver.decode(t, p)]
    sensors = sorted({(s.tags["node"], s.tags["sensor"]) for s in readings})
    assert sensors == [
        ("bathroom", "AM2301"),
        ("ble_bridge", "ATC04b555"),
        ("ble_bridge", "DS18B20-1"),
        ("plug", "ENERGY"),
    ]
    for s in readings:  # whole seconds of the device's clock, read in its zone
        assert before // 10**9 * 10**9 <= (s.time_ns or 0) <= time.time_ns()
    (state,) = driver.decode(*sim.state("plug"))
    assert set(state.fields) == {"uptime", "heap_kb", "wifi_quality", "wifi_rssi"}
    assert driver.decode(*sim.lwt("plug", online=False))[0].fields == {"online": False}


# -- the whole gateway on a real broker ---------------------------------------------------


@pytest.mark.integration
def test_the_gateway_stores_clean_names_tags_and_units(
    mosquitto: Mosquitto,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    u = unique_name
    sim = TasmotaPublisher(prefix=u, seed=2, timezone="UTC")
    config: dict[str, Any] = {
        "gateway": {"metrics_interval": "1h", "shutdown_grace": "10s"},
        "spool": {"commit_interval": "20ms"},
        "brokers": {"default": {"host": HOST, "port": mosquitto.port, "client_id": f"gw-{u}"}},
        "sinks": {"local": {"enabled": True, "flush_interval": "50ms"}},
        "devices": {"tas": {"driver": "tasmota", **sim.options(), "state": True}},
    }
    gw = gateway_process(config).start()
    gw.wait_for_log("connected to MQTT broker")
    fahrenheit = json.dumps(
        {"Time": sim._time(), "BME280": {"Temperature": 68.0, "Pressure": 750.0},
         "TempUnit": "F", "PressureUnit": "mmHg"}
    ).encode()  # fmt: skip
    messages = [
        sim.lwt("plug"),
        *sim.messages(1),
        sim.state("plug"),
        (f"{u}/tele/attic/SENSOR", fahrenheit),
        (f"{u}/tele/attic/INFO1", b'{"Info1":{"Module":"Generic"}}'),  # not subscribed
    ]
    paho.mqtt.publish.multiple(
        [{"topic": t, "payload": p, "qos": 1} for t, p in messages],
        hostname=HOST,
        port=mosquitto.port,
        client_id=f"pub-{u}",
    )
    db = gw.state_dir / "readings.db"

    def rows() -> list[query.Row]:
        if not db.exists():
            return []
        return query.run_query(db, query.QueryRequest(limit=None))

    want = {
        ("plug", None, "online"),
        ("bathroom", "AM2301", "temperature"),
        ("bathroom", "AM2301", "humidity"),
        ("ble_bridge", "ATC04b555", "temperature"),
        ("ble_bridge", "ATC04b555", "humidity"),
        ("ble_bridge", "ATC04b555", "battery"),
        ("ble_bridge", "ATC04b555", "rssi"),
        ("ble_bridge", "DS18B20-1", "temperature"),
        ("plug", "ENERGY", "energy"),
        ("plug", "ENERGY", "power"),
        ("plug", "ENERGY", "voltage"),
        ("plug", "ENERGY", "current"),
        ("plug", None, "uptime"),
        ("plug", None, "heap_kb"),
        ("plug", None, "wifi_quality"),
        ("plug", None, "wifi_rssi"),
        ("attic", "BME280", "temperature"),
        ("attic", "BME280", "pressure"),
    }
    try:
        wait_until(lambda: len(rows()) >= len(want), 15, what=f"{len(want)} stored values")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None
    assert gw.stop() == 0, gw.log_tail()
    stored = rows()
    assert {(r.tags["node"], r.tags.get("sensor"), r.field) for r in stored} == want
    assert {r.measurement for r in stored} == {"sensors"}
    assert {r.device for r in stored} == {"tas"}
    ids = {r.tags["sensor"]: r.tags.get("id") for r in stored if "sensor" in r.tags}
    assert ids["DS18B20-1"] == "3C01D0759E1A"
    assert ids["ATC04b555"] == "a4c13804b555"
    values = {(r.tags["node"], r.field): r.value for r in stored}
    assert values["attic", "temperature"] == pytest.approx(20.0)  # 68 °F
    assert values["attic", "pressure"] == pytest.approx(999.9179, abs=1e-3)  # 750 mmHg in hPa
    assert values["plug", "online"] is True
