"""The ``shelly`` driver: data-driven cases from recorded payloads, the simulator, the
whole gateway on a real mosquitto."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.publish
import pytest
from driver_cases.cases import Case, cases, recorded_payloads, run
from gateway_proc import GatewayProcess
from servers import HOST, Mosquitto, wait_until

from devices.shelly import ShellyDriver, ShellyOptions
from devices.shelly.simulator import GEN1_HT, HT, PM, ShellyPublisher
from gateway import query


@pytest.mark.parametrize("case", cases("shelly"))
def test_case(case: Case) -> None:
    run(case, ShellyDriver)


def test_every_recorded_shelly_payload_is_a_case() -> None:
    want, inputs = recorded_payloads("shelly", lambda s: s.startswith("shelly"))
    assert want
    assert want == inputs


def test_simulator_messages_decode_with_its_options() -> None:
    sim = ShellyPublisher(prefix="p/q", seed=1)
    driver = ShellyDriver("s", ShellyOptions.model_validate(sim.options()))
    readings = [s for t, p in sim.messages(2) for s in driver.decode(t, p)]
    sensors = sorted({(s.tags["node"], s.tags["sensor"]) for s in readings})
    assert sensors == sorted(
        [(PM, "switch:0"), (HT, "humidity:0"), (HT, "temperature:0"), (GEN1_HT, "sensor")]
    )
    stamped = [s.time_ns for s in readings if s.tags["node"] == HT]
    assert all(t is not None and abs(t - time.time_ns()) < 10**10 for t in stamped)
    (switch,) = driver.decode(*sim.switch_status())
    assert switch.fields["energy"] == pytest.approx(1234.5e-3 + 3 * 1.5e-3)  # Wh → kWh
    assert driver.decode(*sim.online(online=False))[0].fields == {"online": False}


# -- the whole gateway on a real broker ---------------------------------------------------


@pytest.mark.integration
def test_the_gateway_stores_clean_names_tags_and_units(
    mosquitto: Mosquitto,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    u = unique_name
    sim = ShellyPublisher(prefix=u, seed=2)
    config: dict[str, Any] = {
        "gateway": {"metrics_interval": "1h", "shutdown_grace": "10s"},
        "spool": {"commit_interval": "20ms"},
        "brokers": {"default": {"host": HOST, "port": mosquitto.port, "client_id": f"gw-{u}"}},
        "sinks": {"local": {"enabled": True, "flush_interval": "50ms"}},
        "devices": {"sh": {"driver": "shelly", **sim.options()}},
    }
    gw = gateway_process(config).start()
    gw.wait_for_log("connected to MQTT broker")
    sent_ts = round(time.time() - 5, 2)
    sys_status = b'{"mac":"A8032AB12345","time":null,"unixtime":null,"uptime":12}'
    messages = [
        sim.online(PM),
        sim.notify(ts=sent_ts),
        sim.switch_status(),
        *sim.gen1(),
        (f"{u}/{PM}/status/sys", sys_status),  # housekeeping: ignored
    ]
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
        (PM, None, "online"),
        (HT, "temperature:0", "temperature"),
        (HT, "humidity:0", "humidity"),
        (PM, "switch:0", "state"),
        (PM, "switch:0", "power"),
        (PM, "switch:0", "voltage"),
        (PM, "switch:0", "current"),
        (PM, "switch:0", "energy"),
        (PM, "switch:0", "device_temperature"),
        (GEN1_HT, "sensor", "temperature"),
        (GEN1_HT, "sensor", "humidity"),
    }
    try:
        wait_until(lambda: len(rows()) >= len(want), 15, what=f"{len(want)} stored values")
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None
    assert gw.stop() == 0, gw.log_tail()
    stored = rows()
    assert {(r.tags["node"], r.tags.get("sensor"), r.field) for r in stored} == want
    assert {r.measurement for r in stored} == {"sensors"}
    values = {(r.tags["node"], r.field): r for r in stored}
    assert values[PM, "energy"].value == pytest.approx(1.236)  # 1236 Wh in kWh
    assert values[PM, "state"].value is True
    assert values[HT, "temperature"].time_ns == round(sent_ts * 1000) * 10**6  # params.ts
