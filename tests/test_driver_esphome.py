"""The ``esphome`` driver: data-driven cases from recorded payloads, the simulator, the
whole gateway on a real mosquitto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import paho.mqtt.publish
import pytest
from driver_cases.cases import Case, cases, recorded_payloads, run
from gateway_proc import GatewayProcess
from servers import HOST, Mosquitto, wait_until

from devices.esphome import EsphomeDriver, EsphomeOptions
from devices.esphome._driver import quantity
from devices.esphome.simulator import EsphomePublisher
from gateway import query
from gateway.driver import RejectedInput


@pytest.mark.parametrize("case", cases("esphome"))
def test_case(case: Case) -> None:
    run(case, EsphomeDriver)


def test_every_recorded_esphome_payload_is_a_case() -> None:
    want, inputs = recorded_payloads("esphome", lambda s: s == "esphome")
    assert want
    assert want == inputs


@pytest.mark.parametrize(
    ("object_id", "field"),
    [
        ("temperature", "temperature"),
        ("air_temperature", "temperature"),
        ("boiler_device_temperature", "device_temperature"),
        ("dew_point", "dew_point"),
        ("soil_moisture", "soil_moisture"),
        ("temperature_2", "temperature_2"),
    ],
)
def test_sensor_ids_map_to_scheme_quantities(object_id: str, field: str) -> None:
    assert quantity(object_id) == field


def test_simulator_messages_decode_with_its_options() -> None:
    sim = EsphomePublisher(prefix="p", seed=1)
    driver = EsphomeDriver("e", EsphomeOptions.model_validate(sim.options()))
    readings = [s for t, p in sim.messages(2) for s in driver.decode(t, p)]
    assert [(s.tags["sensor"], *s.fields) for s in readings[:4]] == [
        ("air_temperature", "temperature"),
        ("air_humidity", "humidity"),
        ("soil_moisture", "soil_moisture"),
        ("door", "state"),
    ]
    with pytest.raises(RejectedInput) as info:
        driver.decode(*sim.nan())
    assert info.value.reason == "no_value"
    assert driver.decode(*sim.status(online=False))[0].fields == {"online": False}


# -- the whole gateway on a real broker ---------------------------------------------------


@pytest.mark.integration
def test_the_gateway_stores_clean_names_and_never_nan(
    mosquitto: Mosquitto,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    u = unique_name
    sim = EsphomePublisher(prefix=u, seed=2)
    config: dict[str, Any] = {
        "gateway": {"metrics_interval": "1h", "shutdown_grace": "10s"},
        "spool": {"commit_interval": "20ms"},
        "brokers": {"default": {"host": HOST, "port": mosquitto.port, "client_id": f"gw-{u}"}},
        "sinks": {"local": {"enabled": True, "flush_interval": "50ms"}},
        "devices": {"esp": {"driver": "esphome", **sim.options()}},
    }
    gw = gateway_process(config).start()
    gw.wait_for_log("connected to MQTT broker")
    messages = [sim.status(), sim.nan(), *sim.messages(1)]
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
        (None, "online"),
        ("air_temperature", "temperature"),
        ("air_humidity", "humidity"),
        ("soil_moisture", "soil_moisture"),
        ("door", "state"),
    }
    try:
        wait_until(lambda: len(rows()) >= len(want), 15, what=f"{len(want)} stored values")
        wait_until(lambda: "no_value" in gw.log_text(), 5, what="the nan rejection logged")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None
    assert gw.stop() == 0, gw.log_tail()
    stored = rows()
    got = [(r.tags.get("sensor"), r.field) for r in stored]
    assert sorted(got, key=str) == sorted(want, key=str)  # once each: nan stored nothing
    assert {(r.measurement, r.tags["node"]) for r in stored} == {("sensors", "greenhouse")}
    assert {r.field: r.value for r in stored}["soil_moisture"] == pytest.approx(41.7)
