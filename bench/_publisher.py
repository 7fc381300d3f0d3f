"""The W1 publisher, run as its own process by ``bench/pipeline.py``.

Builds every message first, connects, prints ``ready``, waits for a line on stdin, then
publishes as fast as paho and the broker allow and prints one JSON line with its
timings (``time.monotonic()``, which is system-wide on Linux, so the parent can compare).

Each of the ``--devices`` sensors publishes ``{"temperature":…,"humidity":…,"pressure":…,
"ts":…}`` on ``<prefix>/sensor-<i>/state``; ``ts`` (epoch µs) advances 1 ms per message
of a device, so no two readings of a series share a millisecond (VictoriaMetrics keeps
one point per series and ms).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def build(
    n: int, devices: int, prefix: str, shard: int = 0, shards: int = 1
) -> list[tuple[str, bytes]]:
    """Messages ``0 … n-1`` round-robin over the devices; of those, the ones of this shard's
    devices (device % shards == shard)."""
    base_us = time.time_ns() // 1000
    topics = [f"{prefix}/sensor-{d}/state" for d in range(devices)]
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        device, seq = i % devices, i // devices
        if device % shards != shard:
            continue
        body = {
            "temperature": round(18.0 + (i % 997) / 100.0, 2),
            "humidity": round(35.0 + (i % 613) / 20.0, 1),
            "pressure": round(990.0 + (i % 409) / 10.0, 1),
            "ts": base_us + seq * 1000,
        }
        out.append((topics[device], json.dumps(body, separators=(",", ":")).encode()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--qos", type=int, choices=(0, 1), default=0)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--prefix", default="bench")
    ap.add_argument("--inflight", type=int, default=1000)
    ap.add_argument("--shard", type=int, default=0)
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args()

    messages = build(args.messages, args.devices, args.prefix, args.shard, args.shards)
    acked = 0
    all_acked = threading.Event()
    # QoS 1: at most --inflight messages unacknowledged. Bounded here, not with paho's
    # max_inflight_messages_set(): paho's queue rescans every in-flight message on each
    # PUBACK, and more than 65,535 queued messages would reuse message ids.
    window = threading.BoundedSemaphore(args.inflight)
    connected = threading.Event()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        connected.set()

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        nonlocal acked
        acked += 1
        window.release()
        if acked >= len(messages):
            all_acked.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-publisher-{args.shard}",
        protocol=mqtt.MQTTv311,
    )
    client.max_inflight_messages_set(0)  # no limit in paho: the window above bounds it
    client.max_queued_messages_set(0)
    client.on_connect = on_connect
    if args.qos:
        client.on_publish = on_publish
    client.connect("127.0.0.1", args.port, keepalive=120)
    client.loop_start()
    if not connected.wait(10):
        print(json.dumps({"error": "publisher could not connect"}), flush=True)
        return 1
    print("ready", flush=True)
    sys.stdin.readline()

    cpu0 = time.process_time()
    t0 = time.monotonic()
    info = None
    qos = args.qos
    publish = client.publish
    if qos:
        acquire = window.acquire
        for topic, payload in messages:
            acquire()
            info = publish(topic, payload, qos)
    else:
        for topic, payload in messages:
            info = publish(topic, payload, qos)
    t_queued = time.monotonic()
    assert info is not None
    if qos:
        all_acked.wait(600)
    else:
        info.wait_for_publish(600)
    t1 = time.monotonic()
    cpu1 = time.process_time()
    client.disconnect()
    client.loop_stop()
    print(
        json.dumps(
            {
                "t_start": t0,
                "t_queued": t_queued,
                "t_end": t1,
                "published": len(messages),
                "acked": acked if qos else None,
                "cpu_s": round(cpu1 - cpu0, 3),
                "example": messages[0][1].decode(),
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
