"""MQTT broker problems: wrong credentials, broker restarts — against a real mosquitto."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from servers import MosquittoFactory
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.config import config_from_dict

pytestmark = pytest.mark.integration

DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


def _config(tmp_path: Path, port: int, topic: str, **broker: Any) -> Any:
    return config_from_dict(
        {
            "gateway": {
                "state_dir": str(tmp_path / "state"),
                "clock_sync_check": False,
                "shutdown_grace": 1.0,
            },
            "spool": {"commit_interval": 0.05},
            "sinks": {"local": {"flush_interval": 0.05}},
            "brokers": {
                "home": {
                    "host": "127.0.0.1",
                    "port": port,
                    "reconnect_initial": 0.05,
                    "reconnect_max": 0.2,
                    **broker,
                }
            },
            "devices": {
                "room": {"driver": "json", "broker": "home", "topics": [f"{topic}/{{room}}"]}
            },
        }
    )


async def _publish(port: int, topic: str, payload: bytes, **auth: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, **auth) as client:
        await client.publish(topic, payload, qos=1)


async def test_wrong_password_is_a_clear_error_naming_the_broker_and_never_the_password(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory(username="gw", password="right-secret")
    secret_file = tmp_path / "mqtt.password"
    secret_file.write_text("wrong-secret\n")
    gateway = Gateway(
        _config(tmp_path, broker.port, unique_name, username="gw", password_file=str(secret_file))
    )
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        hub = gateway.hubs["home"]
        await _until(lambda: hub.stats.state == "disconnected" and hub.stats.last_error != "")
        gateway.stop()
        await task
    failures = [e for e in logs if e["event"] == "MQTT broker unreachable; reconnecting"]
    assert failures
    assert failures[0]["broker"] == "home"
    assert failures[0]["address"] == f"127.0.0.1:{broker.port}"
    assert "check brokers.*.username / password / password_file" in failures[0]["error"]
    assert "secret" not in repr(logs)


async def test_the_right_password_connects_and_readings_flow(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory(username="gw", password="right-secret")
    gateway = Gateway(
        _config(tmp_path, broker.port, unique_name, username="gw", password="right-secret")
    )
    task = asyncio.create_task(gateway.run())
    try:
        hub = gateway.hubs["home"]
        await _until(lambda: hub.stats.state == "connected")
        await _publish(
            broker.port,
            f"{unique_name}/kitchen",
            b'{"t": 21.5}',
            username="gw",
            password="right-secret",
        )
        await _until(lambda: gateway.pipeline.devices["room"].stats.readings == 1)
    finally:
        gateway.stop()
        await task


async def test_broker_kill_loses_the_session_resubscribes_and_reports_the_gap(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory()  # no persistence: a kill -9 forgets every session
    gateway = Gateway(_config(tmp_path, broker.port, unique_name))
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:
            hub = gateway.hubs["home"]
            await _until(lambda: hub.stats.state == "connected")
            await asyncio.to_thread(broker.kill)
            await _until(lambda: hub.stats.state == "disconnected")
            await asyncio.to_thread(broker.restart)
            await _until(lambda: hub.stats.state == "connected" and hub.stats.connects == 2)
            await _publish(broker.port, f"{unique_name}/hall", b'{"t": 19.0}')
            await _until(lambda: gateway.pipeline.devices["room"].stats.readings == 1)
        finally:
            gateway.stop()
            await task
    assert hub.stats.sessions_lost == 1
    gaps = [e for e in logs if e["event"].startswith("MQTT broker did not keep our session")]
    assert len(gaps) == 1
    assert gaps[0]["broker"] == "home"
    assert gaps[0]["gap_s"] >= 0


async def test_persistent_session_keeps_messages_published_while_the_gateway_was_away(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory(persistence=True)
    config = _config(tmp_path, broker.port, unique_name, client_id=f"gw-{unique_name}")
    gateway = Gateway(config)
    task = asyncio.create_task(gateway.run())
    await _until(lambda: gateway.hubs["home"].stats.state == "connected")
    gateway.stop()
    await task
    # The gateway is away: the broker queues QoS 1 messages for its session.
    for i in range(5):
        await _publish(broker.port, f"{unique_name}/attic", b'{"seq": %d}' % i)
    # ... also across a broker restart, once it saved its state.
    await asyncio.to_thread(broker.wait_for_autosave)
    await asyncio.to_thread(broker.kill)
    await asyncio.to_thread(broker.restart)
    gateway = Gateway(config)
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:
            await _until(lambda: gateway.pipeline.devices["room"].stats.readings == 5)
        finally:
            gateway.stop()
            await task
    connected = [e for e in logs if e["event"] == "connected to MQTT broker"]
    assert connected[0]["session_present"] is True


def _dynsec_config(path: Path, prefix: str) -> None:
    """mosquitto's dynamic-security plugin file: user gw/pw may publish and subscribe under
    ``prefix/open/`` only. (mosquitto's plain acl_file never refuses a SUBSCRIBE; it
    filters deliveries instead, so the client is never told.)"""
    subprocess.run(
        [
            shutil.which("mosquitto_ctrl") or "mosquitto_ctrl",
            "dynsec",
            "init",
            str(path),
            "gw",
            "pw",
        ],
        check=True,
        capture_output=True,
    )
    doc = json.loads(path.read_text())
    doc["roles"][0]["acls"] = [
        {"acltype": kind, "topic": f"{prefix}/open/#", "allow": True}
        for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")
    ]
    path.write_text(json.dumps(doc))


async def test_a_subscription_the_broker_refuses_makes_that_device_refused_with_the_reason(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    dynsec = tmp_path / "dynsec.json"
    _dynsec_config(dynsec, unique_name)
    broker = mosquitto_factory(
        extra_conf=(
            f"allow_anonymous false\nplugin {DYNSEC_PLUGIN}\nplugin_opt_config_file {dynsec}\n"
        )
    )
    config = config_from_dict(
        {
            "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False},
            "sinks": {"local": {"flush_interval": 0.05}},
            "brokers": {
                "home": {
                    "host": "127.0.0.1",
                    "port": broker.port,
                    "username": "gw",
                    "password": "pw",
                }
            },
            "devices": {
                "open": {"driver": "json", "broker": "home", "topics": [f"{unique_name}/open/+"]},
                "closed": {
                    "driver": "json",
                    "broker": "home",
                    "topics": [f"{unique_name}/closed/+"],
                },
            },
        }
    )
    gateway = Gateway(config)
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:
            hub = gateway.hubs["home"]
            await _until(lambda: hub.stats.state == "connected")
            await _publish(
                broker.port, f"{unique_name}/open/a", b'{"t": 1}', username="gw", password="pw"
            )
            await _until(lambda: gateway.pipeline.devices["open"].stats.readings == 1)
        finally:
            gateway.stop()
            await task
    closed = gateway.pipeline.devices["closed"].stats
    assert closed.state == "refused"
    assert "Not authorized" in closed.last_error
    assert f"{unique_name}/closed/+" in closed.last_error
    assert gateway.pipeline.devices["open"].stats.state != "refused"
    assert hub.stats.refused == {f"{unique_name}/closed/+": "Not authorized"}
    refusals = [e for e in logs if e["event"] == "MQTT broker refused a subscription"]
    assert [(e["device"], e["reason"]) for e in refusals] == [("closed", "Not authorized")]


async def test_a_client_id_takeover_is_reported_and_counted(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory()
    gateway = Gateway(_config(tmp_path, broker.port, unique_name, client_id=unique_name))
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:
            hub = gateway.hubs["home"]
            await _until(lambda: hub.stats.state == "connected")
            # Another client with the same id, again and again: the broker hands it our
            # session each time (mosquitto 2.0 just closes our connection).
            for _ in range(8):
                with contextlib.suppress(aiomqtt.MqttError):
                    async with aiomqtt.Client(
                        "127.0.0.1",
                        broker.port,
                        identifier=unique_name,
                        protocol=aiomqtt.ProtocolVersion.V5,
                        clean_start=False,
                    ):
                        await asyncio.sleep(0.3)
                if hub.stats.takeovers:
                    break
                await _until(lambda: hub.stats.state == "connected")
            assert hub.stats.takeovers >= 1
        finally:
            gateway.stop()
            await task
    events = [e for e in logs if e["event"].startswith("MQTT session taken over")]
    assert events
    assert events[0]["log_level"] == "error"
    assert "client_id must be unique" in events[0]["error"]


async def test_a_silent_device_with_stale_after_goes_stale_and_back(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory()
    config = config_from_dict(
        {
            "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False},
            "sinks": {"local": {"flush_interval": 0.05}},
            "brokers": {"home": {"host": "127.0.0.1", "port": broker.port}},
            "devices": {
                "quiet": {
                    "driver": "json",
                    "broker": "home",
                    "topics": [f"{unique_name}/q"],
                    "stale_after": 0.5,
                }
            },
        }
    )
    gateway = Gateway(config)
    task = asyncio.create_task(gateway.run())
    try:
        stats = gateway.pipeline.devices["quiet"].stats
        await _until(lambda: stats.stale)
        await _publish(broker.port, f"{unique_name}/q", b'{"t": 1}')
        await _until(lambda: not stats.stale)
    finally:
        gateway.stop()
        await task


async def test_messages_the_broker_dropped_while_we_were_away_are_reported_and_counted(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    """mosquitto with its default queue limit (1000), gateway away, 1,500 QoS 1 published:
    500 are dropped by the broker. Before, the gateway logged a normal reconnect."""
    broker = mosquitto_factory(extra_conf="max_queued_messages 1000\nsys_interval 1\n")
    config = _config(tmp_path, broker.port, unique_name, client_id=unique_name)
    gateway = Gateway(config)
    task = asyncio.create_task(gateway.run())
    try:
        hub = gateway.hubs["home"]
        await _until(lambda: hub.stats.broker_dropped is not None)  # the counter before
    finally:
        gateway.stop()
        await task
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.max_inflight_messages_set(100)
    await asyncio.to_thread(client.connect, "127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = [client.publish(f"{unique_name}/attic", b'{"t": 1}', qos=1) for _ in range(1500)]
        await asyncio.to_thread(lambda: [i.wait_for_publish(10) for i in infos])
    finally:
        client.loop_stop()
        client.disconnect()
    await asyncio.sleep(2.5)  # the broker updates $SYS every sys_interval
    gateway = Gateway(config)
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:
            hub = gateway.hubs["home"]
            await _until(lambda: hub.stats.possible_loss >= 1, timeout=15)
            await _until(lambda: gateway.pipeline.devices["room"].stats.readings == 1000)
        finally:
            gateway.stop()
            await task
    events = [e for e in logs if "possible loss" in e["event"]]
    assert len(events) == 1
    assert events[0]["dropped"] == 500
    assert events[0]["evidence"] == "$SYS/broker/publish/messages/dropped"


async def test_filters_no_device_uses_any_more_are_unsubscribed(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    """The persistent session keeps an old configuration's subscriptions; without the
    unsubscribe their messages keep arriving (counted unrouted) and queue while away."""
    broker = mosquitto_factory()
    old = _config(tmp_path, broker.port, f"{unique_name}/old", client_id=unique_name)
    gateway = Gateway(old)
    task = asyncio.create_task(gateway.run())
    try:
        await _until(lambda: gateway.hubs["home"].stats.state == "connected")
    finally:
        gateway.stop()
        await task
    gateway = Gateway(_config(tmp_path, broker.port, f"{unique_name}/new", client_id=unique_name))
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:
            hub = gateway.hubs["home"]
            await _until(lambda: hub.stats.state == "connected")
            await _publish(broker.port, f"{unique_name}/old/x", b'{"t": 1}')
            await _publish(broker.port, f"{unique_name}/new/x", b'{"t": 2}')
            await _until(lambda: gateway.pipeline.devices["room"].stats.readings == 1)
            await asyncio.sleep(0.2)
        finally:
            gateway.stop()
            await task
    assert hub.stats.unrouted == 0
    gone = [e for e in logs if e["event"].startswith("unsubscribed topic filters")]
    assert [e["filters"] for e in gone] == [[f"{unique_name}/old/+"]]


async def test_away_longer_than_the_broker_queue_holds_at_the_usual_rate_is_reported(
    tmp_path: Path,
    mosquitto_factory: MosquittoFactory,
    unique_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Evidence for brokers without mosquitto's $SYS counter: the rate before the gateway
    stopped x the time away > the broker's queue limit."""
    monkeypatch.setattr("gateway.mqtt.hub.RATE_WINDOW_S", 0.5)
    monkeypatch.setattr("gateway.mqtt.hub.STALE_CHECK_S", 0.1)
    broker = mosquitto_factory(extra_conf="sys_interval 0\n")
    config = _config(
        tmp_path, broker.port, unique_name, client_id=unique_name, broker_queue_limit=50
    )
    gateway = Gateway(config)
    task = asyncio.create_task(gateway.run())
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    await asyncio.to_thread(client.connect, "127.0.0.1", broker.port)
    client.loop_start()
    try:
        hub = gateway.hubs["home"]
        await _until(lambda: hub.stats.state == "connected")
        for _ in range(40):  # ~200 messages/s for 2 s
            for _ in range(10):
                client.publish(f"{unique_name}/attic", b'{"t": 1}', qos=1)
            await asyncio.sleep(0.05)
    finally:
        gateway.stop()
        await task
        client.loop_stop()
        client.disconnect()
    await asyncio.sleep(1.0)  # away: at ~200/s the broker would need ~200 places > 50
    gateway = Gateway(config)
    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run())
        try:
            hub = gateway.hubs["home"]
            await _until(lambda: hub.stats.state == "connected")
        finally:
            gateway.stop()
            await task
    assert hub.stats.possible_loss == 1
    (event,) = [e for e in logs if e["event"].startswith("away longer than")]
    assert event["broker_queue_limit"] == 50
    assert event["estimated_queued"] > 50
