"""Topic matching for shared subscriptions and $-topics; two gateways sharing one group."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from gateway_proc import GatewayProcess
from paho.mqtt.enums import CallbackAPIVersion
from servers import Mosquitto, VictoriaMetrics, wait_until
from test_faults import export, influx_sink

from gateway.driver import TopicPattern


def test_a_shared_subscription_matches_its_filter_part() -> None:
    pattern = TopicPattern("$share/gateways/sensors/{room}/state")
    assert pattern.filter == "$share/gateways/sensors/+/state"
    # The broker delivers with the message's own topic, never with $share/...
    assert pattern.match("sensors/kitchen/state") == {"room": "kitchen"}
    assert pattern.match("$share/gateways/sensors/kitchen/state") is None
    assert pattern.match("sensors/kitchen/other") is None


@pytest.mark.parametrize("bad", ["$share/g", "$share//a/b", "$share/g+/a", "$share/g/"])
def test_a_malformed_shared_subscription_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"\$share/<group>/<topic filter>"):
        TopicPattern(bad)


@pytest.mark.parametrize("pattern", ["#", "+/broker/load", "{x}/broker/load", "+/#"])
def test_wildcards_at_the_first_level_never_match_dollar_topics(pattern: str) -> None:
    assert TopicPattern(pattern).match("$SYS/broker/load") is None
    assert TopicPattern(pattern).match("home/broker/load") is not None


def test_dollar_topics_match_when_named() -> None:
    assert TopicPattern("$SYS/broker/#").match("$SYS/broker/load") == {}


# --- two gateway processes in one group, real mosquitto ----------------------------------


MESSAGES = 2000


def _publish(broker: Mosquitto, prefix: str) -> None:
    done = threading.Semaphore(0)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(200)
    client.on_publish = lambda *args: done.release()
    client.connect(broker.host, broker.port, keepalive=30)
    client.loop_start()
    try:
        for seq in range(MESSAGES):
            client.publish(f"{prefix}/d{seq % 10}/state", json.dumps({"seq": seq}), qos=1)
            if seq % 200 == 199:
                time.sleep(0.05)  # a stream, not one burst: both members get turns
        for _ in range(MESSAGES):
            assert done.acquire(timeout=30), "the broker did not take the messages"
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.integration
def test_two_gateways_in_one_share_group_store_every_message_once(
    victoria: VictoriaMetrics,
    mosquitto_factory: Callable[..., Mosquitto],
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    """Arrival time, no device time: a message stored by both members would be two
    points, so "exactly once" is checked for real. Before, every message was counted
    unrouted (matched against the topic including $share/<group>)."""
    broker = mosquitto_factory(extra_conf="max_queued_messages 0\n")
    members: list[GatewayProcess] = []
    for member in ("a", "b"):
        gw = gateway_process(
            {
                "sinks": {"influxdb": influx_sink(victoria.url)},
                "brokers": {
                    "default": {
                        "host": broker.host,
                        "port": broker.port,
                        "client_id": f"{unique_name}-{member}",
                    }
                },
                "devices": {
                    "mq": {
                        "driver": "json",
                        "topics": [f"$share/{unique_name}/{unique_name}/+/state"],
                        "qos": 1,
                        "measurement": unique_name,
                        # One series per member: two members' arrival times may coincide.
                        "tags": {"member": member},
                        "fields": {"seq": {"type": "int"}},
                    }
                },
            },
            name=f"gw-{member}",
        )
        gw.start()
        gw.wait_for_log("connected to MQTT broker")
        members.append(gw)
    _publish(broker, unique_name)

    seqs: Counter[int] = Counter()
    per_member: dict[str, int] = {}

    def all_stored() -> bool:
        seqs.clear()
        per_member.clear()
        for series in export(victoria, f'{{__name__="{unique_name}_seq"}}'):
            values = [int(v) for v in series["values"]]
            per_member[series["metric"]["member"]] = len(values)
            seqs.update(values)
        return sum(seqs.values()) >= MESSAGES

    wait_until(all_stored, timeout=30.0, interval=0.3, what=f"{MESSAGES} points")
    for gw in members:
        assert gw.stop() == 0
    all_stored()
    twice = [seq for seq, n in seqs.items() if n > 1]
    assert not twice, f"stored by both members: {twice[:10]}"
    assert set(seqs) == set(range(MESSAGES))
    assert per_member.keys() == {"a", "b"}, per_member  # both members took a share
    print(f"members stored {per_member}")
