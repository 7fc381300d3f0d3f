"""The ``json`` driver: data-driven cases, recorded real-world payloads, hostile input, broker."""

from __future__ import annotations

import asyncio
import json
import math
import time
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any, get_args

import aiomqtt
import pytest
from driver_cases.cases import Case, cases, run
from servers import HOST, Mosquitto

from devices.json import JsonDriver, JsonOptions
from devices.json.simulator import HOSTILE_PAYLOADS, JsonPublisher, Shape
from gateway.config import config_from_dict
from gateway.driver import RawSample, RejectedInput
from gateway.errors import ConfigError

REPO = Path(__file__).parents[1]
# Recorded payloads, copied from the shared data set (see tests/data/README.md).
RECORDED_PAYLOADS = Path(__file__).parent / "data" / "mqtt" / "payloads.jsonl"


@pytest.mark.parametrize("case", cases("json"))
def test_case(case: Case) -> None:
    run(case, JsonDriver)


def _driver(**options: Any) -> JsonDriver:
    return JsonDriver("dev", JsonOptions.model_validate(options))


# -- recorded payloads through the sample configuration -----------------------------------

# (source, topic) → the sample device that takes it and what comes out: a field that must
# be there, "ignored", or None when no sample device subscribes to the topic.
_EXPECTED_SAMPLE_OUTCOMES: dict[tuple[str, str], tuple[str | None, str | None]] = {
    ("tasmota", "tele/bathroom/SENSOR"): ("tasmota", "AM2301.Temperature"),
    ("tasmota", "tele/plug_35EBF6/SENSOR"): ("tasmota", "ENERGY.Power"),
    ("tasmota", "tele/ble_bridge/SENSOR"): ("tasmota", "DS18B20-1.Temperature"),
    ("tasmota", "tele/bathroom/STATE"): ("tasmota", "ignored"),
    ("tasmota", "tele/bathroom/LWT"): ("tasmota", "ignored"),
    ("zigbee2mqtt", "zigbee2mqtt/living_room_sensor"): ("zigbee", "temperature"),
    ("zigbee2mqtt", "zigbee2mqtt/kitchen_plug"): ("zigbee", "power"),
    ("zigbee2mqtt", "zigbee2mqtt/kitchen_plug/availability"): (None, None),
    ("zigbee2mqtt", "zigbee2mqtt/bridge/state"): (None, None),
    ("esphome", "greenhouse/sensor/soil_moisture/state"): ("greenhouse", "soil_moisture"),
    ("esphome", "greenhouse/sensor/air_temperature/state"): ("greenhouse", "air_temperature"),
    ("esphome", "greenhouse/status"): (None, None),
    ("shelly-gen2", "shellyplusht-c049ef8b3a44/status/temperature:0"): ("shelly", "tC"),
    ("shelly-gen2", "shellyplusht-c049ef8b3a44/status/humidity:0"): ("shelly", "rh"),
    ("shelly-gen2", "shellyplus1pm-a8032ab12345/status/switch:0"): ("shelly", "apower"),
    ("generic", "sensors/boiler-01/state"): ("boilers", "temperature"),
}


def _sample_drivers() -> dict[str, JsonDriver]:
    with (REPO / "devices" / "json" / "sample.toml").open("rb") as fh:
        raw = tomllib.load(fh)
    raw["brokers"] = {"default": {"host": "localhost"}}
    config = config_from_dict(raw, env={})
    drivers = {}
    for name, spec in config.devices.items():
        driver = spec.build_driver()
        assert isinstance(driver, JsonDriver)
        drivers[name] = driver
    return drivers


def test_recorded_payloads_decode_with_the_sample_config() -> None:
    """Every recorded Tasmota/Zigbee2MQTT/ESPHome/Shelly payload ends up where it should."""
    drivers = _sample_drivers()
    messages = [json.loads(line) for line in RECORDED_PAYLOADS.read_text().splitlines() if line]
    assert len(messages) >= 15
    for msg in messages:
        topic, payload = msg["topic"], msg["payload"].encode()
        device, outcome = _EXPECTED_SAMPLE_OUTCOMES[msg["source"], topic]
        takers = [n for n, d in drivers.items() if d.topic_tags(topic) is not None]
        assert takers == ([device] if device else []), topic
        if device is None:
            continue
        samples = list(drivers[device].decode(topic, payload))  # never raises for these
        if outcome == "ignored":
            assert samples == [], topic
        else:
            (sample,) = samples
            assert outcome in sample.fields, (topic, sample)


def test_esphome_nan_reaches_the_normalizer_as_nan() -> None:
    """The driver passes ESPHome's "nan" on; dropping it (reason nan) is the core's job."""
    (sample,) = _sample_drivers()["greenhouse"].decode(
        "greenhouse/sensor/air_temperature/state", b"nan"
    )
    assert math.isnan(sample.fields["air_temperature"])  # type: ignore[arg-type]


def test_tasmota_time_is_read_as_utc() -> None:
    (sample,) = _sample_drivers()["tasmota"].decode(
        "tele/bathroom/SENSOR", b'{"Time":"2026-11-20T13:44:23","AM2301":{"Temperature":22.1}}'
    )
    assert sample.time_ns == 1795182263 * 10**9
    assert sample.tags == {"room": "bathroom"}
    assert "Time" not in sample.fields


# -- hostile payloads ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(HOSTILE_PAYLOADS))
def test_hostile_payloads_are_rejected_or_passed_as_nan(name: str) -> None:
    """Nothing but RejectedInput escapes, quickly, and non-finite numbers stay floats."""
    driver = _driver(topics=["hostile/{sensor}"])
    start = time.perf_counter()
    outcome: list[RawSample] | RejectedInput
    try:
        outcome = list(driver.decode("hostile/a", HOSTILE_PAYLOADS[name]))
    except RejectedInput as err:
        outcome = err
    assert time.perf_counter() - start < 1.0
    if isinstance(outcome, RejectedInput):
        assert outcome.reason in {"malformed", "encoding", "not_object", "empty"}, outcome
        assert len(str(outcome)) < 300
    else:
        (sample,) = outcome
        assert not math.isfinite(_num(sample, "temperature"))


def test_hostile_payload_reasons() -> None:
    driver = _driver(topics=["h"])
    reasons = {}
    for name, payload in HOSTILE_PAYLOADS.items():
        try:
            driver.decode("h", payload)
        except RejectedInput as err:
            reasons[name] = err.reason
    assert reasons == {
        "deep_nesting": "malformed",
        "invalid_utf8": "encoding",
        "plain_text": "malformed",
        "huge_int": "malformed",
        "not_object": "not_object",
        "empty": "empty",
    }


def test_options_are_checked_in_the_constructor_too() -> None:
    bad = JsonOptions.model_construct(topics=["a/b"], select=["ts"], time_field="ts")
    with pytest.raises(ValueError, match='"ts" is both in select and time_field'):
        JsonDriver("dev", bad)
    bad = JsonOptions.model_construct(topics=["a/+"], value_field="{x}")
    with pytest.raises(ValueError, match="has no such named segment"):
        JsonDriver("dev", bad)


@pytest.mark.parametrize(
    ("options", "path", "message"),
    [
        (
            {"topics": ["a/+/state"], "value_field": "{sensor}"},
            "devices.j.value_field",
            "no such named segment",
        ),
        ({"topics": ["a/b"], "select": ["x..y"]}, "devices.j.select", "empty segment"),
        ({"topics": ["a/#/b"]}, "devices.j.topics[0]", '"#" must be the last level'),
        ({"topics": ["a"], "ignore_topics": ["a+"]}, "devices.j.ignore_topics", "whole level"),
        ({"topics": ["a"], "tags_from_payload": {"t": ""}}, "devices.j.tags_from_payload", ""),
        ({"topics": ["a"], "fields": ["t"]}, "devices.j.fields", "expected a table"),
    ],
)
def test_config_errors_carry_the_option_path(
    options: dict[str, Any], path: str, message: str
) -> None:
    raw = {
        "brokers": {"default": {"host": "localhost"}},
        "devices": {"j": {"driver": "json", **options}},
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, env={})
    assert any(p == path and message in m for p, m in info.value.problems), info.value.problems


# -- the publisher simulator --------------------------------------------------------------


@pytest.mark.parametrize("shape", get_args(Shape))
def test_publisher_messages_decode_with_its_options(shape: Shape) -> None:
    pub = JsonPublisher(devices=3, prefix="t1", shape=shape, seed=5)
    driver = JsonDriver("sim", JsonOptions.model_validate(pub.options()))
    seqs: dict[str, list[object]] = defaultdict(list)
    for topic, payload in pub.messages(30):
        (sample,) = driver.decode(topic, payload)
        seqs[sample.tags["sensor"]].append(sample.fields["seq"])
        assert 18.0 <= _num(sample, "temperature", "AM2301.Temperature") <= 24.0
        if shape != "zigbee2mqtt":
            assert sample.time_ns is not None
            assert abs(sample.time_ns - time.time_ns()) < 60 * 10**9
    assert seqs == {f"sensor-{i}": list(range(10)) for i in range(3)}
    if shape == "tasmota":
        assert list(driver.decode(*pub.lwt("sensor-0", online=False))) == []


def _num(sample: RawSample, *names: str) -> float:
    for name in names:
        if name in sample.fields:
            return float(sample.fields[name])  # type: ignore[arg-type]
    raise AssertionError(f"none of {names} in {sample.fields}")


def test_publisher_times_are_unique_per_device() -> None:
    pub = JsonPublisher(devices=1, shape="flat")
    driver = JsonDriver("sim", JsonOptions.model_validate(pub.options()))
    times = [s.time_ns for t, p in pub.messages(500) for s in driver.decode(t, p)]
    assert len(set(times)) == 500


# -- through a real broker ----------------------------------------------------------------


@pytest.mark.integration
async def test_through_mosquitto(mosquitto: Mosquitto, unique_name: str) -> None:
    """The driver's subscriptions receive what the simulator publishes; decode keeps up."""
    pub = JsonPublisher(devices=2, prefix=unique_name, shape="tasmota", seed=1)
    driver = JsonDriver("sim", JsonOptions.model_validate(pub.options()))
    seqs: dict[str, list[object]] = defaultdict(list)
    ignored = 0
    async with (
        aiomqtt.Client(HOST, mosquitto.port, identifier=f"{unique_name}-sub") as sub,
        aiomqtt.Client(HOST, mosquitto.port, identifier=f"{unique_name}-pub") as pub_client,
    ):
        for topic_filter in driver.subscriptions():
            await sub.subscribe(topic_filter, qos=1)
        await pub_client.publish(*pub.lwt("sensor-0"), qos=1)
        for topic, payload in pub.messages(40):
            await pub_client.publish(topic, payload, qos=1)
        async with asyncio.timeout(10):
            async for message in sub.messages:
                assert isinstance(message.payload, bytes)
                samples = list(driver.decode(message.topic.value, message.payload))
                if not samples:
                    ignored += 1
                for sample in samples:
                    seqs[sample.tags["sensor"]].append(sample.fields["seq"])
                if sum(map(len, seqs.values())) == 40:
                    break
    assert ignored == 1
    assert seqs == {"sensor-0": list(range(20)), "sensor-1": list(range(20))}
