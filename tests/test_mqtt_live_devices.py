"""Devices added to and removed from a running hub: SUBSCRIBE and UNSUBSCRIBE on the live
connection (real mosquitto), no reconnect."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.publish
import pytest
from servers import HOST, Mosquitto

from gateway.config import BrokerSection, config_from_dict
from gateway.delivery.spool import Spool
from gateway.mqtt.hub import MqttHub
from gateway.pipeline.intake import Pipeline

pytestmark = pytest.mark.integration


async def _until(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Wait for ``predicate`` (``what`` says which in the timeout's traceback)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_devices_come_and_go_on_the_live_connection(
    mosquitto: Mosquitto, tmp_path: Path, unique_name: str
) -> None:
    u = unique_name
    spool = Spool(tmp_path / "spool.db", ["sink"], commit_interval=0.02)
    await spool.open()
    pipeline = Pipeline(spool)
    heard: list[tuple[str, bytes]] = []
    broker = BrokerSection(host=HOST, port=mosquitto.port, client_id=f"gw-{u}")
    hub = MqttHub("b", broker, spool=spool)
    hub.add_listener(f"{u}/control/#", lambda t, p: heard.append((t, p)))
    config = config_from_dict(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "brokers": {"b": {"host": HOST, "port": mosquitto.port}},
            "devices": {"late": {"driver": "json", "broker": "b", "topics": [f"{u}/late/+"]}},
        }
    )
    spec = config.devices["late"]

    def publish(topic: str, payload: str) -> None:
        paho.mqtt.publish.single(
            topic, payload, qos=1, hostname=HOST, port=mosquitto.port, client_id=f"pub-{u}"
        )

    tasks = [asyncio.create_task(hub.run()), asyncio.create_task(spool.run_commits())]
    try:
        await _until(lambda: hub.stats.state == "connected", "connected")
        assert hub.stats.subscriptions == [f"{u}/control/#"]
        entry = pipeline.device("late", spec.section)
        hub.add_device(spec.build_driver(), entry)  # type: ignore[arg-type]
        await _until(lambda: f"{u}/late/+" in hub.stats.subscriptions, "subscribed")
        await asyncio.to_thread(publish, f"{u}/late/a", '{"t": 1}')
        await _until(lambda: entry.stats.readings == 1, "the reading")
        assert hub.remove_device("late") is entry
        await _until(lambda: f"{u}/late/+" not in hub.stats.subscriptions, "unsubscribed")
        # Ordered on one connection: once the marker arrives, the broker did not send the
        # removed device's message (it would count as a message, unrouted).
        messages = hub.stats.messages
        await asyncio.to_thread(publish, f"{u}/late/a", '{"t": 2}')
        await asyncio.to_thread(publish, f"{u}/control/marker", "x")
        await _until(lambda: heard, "the marker")
        assert heard == [(f"{u}/control/marker", b"x")]
        assert hub.stats.messages == messages + 1
        assert entry.stats.readings == 1
        assert hub.stats.connects == 1  # no reconnect for any of it
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await spool.close()
