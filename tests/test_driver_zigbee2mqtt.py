"""The ``zigbee2mqtt`` driver: data-driven cases from recorded payloads, the simulator,
the whole gateway on a real mosquitto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.publish
import pytest
from driver_cases.cases import Case, cases, recorded_payloads, run
from gateway_proc import GatewayProcess
from servers import HOST, Mosquitto, wait_until

from devices.zigbee2mqtt import Zigbee2MqttDriver, Zigbee2MqttOptions
from devices.zigbee2mqtt.simulator import PLUG, SENSOR, Zigbee2MqttPublisher
from gateway import query


@pytest.mark.parametrize("case", cases("zigbee2mqtt"))
def test_case(case: Case) -> None:
    run(case, Zigbee2MqttDriver)


def test_every_recorded_zigbee2mqtt_payload_is_a_case() -> None:
    want, inputs = recorded_payloads("zigbee2mqtt", lambda s: s == "zigbee2mqtt")
    assert want
    assert want == inputs


def test_simulator_messages_decode_with_its_options() -> None:
    sim = Zigbee2MqttPublisher("p/zb", seed=1)
    driver = Zigbee2MqttDriver("z", Zigbee2MqttOptions.model_validate(sim.options()))
    readings = [s for t, p in sim.messages(2) for s in driver.decode(t, p)]
    assert [s.tags["node"] for s in readings] == [SENSOR, PLUG, SENSOR, PLUG]
    assert set(readings[0].fields) == {
        "battery", "humidity", "pressure", "temperature", "battery_voltage"
    }  # fmt: skip
    assert driver.decode(*sim.bridge()) == []
    assert driver.decode(*sim.availability(online=False))[0].fields == {"online": False}


# -- the whole gateway on a real broker ---------------------------------------------------


@pytest.mark.integration
def test_the_gateway_stores_clean_names_and_tags(
    mosquitto: Mosquitto,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    u = unique_name
    sim = Zigbee2MqttPublisher(f"{u}/z2m", seed=2)
    config: dict[str, Any] = {
        "gateway": {"metrics_interval": "1h", "shutdown_grace": "10s"},
        "spool": {"commit_interval": "20ms"},
        "brokers": {"default": {"host": HOST, "port": mosquitto.port, "client_id": f"gw-{u}"}},
        "sinks": {"local": {"enabled": True, "flush_interval": "50ms"}},
        "devices": {"zb": {"driver": "zigbee2mqtt", **sim.options()}},
    }
    gw = gateway_process(config).start()
    gw.wait_for_log("connected to MQTT broker")
    messages = [sim.availability(), sim.bridge(), *sim.messages(1)]
    messages.append((f"{u}/z2m/{PLUG}/set", b'{"state":"OFF"}'))
    paho.mqtt.publish.multiple(
        [{"topic": t, "payload": p, "qos": 1} for t, p in messages],
        hostname=HOST,
        port=mosquitto.port,
        client_id=f"pub-{u}",
    )
    db = gw.state_dir / "readings.db"

    def rows() -> list[query.Row]:
        return query.run_query(db, query.QueryRequest(limit=None)) if db.exists() else []

    want = {
        (PLUG, "online"),
        *((SENSOR, f) for f in ("battery", "humidity", "pressure", "temperature")),
        (SENSOR, "battery_voltage"),
        *((PLUG, f) for f in ("current", "energy", "power", "state", "voltage")),
    }
    try:
        wait_until(lambda: len(rows()) >= len(want), 15, what=f"{len(want)} stored values")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None
    assert gw.stop() == 0, gw.log_tail()
    stored = rows()
    assert sorted((r.tags["node"], r.field) for r in stored) == sorted(want)
    assert {r.measurement for r in stored} == {"sensors"}
    values = {(r.tags["node"], r.field): r.value for r in stored}
    assert values[SENSOR, "battery_voltage"] == pytest.approx(3.005)  # mV → V
    assert values[PLUG, "voltage"] == pytest.approx(230.4)
    assert values[PLUG, "state"] is True
