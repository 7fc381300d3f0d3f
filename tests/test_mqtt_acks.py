"""QoS 1 messages are acknowledged only after the spool commit that holds them, in order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gateway_proc import GatewayProcess
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto, VictoriaMetrics
from test_faults import assert_once_and_exact, influx_sink, stored, wait_for_seqs
from test_mqtt_wire import publish

from gateway.app import Gateway
from gateway.config import BrokerSection, config_from_dict
from gateway.delivery.spool import Spool
from gateway.mqtt import wire
from gateway.mqtt.acks import AckWindow
from gateway.mqtt.hub import BrokerStats, MqttHub
from gateway.pipeline.intake import Pipeline


class _Acks:
    def __init__(self) -> None:
        self.sent: list[tuple[int, int]] = []

    def ack(self, mid: int, qos: int) -> None:
        self.sent.append((mid, qos))


async def _spool(tmp_path: Path) -> Spool:
    spool = Spool(tmp_path / "spool.db", ["sink"], commit_interval=60.0)
    await spool.open()
    return spool


async def test_acks_wait_for_the_commit_and_go_out_in_order(tmp_path: Path) -> None:
    spool = await _spool(tmp_path)
    client, stats = _Acks(), BrokerStats()
    window = AckWindow(client, spool, 100, stats)
    try:
        for mid in (1, 2, 3):
            spool.add(f"m v={mid}i")
            window.received(mid, 1)
        assert client.sent == []
        assert stats.unacked == 3
        await spool.commit()
        assert client.sent == [(1, 1), (2, 1), (3, 1)]
        # A message whose readings were rejected waits for the ones before it...
        spool.add("m v=4i")
        window.received(4, 1)
        window.received(5, 1)
        assert client.sent[3:] == []
        await spool.commit()
        assert client.sent[3:] == [(4, 1), (5, 1)]
        # ... and with nothing pending before it, goes out at once.
        window.received(6, 1)
        assert client.sent[5:] == [(6, 1)]
        assert stats.acked == 6
        assert stats.unacked == 0
    finally:
        window.close()
        await spool.close()


async def test_a_failed_commit_acknowledges_nothing(tmp_path: Path) -> None:
    spool = await _spool(tmp_path)
    client = _Acks()
    window = AckWindow(client, spool, 100, BrokerStats())
    try:
        spool.add("m v=1i")
        window.received(1, 1)
        db = spool._db
        assert db is not None
        db.execute("DROP TABLE chunk")  # every commit now fails; the line is requeued
        await spool.commit()
        assert spool.commit_failing
        assert client.sent == []
    finally:
        window.close()
        await spool.close()


async def test_half_the_window_unacknowledged_asks_for_an_early_commit(tmp_path: Path) -> None:
    spool = await _spool(tmp_path)
    stats = BrokerStats()
    window = AckWindow(_Acks(), spool, 20, stats)
    try:
        for mid in range(1, 10):
            spool.add(f"m v={mid}i")
            window.received(mid, 1)
        assert not spool._early.is_set()
        spool.add("m v=10i")
        window.received(10, 1)
        assert spool._early.is_set()
        assert stats.early_commits == 1
    finally:
        window.close()
        await spool.close()


async def test_a_closed_window_never_acknowledges(tmp_path: Path) -> None:
    spool = await _spool(tmp_path)
    client = _Acks()
    window = AckWindow(client, spool, 100, BrokerStats())
    spool.add("m v=1i")
    window.received(1, 1)
    window.close()  # the connection ended: the broker resends, the mid is not ours
    await spool.commit()
    assert client.sent == []
    await spool.close()


# --- against a real mosquitto and the real gateway process ---------------------------------


BACKLOG = 40_000


def _publish_backlog(broker: Mosquitto, topic: str, start_ms: int) -> dict[int, dict[str, float]]:
    """Publish BACKLOG QoS 1 readings and wait until the broker has taken every one."""
    done = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.on_publish = lambda *args: done.release()
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    expected: dict[int, dict[str, float]] = {}
    try:
        for seq in range(BACKLOG):
            value = round(20 + (seq % 997) / 100, 2)
            payload = json.dumps({"seq": seq, "temperature": value, "time": start_ms + seq})
            client.publish(topic, payload, qos=1)
            expected[seq] = {"seq": float(seq), "temperature": value}
        for _ in range(BACKLOG):
            assert done.acquire(timeout=30), "the broker did not take the backlog"
    finally:
        client.loop_stop()
        client.disconnect()
    return expected


@pytest.mark.integration
def test_sigterm_with_a_backlog_loses_nothing_and_the_rest_comes_after_the_next_start(
    victoria: VictoriaMetrics,
    mosquitto_factory: Callable[..., Mosquitto],
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    """40,000 QoS 1 readings wait at the broker; the gateway starts and gets SIGTERM while
    it drains them. Before, paho acknowledged each message as aiomqtt queued it and the
    stop threw the queue away (40,000 queued → 30,196 stored)."""
    broker = mosquitto_factory(persistence=True, extra_conf="max_queued_messages 0\n")
    gw = gateway_process(
        {
            "gateway": {"shutdown_grace": 10.0},
            # An fsync per commit and a 20-message window (a commit every 10 messages):
            # the drain takes seconds, so the stop surely finds most of the backlog
            # still waiting at the broker.
            "spool": {"synchronous": "full"},
            "sinks": {"influxdb": influx_sink(victoria.url)},
            "brokers": {
                "default": {
                    "host": broker.host,
                    "port": broker.port,
                    "client_id": unique_name,
                    "receive_maximum": 20,
                }
            },
            "devices": {
                "mq": {
                    "driver": "json",
                    "topics": [f"{unique_name}/+/state"],
                    "qos": 1,
                    "time_field": "time",
                    "measurement": unique_name,
                    "fields": {"seq": {"type": "int"}},
                }
            },
        }
    )
    gw.start()
    gw.wait_for_log("connected to MQTT broker")  # the persistent session exists
    assert gw.stop() == 0
    expected = _publish_backlog(broker, f"{unique_name}/d0/state", int(time.time() * 1000))

    gw.start(wait_ready=False)
    gw.wait_for_log("connected to MQTT broker", occurrence=2)
    assert gw.stop() == 0
    first = stored(victoria, unique_name)
    assert len(first) < BACKLOG, "the stop came after the backlog was drained"

    gw.start()
    got = wait_for_seqs(victoria, unique_name, set(range(BACKLOG)), timeout=60.0)
    assert gw.stop() == 0
    assert_once_and_exact(got, expected)
    print(f"stored {len(first)} before the stop, the other {BACKLOG - len(first)} after")


@pytest.mark.integration
@pytest.mark.parametrize(
    ("broker_options", "window"),
    [({"protocol": "3.1.1"}, "max_inflight_messages 20\n"), ({"receive_maximum": 20}, "")],
    ids=["mqtt311-broker-window-20", "mqtt5-receive-maximum-20"],
)
async def test_a_small_in_flight_window_does_not_wait_for_the_commit_window(
    tmp_path: Path,
    mosquitto_factory: Callable[..., Mosquitto],
    unique_name: str,
    broker_options: dict[str, Any],
    window: str,
) -> None:
    """2,000 QoS 1 messages through a 20-message window with a 5 s commit window: the
    early commit at 10 unacknowledged keeps them flowing (waiting for the commit window
    would take 2,000 / 20 × 5 s = 500 s)."""
    broker = mosquitto_factory(extra_conf=f"max_queued_messages 0\n{window}")
    gateway = Gateway(
        config_from_dict(
            {
                "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False},
                "spool": {"commit_interval": 5.0},
                "sinks": {"local": {"flush_interval": 0.05}},
                "brokers": {
                    "default": {
                        "host": broker.host,
                        "port": broker.port,
                        "client_id": unique_name,
                        "inflight_window": 20,
                        **broker_options,
                    }
                },
                "devices": {"d": {"driver": "json", "topics": [f"{unique_name}/+"], "qos": 1}},
            }
        )
    )
    task = asyncio.create_task(gateway.run())
    try:
        hub = gateway.hubs["default"]
        async with asyncio.timeout(30):
            while hub.stats.state != "connected":
                await asyncio.sleep(0.02)
            await asyncio.to_thread(_publish, broker, f"{unique_name}/x", 2000)
            while gateway.pipeline.devices["d"].stats.readings < 2000:
                await asyncio.sleep(0.05)
            while hub.stats.acked < 2000:
                await asyncio.sleep(0.05)
        assert hub.stats.early_commits > 0
    finally:
        gateway.stop()
        await task


def _publish(broker: Mosquitto, topic: str, count: int) -> None:
    done = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.on_publish = lambda *args: done.release()
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        for seq in range(count):
            client.publish(topic, json.dumps({"seq": seq}), qos=1)
        for _ in range(count):
            assert done.acquire(timeout=30), "the broker did not take the messages"
    finally:
        client.loop_stop()
        client.disconnect()


async def test_messages_in_the_connacks_own_read_are_acknowledged_after_the_commit(
    tmp_path: Path,
) -> None:
    """A resumed session's in-flight messages may arrive in the same read as the CONNACK.
    Before, they were spooled but never acknowledged: their slots in the in-flight window
    stayed taken and, with a small window, the broker stopped sending for good."""

    received = bytearray()
    acked = asyncio.Event()

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        resent = b"".join(publish(b"dev/a", b'{"t": %d}' % i, 1, i, v5=True) for i in (1, 2))
        writer.write(b"\x20\x02\x01\x00" + resent)  # CONNACK (session present) + PUBLISH
        await writer.drain()
        while True:
            data = await reader.read(1024)
            if not data:
                return
            received.extend(data)
            if data[0] >> 4 == wire.SUBSCRIBE:
                mid = data[2:4]
                writer.write(b"\x90\x04" + mid + b"\x00\x01")  # SUBACK: QoS 1 granted
                await writer.drain()
            if received.count(b"\x40\x02\x00\x02"):
                acked.set()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    spool = await _spool(tmp_path)
    task = None
    try:
        pipeline = Pipeline(spool)
        config = config_from_dict(
            {
                "gateway": {"state_dir": str(tmp_path / "state")},
                "brokers": {"b": {"host": "127.0.0.1", "port": port, "client_id": "c"}},
                "devices": {"d": {"driver": "json", "broker": "b", "topics": ["dev/+"]}},
            }
        )
        hub = MqttHub("b", BrokerSection(host="127.0.0.1", port=port, client_id="c"))
        spec = config.devices["d"]
        driver = spec.build_driver()
        hub.add_device(driver, pipeline.device("d", spec.section))  # type: ignore[arg-type]
        task = asyncio.create_task(hub.run())
        async with asyncio.timeout(10):
            while spool.pending < 2:
                await asyncio.sleep(0.01)
            assert b"\x40\x02\x00\x01" not in received  # not before the commit
            await spool.commit()
            await acked.wait()
        assert received.count(b"\x40\x02\x00\x01") == 1
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server.close()
        await spool.close()
