"""Discovery end to end: the real gateway process on a real mosquitto finds ESPHome-,
Zigbee2MQTT- and Tasmota-style devices while it runs, stores their readings with units,
forgets a removed one, keeps them across a restart, and shrugs off hostile configs."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.publish
import pytest
from gateway_proc import GatewayProcess, to_toml
from servers import HOST, Mosquitto, wait_until
from stored_rows import stored_rows

from gateway.cli.trial import Trial, TrialEvents
from gateway.config import config_from_dict
from gateway.discovery.store import DiscoveredStore, read_discovered
from gateway.pipeline.reading import Reading
from gateway.pipeline.unitcatalog import read_units
from gateway.service.statefile import write_atomic

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent / "data" / "mqtt" / "discovery"


def messages(name: str, retain: bool = True) -> list[dict[str, Any]]:
    lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [
        {"topic": m["topic"], "payload": m["payload"], "qos": 1, "retain": retain}
        for m in map(json.loads, lines)
    ]


def publish(broker: Mosquitto, msgs: list[dict[str, Any]], client: str) -> None:
    paho.mqtt.publish.multiple(msgs, hostname=HOST, port=broker.port, client_id=client)


def config(broker: Mosquitto, u: str, **discovery: Any) -> dict[str, Any]:
    return {
        "gateway": {"metrics_interval": "1h", "shutdown_grace": "5s"},
        "spool": {"commit_interval": "20ms"},
        "brokers": {
            "default": {
                "host": HOST,
                "port": broker.port,
                "client_id": f"gw-{u}",
                "discovery": ["homeassistant", "tasmota"],
                **discovery,
            }
        },
        "sinks": {"local": {"enabled": True, "flush_interval": "50ms"}},
    }


def wait_rows(gw: GatewayProcess, want: Callable[[list[dict[str, Any]]], bool], what: str) -> None:
    db = gw.state_dir / "readings.db"
    try:
        wait_until(lambda: db.exists() and want(stored_rows(gw.state_dir)), 15, what=what)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None


def has(device: str, field: str, value: Any) -> Callable[[list[dict[str, Any]]], bool]:
    def check(rows: list[dict[str, Any]]) -> bool:
        return any(
            r["device"] == device and r["field"] == field and r["value"] == value for r in rows
        )

    return check


def wait_status(gw: GatewayProcess, check: Callable[[dict[str, Any]], bool], what: str) -> None:
    def ok() -> bool:
        try:
            return check(gw.status())
        except (OSError, ValueError, KeyError):
            return False

    try:
        wait_until(ok, 15, what=what)
    except TimeoutError as err:
        raise AssertionError(f"{err}\n--- gateway log ---\n{gw.log_tail()}") from None


def test_devices_appear_read_go_and_survive_a_restart(
    mosquitto: Mosquitto,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    u = unique_name
    # The broker is shared by the session's tests: retained configs are cleared at the end.
    esphome, zigbee = messages("esphome"), messages("zigbee2mqtt")
    tasmota = messages("tasmota", retain=False)  # not retained: only our file keeps it
    gw = gateway_process(config(mosquitto, u)).start()
    gw.wait_for_log("connected to MQTT broker")
    try:
        publish(mosquitto, esphome + zigbee + tasmota, f"pub-{u}")
        # Retained state, so it reaches each device whenever its SUBSCRIBE lands.
        state = [
            {"topic": "greenhouse/sensor/air_temperature/state", "payload": "21.5"},
            {"topic": "greenhouse/binary_sensor/door/state", "payload": "ON"},
            {"topic": "greenhouse/status", "payload": "online"},
            {
                "topic": "zigbee2mqtt/living_room_sensor",
                "payload": '{"battery":100,"humidity":45.21,"linkquality":120,'
                '"pressure":1012.3,"temperature":21.34,"voltage":3005}',
            },
            {"topic": "tele/bathroom/SENSOR", "payload": _tasmota_sensor(22.1)},
        ]
        publish(mosquitto, [{**m, "qos": 1, "retain": True} for m in state], f"pub-{u}")
        wait_rows(gw, has("greenhouse", "temperature", 21.5), "the ESPHome temperature")
        wait_rows(gw, has("living_room_sensor", "voltage_mv", 3005), "the Zigbee2MQTT reading")
        wait_rows(gw, has("bathroom", "humidity", 56.3), "the Tasmota reading")
        rows = stored_rows(gw.state_dir)
        temp = next(r for r in rows if r["device"] == "greenhouse" and r["field"] == "temperature")
        assert temp["measurement"] == "sensors"
        assert temp["tags"] == {"node": "greenhouse", "sensor": "air_temperature"}
        z2m = {r["field"]: r for r in rows if r["device"] == "living_room_sensor"}
        assert z2m["temperature"]["tags"] == {"node": "living_room_sensor"}
        assert z2m["pressure"]["value"] == 1012.3
        bath = next(r for r in rows if r["device"] == "bathroom" and r["field"] == "temperature")
        assert bath["tags"] == {"node": "bathroom", "sensor": "AM2301"}
        wait_until(lambda: "greenhouse" in read_units(gw.state_dir), 10, what="units.json")
        units = read_units(gw.state_dir)
        assert units["greenhouse"]["temperature"] == "degC"
        assert units["living_room_sensor"]["voltage_mv"] == "mV"
        assert units["living_room_sensor"]["pressure"] == "hPa"
        status = gw.status()
        assert status["discovery"]["default"]["devices"] == 3
        assert status["discovery"]["default"]["ignored"] == {"switch": 1}
        assert status["devices"]["greenhouse"]["discovered"] is True
        listing = gw.cli("drivers")  # gw.cli adds -c FILE
        assert listing.returncode == 0, listing.stderr
        assert "greenhouse" in listing.stdout
        assert "tele/bathroom/SENSOR" in listing.stdout

        # Empty retained payloads: the ESPHome node is gone, from status and from the file.
        publish(
            mosquitto,
            [{"topic": m["topic"], "payload": "", "retain": True} for m in esphome],
            f"pub-{u}",
        )
        wait_status(gw, lambda s: "greenhouse" not in s["devices"], "greenhouse removed")
        wait_until(
            lambda: "greenhouse" not in read_discovered(gw.state_dir)["devices"]["default"],
            10,
            what="greenhouse removed from discovered.json",
        )
        assert gw.stop() == 0, gw.log_tail()

        # A restart brings back the Tasmota (its config was not retained) from the file.
        gw.start()
        wait_status(
            gw,
            lambda s: s["running"] and {"bathroom", "living_room_sensor"} <= set(s["devices"]),
            "the discovered devices back after the restart",
        )
        assert "greenhouse" not in gw.status()["devices"]
        gw.wait_for_log("connected to MQTT broker", occurrence=2)
        later = [{"topic": "tele/bathroom/SENSOR", "payload": _tasmota_sensor(19.5)}]
        publish(mosquitto, later, f"pub-{u}")
        wait_rows(gw, has("bathroom", "temperature", 19.5), "a Tasmota reading after the restart")
        assert gw.stop() == 0, gw.log_tail()
    finally:
        clear = [m["topic"] for m in esphome + zigbee] + [
            "greenhouse/sensor/air_temperature/state",
            "greenhouse/binary_sensor/door/state",
            "greenhouse/status",
            "zigbee2mqtt/living_room_sensor",
            "tele/bathroom/SENSOR",
        ]
        publish(mosquitto, [{"topic": t, "payload": "", "retain": True} for t in clear], f"clr-{u}")


def _tasmota_sensor(temperature: float) -> str:
    # No "Time": the gateway stamps the arrival (a fixed local time would be clock skew).
    return json.dumps(
        {
            "AM2301": {"Temperature": temperature, "Humidity": 56.3},
            "TempUnit": "C",
        }
    )


def test_hostile_configs_are_counted_and_change_nothing_else(
    mosquitto: Mosquitto,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    u = unique_name
    prefix = f"{u}-ha"  # this test's own discovery prefix on the shared broker
    cfg = config(mosquitto, u, discovery_prefix=prefix, discovery_max_devices=20)
    cfg["devices"] = {
        "thermo": {"driver": "json", "topics": [f"{u}/thermo"], "measurement": "t"},
    }
    gw = gateway_process(cfg).start()
    gw.wait_for_log("connected to MQTT broker")
    good = {"stat_t": f"{u}/good", "val_tpl": "{{ value_json.t }}", "uniq_id": f"{u}-good"}
    bad: list[tuple[str, str]] = [
        ("malformed/config", "{not json"),
        ("nostate/config", '{"name": "no state topic"}'),
        ("tpl/config", json.dumps({"stat_t": f"{u}/x", "val_tpl": "{{ ''.__class__ }}"})),
        (
            "loop/config",
            json.dumps({"stat_t": f"{u}/x", "val_tpl": "{% for x in y %}{% endfor %}"}),
        ),
        ("big/config", json.dumps({"stat_t": f"{u}/x", "pad": "x" * 70_000})),
        ("good/config", json.dumps(good)),
        ("copy/config", json.dumps(good)),  # same unique_id: collision, the first wins
        ("thermo/config", json.dumps({"stat_t": f"{u}/y", "dev": {"ids": "t", "name": "thermo"}})),
    ]
    flood = [(f"n{i}/config", json.dumps({"stat_t": f"{u}/flood/{i}"})) for i in range(1000)]
    msgs = [{"topic": f"{prefix}/sensor/{t}", "payload": p, "qos": 1} for t, p in bad + flood]
    publish(mosquitto, msgs, f"pub-{u}")
    want = {
        "malformed": 1,
        "no_state_topic": 1,
        "unsupported_template": 2,
        "too_large": 1,
        "collision": 1,
    }
    wait_status(
        gw,
        lambda s: s["discovery"]["default"]["configs"] == len(msgs),
        "every config counted",
    )
    found = gw.status()["discovery"]["default"]
    assert found["refused"] == want
    assert found["overridden"] == 1
    assert found["devices"] == 20  # "good" and 19 of the flood
    assert found["over_cap"] == 1000 - 19
    events = gw.log_events()
    refused = [e for e in events if e["event"] == "discovery config refused"]
    assert {e["topic"] for e in refused} >= {f"{prefix}/sensor/{t}" for t, _ in bad[:5]}
    [collision] = [e for e in refused if e["reason"] == "collision"]
    assert collision["topic"] == f"{prefix}/sensor/copy/config"
    assert collision["other_topic"] == f"{prefix}/sensor/good/config"
    assert sum(e["event"].endswith("discovery_max_devices reached") for e in events) == 1
    # Nothing else changed: the configured device and the good discovered one still read.
    publish(
        mosquitto,
        [
            {"topic": f"{u}/thermo", "payload": '{"temp": 20.5}', "qos": 1},
            {"topic": f"{u}/good", "payload": '{"t": 7}', "qos": 1},
        ],
        f"pub-{u}",
    )
    wait_rows(gw, has("thermo", "temp", 20.5), "the configured device's reading")
    wait_rows(gw, has("good", "t", 7), "the good discovered device's reading")
    assert gw.stop() == 0, gw.log_tail()
    kept = read_discovered(gw.state_dir)
    assert len(kept["configs"]["default"]) == 20
    assert len(kept["devices"]["default"]) == 20


class _Recorded(TrialEvents):
    def __init__(self) -> None:
        self.readings: list[tuple[str, dict[str, Any]]] = []
        self.started: list[str] = []

    def start(self, devices: list[str], duration: float, pins: int | None) -> None:
        self.started = devices

    def reading(self, device: str, reading: Reading, line: str) -> None:
        self.readings.append((device, dict(reading.fields)))


async def test_run_test_tries_discovered_devices_and_writes_nothing(
    mosquitto: Mosquitto, tmp_path: Path, unique_name: str
) -> None:
    u = unique_name.replace("-", "_")
    state = tmp_path / "state"
    # A Tasmota the gateway found earlier, kept in its state directory.
    topic, payload = messages("tasmota")[0]["topic"], messages("tasmota")[0]["payload"]
    kept = json.loads(payload)
    kept["t"] = f"{u}_bath"
    store = DiscoveredStore(state)
    store.put_config("default", topic, json.dumps(kept))
    data = store.snapshot()
    assert data is not None
    write_atomic(store.path, data)
    before = (state / "discovered.json").read_bytes()
    prefix = f"{u}-ha"
    cfg = config_from_dict(
        {
            "gateway": {"state_dir": str(state)},
            "brokers": {
                "default": {
                    "host": HOST,
                    "port": mosquitto.port,
                    "discovery": ["homeassistant", "tasmota"],
                    "discovery_prefix": prefix,
                }
            },
        }
    )
    events = _Recorded()
    trial = Trial(cfg, [], events)
    task = asyncio.create_task(trial.run(20))
    try:
        hub = trial.hubs["default"]
        async with asyncio.timeout(10):
            while hub.stats.state != "connected":
                await asyncio.sleep(0.01)
        assert events.started == [f"{u}_bath"]
        announced = {"stat_t": f"{u}/attic", "dev_cla": "temperature", "unit_of_meas": "°C"}
        msgs = [
            {"topic": f"{prefix}/sensor/attic/config", "payload": json.dumps(announced)},
            {"topic": f"tele/{u}_bath/SENSOR", "payload": _tasmota_sensor(18.5)},
        ]
        await asyncio.to_thread(publish, mosquitto, msgs, f"pub-{u}")
        async with asyncio.timeout(10):
            while "attic" not in trial.pipeline.devices:
                await asyncio.sleep(0.01)
            while f"{u}/attic" not in hub.stats.subscriptions:
                await asyncio.sleep(0.01)
        await asyncio.to_thread(publish, mosquitto, [{"topic": f"{u}/attic", "payload": "4.5"}], u)
        async with asyncio.timeout(10):
            while len({d for d, _ in events.readings}) < 2:
                await asyncio.sleep(0.01)
    finally:
        trial.stop()
        await task
    assert (f"{u}_bath", {"temperature": 18.5, "humidity": 56.3}) in events.readings
    assert ("attic", {"temperature": 4.5}) in events.readings
    assert (state / "discovered.json").read_bytes() == before  # the trial stores nothing


def test_a_reload_that_restarts_the_broker_keeps_discovered_devices(
    mosquitto: Mosquitto,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    u = unique_name
    prefix = f"{u}-ha"
    cfg = config(mosquitto, u, discovery_prefix=prefix)
    gw = gateway_process(cfg).start()
    gw.wait_for_log("connected to MQTT broker")
    announced = {"stat_t": f"{u}/shed", "dev_cla": "temperature", "unit_of_meas": "°C"}
    msgs = [{"topic": f"{prefix}/sensor/shed/config", "payload": json.dumps(announced), "qos": 1}]
    publish(mosquitto, msgs, f"pub-{u}")
    wait_status(gw, lambda s: "shed" in s["devices"], "the discovered device")
    publish(mosquitto, [{"topic": f"{u}/shed", "payload": "3.5", "qos": 1}], f"pub-{u}")
    wait_rows(gw, has("shed", "temperature", 3.5), "a reading before the reload")
    cfg["brokers"]["default"]["keepalive"] = 30  # the broker's connection is restarted
    cfg["gateway"] = gw.config["gateway"]
    gw.config_path.write_text(to_toml(cfg))
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    gw.wait_for_log("configuration reloaded")
    gw.wait_for_log("connected to MQTT broker", occurrence=2)
    publish(mosquitto, [{"topic": f"{u}/shed", "payload": "4.5", "qos": 1}], f"pub-{u}")
    wait_rows(gw, has("shed", "temperature", 4.5), "a reading after the reload")
    wait_status(gw, lambda s: s["devices"]["shed"]["readings"] == 2, "its counters kept")
    assert gw.stop() == 0, gw.log_tail()
