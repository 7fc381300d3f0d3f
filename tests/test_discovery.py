"""Discovery without a broker: configs parsed, devices grouped and named, refusals
counted, the state file kept. The payloads are in tests/data/mqtt/discovery/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from devices.esphome import EsphomeDriver, EsphomeOptions
from gateway.cli.drivers import render_discovered
from gateway.config import BrokerSection
from gateway.discovery.driver import DiscoveredDriver
from gateway.discovery.homeassistant import DiscoveryError, Parsed, Removed, parse_config
from gateway.discovery.registry import MAX_CONFIG_BYTES, Discovery
from gateway.discovery.store import DiscoveredStore, read_discovered
from gateway.driver import MqttDriver, RejectedInput
from gateway.pipeline.normalize import NormalizeConfig
from gateway.service.statefile import write_atomic

DATA = Path(__file__).parent / "data" / "mqtt" / "discovery"


def messages(name: str) -> list[tuple[str, bytes]]:
    lines = (DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    return [(m["topic"], m["payload"].encode()) for m in map(json.loads, lines)]


class Host:
    """Records what discovery asks the gateway to do."""

    def __init__(self) -> None:
        self.devices: dict[str, tuple[MqttDriver[Any], NormalizeConfig]] = {}
        self.calls: list[tuple[str, str]] = []

    def add_discovered(self, name: str, driver: MqttDriver[Any], config: NormalizeConfig) -> None:
        self.devices[name] = (driver, config)
        self.calls.append(("add", name))

    def remove_discovered(self, name: str) -> None:
        del self.devices[name]
        self.calls.append(("remove", name))


def discovery(
    host: Host,
    store: DiscoveredStore | None = None,
    configured: tuple[str, ...] = (),
    **broker: Any,
) -> Discovery:
    section = BrokerSection.model_validate(
        {"host": "127.0.0.1", "discovery": ["homeassistant", "tasmota"], **broker}
    )
    return Discovery("default", section, host, store or DiscoveredStore(None), configured)


def feed(d: Discovery, *names: str) -> None:
    for name in names:
        for topic, payload in messages(name):
            d.handle(topic, payload)


def driver_of(host: Host, name: str) -> MqttDriver[Any]:
    return host.devices[name][0]


def test_esphome_entities_become_one_device_read_like_the_configured_driver() -> None:
    host = Host()
    d = discovery(host)
    feed(d, "esphome")
    assert sorted(host.devices) == ["greenhouse"]
    assert d.stats.ignored == {"switch": 1}
    found = driver_of(host, "greenhouse")
    assert found.options.stale_after == 120  # every entity has exp_aft = 120
    configured = EsphomeDriver("esp", EsphomeOptions())
    for topic, payload in [
        ("greenhouse/sensor/air_temperature/state", b"21.5"),
        ("greenhouse/sensor/air_humidity/state", b"56.25"),
        ("greenhouse/sensor/soil_moisture/state", b"41.7"),
        ("greenhouse/binary_sensor/door/state", b"ON"),
        ("greenhouse/status", b"offline"),
    ]:
        assert found.decode(topic, payload) == configured.decode(topic, payload), topic
    assert found.units == {
        "temperature": "degC",
        "humidity": "%",
        "soil_moisture": "%",
        "rssi": "dBm",
    }
    rssi = found.decode("greenhouse/sensor/wifi_signal/state", b"-67")
    assert rssi[0].fields == {"rssi": -67.0}
    with pytest.raises(RejectedInput) as info:
        found.decode("greenhouse/sensor/air_temperature/state", b"unavailable")
    assert info.value.reason == "no_value"


def test_zigbee2mqtt_entities_share_one_reading_with_scheme_names() -> None:
    host = Host()
    d = discovery(host)
    feed(d, "zigbee2mqtt")
    found = driver_of(host, "living_room_sensor")
    assert found.options.topics == ["zigbee2mqtt/living_room_sensor", "zigbee2mqtt/bridge/state"]
    payload = b'{"battery":100,"humidity":45.21,"linkquality":120,"pressure":1012.3,"temperature":21.34,"voltage":3005}'
    [sample] = found.decode("zigbee2mqtt/living_room_sensor", payload)
    assert sample.measurement == "sensors"
    assert sample.tags == {"node": "living_room_sensor"}
    assert sample.fields == {
        "temperature": 21.34,
        "humidity": 45.21,
        "pressure": 1012.3,
        "battery": 100,
        "voltage_mv": 3005,  # mV is not the scheme's V: never stored as "voltage"
        "linkquality": 120,
    }
    assert found.units["voltage_mv"] == "mV"
    # A partial update carries only some keys; the others are left out, not errors.
    [partial] = found.decode("zigbee2mqtt/living_room_sensor", b'{"temperature":20.5}')
    assert partial.fields == {"temperature": 20.5}
    [online] = found.decode("zigbee2mqtt/bridge/state", b'{"state":"online"}')
    assert online.fields == {"online": True}
    with pytest.raises(RejectedInput) as info:
        found.decode("zigbee2mqtt/living_room_sensor", b"not json")
    assert info.value.reason == "template"


def test_per_device_config_with_components_converts_to_scheme_units() -> None:
    host = Host()
    d = discovery(host)
    feed(d, "device")
    assert d.stats.ignored == {"light": 1}
    found = driver_of(host, "kitchen")
    [sample] = found.decode("sensorKitchen/state", b'{"temperature": "70.25", "humidity": 40}')
    assert sample.fields["temperature"] == pytest.approx((70.2 - 32) * 5 / 9)  # round(1), °F → °C
    assert sample.fields["humidity"] == 40
    assert found.units == {"temperature": "degC", "humidity": "%"}
    # Re-published without one component: that component goes, the device stays.
    topic, payload = messages("device")[0]
    doc = json.loads(payload)
    doc["cmps"]["some_unique_id2"] = {"p": "sensor"}
    d.handle(topic, json.dumps(doc).encode())
    assert driver_of(host, "kitchen").units == {"temperature": "degC"}


def test_tasmota_discovery_maps_onto_the_tasmota_driver() -> None:
    host = Host()
    d = discovery(host)
    feed(d, "tasmota")
    driver, config = host.devices["bathroom"]
    assert driver.options.topics == [
        "tele/bathroom/SENSOR",
        "tele/bathroom/STATE",
        "tele/bathroom/LWT",
    ]
    assert config.tags == {"node": "bathroom"}
    sensor = b'{"Time":"2026-11-20T13:44:23","AM2301":{"Temperature":22.1,"Humidity":56.3},"TempUnit":"C"}'
    [sample] = driver.decode("tele/bathroom/SENSOR", sensor)
    assert sample.fields == {"temperature": 22.1, "humidity": 56.3}
    assert sample.tags == {"sensor": "AM2301"}
    d.handle("tasmota/discovery/A4CF12B45678/config", b"")
    assert host.devices == {}


def test_abbreviations_base_topic_and_removal() -> None:
    payload = json.dumps(
        {
            "~": "home/attic",
            "stat_t": "~/state",
            "avty_t": "~/lwt",
            "val_tpl": "{{ value_json.t }}",
            "unit_of_meas": "°C",
            "dev_cla": "temperature",
            "uniq_id": "attic-t",
            "dev": {"ids": ["attic"], "name": "Attic"},
        }
    ).encode()
    parsed = parse_config("homeassistant", "homeassistant/sensor/attic/t/config", payload)
    assert isinstance(parsed, Parsed)
    [entity] = parsed.entities
    assert entity.state_topic == "home/attic/state"
    assert entity.availability[0].topic == "home/attic/lwt"
    assert (entity.unit, entity.device_class, entity.group) == ("°C", "temperature", "id:attic")
    removed = parse_config("homeassistant", "homeassistant/sensor/attic/t/config", b"")
    assert removed == Removed("homeassistant/sensor/attic/t/config")
    assert parse_config("homeassistant", "homeassistant/status", b"online") is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"name": "no state topic"}', "no_state_topic"),
        (b'{"stat_t": "a/#"}', "bad_topic"),
        (b'{"stat_t": "a/b", "val_tpl": "{{ \'\'.__class__ }}"}', "unsupported_template"),
        (b'{"stat_t": "a/b", "val_tpl": "{% for x in y %}{% endfor %}"}', "unsupported_template"),
        (b'{"stat_t": "a/b", "exp_aft": "soon"}', "malformed"),
        (b'{"stat_t": "a/b", "dev_cla": "timestamp"}', "not_numeric"),
    ],
)
def test_bad_configs_are_refused_with_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DiscoveryError) as info:
        parse_config("homeassistant", "homeassistant/sensor/x/config", payload)
    assert info.value.reason == reason


def test_refusals_are_counted_and_logged_with_the_topic_and_change_nothing() -> None:
    host = Host()
    d = discovery(host, configured=("kitchen",), discovery_exclude=["zigbee2mqtt_*"])
    feed(d, "esphome")
    before = dict(host.devices)
    with capture_logs() as logs:
        d.handle("homeassistant/sensor/bad/config", b"{oops")
        d.handle("homeassistant/sensor/big/config", b" " * (MAX_CONFIG_BYTES + 1))
        d.handle(
            "homeassistant/sensor/tpl/config",
            b'{"stat_t": "a/b", "val_tpl": "{{ value.__class__ }}"}',
        )
        # Same unique id at another topic: the first one wins.
        topic, payload = messages("esphome")[0]
        d.handle(topic.replace("air_temperature", "copy"), payload)
        feed(d, "device")  # named "kitchen": the configured device wins
        feed(d, "zigbee2mqtt")  # its identifier is excluded
    assert host.devices == before
    assert d.stats.refused == {
        "malformed": 1,
        "too_large": 1,
        "unsupported_template": 1,
        "collision": 1,
    }
    assert (d.stats.overridden, d.stats.excluded) == (2, 6)  # per entity
    refused = [e for e in logs if e["event"] == "discovery config refused"]
    assert {e["topic"] for e in refused} >= {
        "homeassistant/sensor/bad/config",
        "homeassistant/sensor/big/config",
        "homeassistant/sensor/tpl/config",
    }
    [collision] = [e for e in refused if e["reason"] == "collision"]
    assert collision["other_topic"] == topic
    assert sum(e["event"].startswith("discovered device ignored") for e in logs) == 1


def test_two_devices_with_one_name_the_first_wins() -> None:
    host = Host()
    d = discovery(host)
    first = b'{"stat_t": "a/t", "dev": {"ids": "one", "name": "Shed"}}'
    second = b'{"stat_t": "b/t", "dev": {"ids": "two", "name": "shed"}}'
    d.handle("homeassistant/sensor/one/t/config", first)
    with capture_logs() as logs:
        d.handle("homeassistant/sensor/two/t/config", second)
    assert driver_of(host, "shed").options.topics == ["a/t"]
    [event] = logs
    assert event["other_topic"] == "homeassistant/sensor/one/t/config"
    assert event["topic"] == "homeassistant/sensor/two/t/config"


def test_the_cap_counts_the_rest_and_logs_once_a_minute() -> None:
    host = Host()
    d = discovery(host, discovery_max_devices=10)
    with capture_logs() as logs:
        for i in range(1000):
            d.handle(f"homeassistant/sensor/n{i}/t/config", b'{"stat_t": "s/%d"}' % i)
    assert len(host.devices) == 10
    assert d.stats.over_cap == 990
    assert d.stats.devices == 10
    assert sum(e["event"].endswith("discovery_max_devices reached") for e in logs) == 1


def test_accepted_configs_persist_and_come_back(tmp_path: Path) -> None:
    store = DiscoveredStore(tmp_path)
    d = discovery(Host(), store)
    feed(d, "esphome", "tasmota")
    d.handle("homeassistant/binary_sensor/greenhouse/door/config", b"")
    data = store.snapshot()
    assert data is not None
    write_atomic(store.path, data)
    saved = read_discovered(tmp_path)
    assert "homeassistant/binary_sensor/greenhouse/door/config" not in saved["configs"]["default"]
    assert "homeassistant/switch/greenhouse/pump/config" not in saved["configs"]["default"]
    assert saved["devices"]["default"]["bathroom"]["sensors"] == ["AM2301"]
    host = Host()
    again = discovery(host, DiscoveredStore(tmp_path))
    assert again.restore() == 2
    assert sorted(host.devices) == ["bathroom", "greenhouse"]
    assert "state" not in driver_of(host, "greenhouse").units  # the door stayed removed
    # The broker's retained copies of the same configs change nothing.
    calls = list(host.calls)
    feed(again, "tasmota")
    assert host.calls == calls


def test_discovered_driver_topics_are_exact() -> None:
    host = Host()
    feed(discovery(host), "esphome")
    found = driver_of(host, "greenhouse")
    assert isinstance(found, DiscoveredDriver)
    assert found.topic_tags("greenhouse/sensor/air_temperature/state") == {}
    assert found.topic_tags("other/sensor/air_temperature/state") is None


def test_a_newly_configured_name_wins_over_a_discovered_device() -> None:
    host = Host()
    d = discovery(host)
    feed(d, "esphome", "tasmota")
    d.set_configured(["bathroom", "greenhouse"])  # what a reload does
    assert host.devices == {}
    assert d.stats.overridden == 2
    feed(d, "tasmota")  # announced again: still the configured device's name
    assert host.devices == {}


def test_drivers_lists_the_discovered_devices_in_80_columns(tmp_path: Path) -> None:
    store = DiscoveredStore(tmp_path)
    feed(discovery(Host(), store), "esphome", "zigbee2mqtt", "tasmota")
    data = store.snapshot()
    assert data is not None
    write_atomic(store.path, data)
    text = render_discovered(read_discovered(tmp_path)["devices"])
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "  living_room_sensor  (homeassistant on broker default)" in text
    assert "voltage_mv\u00a0[mV]" in text  # a field and its unit are never split
    assert "    sensors: AM2301" in text
    assert "greenhouse/binary_sensor/door/state" in text


def test_a_config_that_moves_its_entity_to_a_new_identifier_keeps_the_device() -> None:
    host = Host()
    d = discovery(host)
    topic = "homeassistant/sensor/porch/t/config"
    d.handle(topic, b'{"stat_t": "porch/t", "dev": {"ids": "old-id", "name": "Porch"}}')
    d.handle(topic, b'{"stat_t": "porch/t2", "dev": {"ids": "new-id", "name": "Porch"}}')
    assert driver_of(host, "porch").options.topics == ["porch/t2"]
    assert host.calls == [("add", "porch"), ("add", "porch")]  # replaced, never removed
    assert d.stats.refused == {}
    d.handle(topic, b"")
    assert host.calls[-1] == ("remove", "porch")
    assert (d.stats.devices, d.stats.removed) == (0, 1)
