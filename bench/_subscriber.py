"""Baseline subscribers for ``bench/pipeline.py --baselines``: count messages, nothing else.

``paho``: paho-mqtt's own network loop (``loop_forever``) and an ``on_message`` that
counts. ``aiomqtt``: ``async for message in client.messages`` counting, as the gateway's
MQTT hub receives. Prints ``ready`` once subscribed, then one JSON line when ``--messages``
arrived (timings are ``time.monotonic()``, comparable with the publisher's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def report(first: float, last: float, n: int, cpu: float) -> None:
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork + exec.
    rss_kib = next(
        int(line.split()[1])
        for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith("VmHWM:")
    )
    print(json.dumps({"t_first": first, "t_last": last, "received": n,
                      "cpu_s": round(cpu, 3), "peak_rss_mb": round(rss_kib / 1024, 1)}),
          flush=True)  # fmt: skip


def run_paho(port: int, topic: str, qos: int, n: int) -> None:
    count = 0
    first = 0.0
    cpu0 = 0.0

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(topic, qos)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        nonlocal cpu0
        cpu0 = time.process_time()
        print("ready", flush=True)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        nonlocal count, first
        if count == 0:
            first = time.monotonic()
        count += 1
        if count >= n:
            report(first, time.monotonic(), count, time.process_time() - cpu0)
            client.disconnect()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho-sub")
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()


async def run_aiomqtt(port: int, topic: str, qos: int, n: int) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-aiomqtt-sub") as client:
        await client.subscribe(topic, qos=qos)
        cpu0 = time.process_time()
        print("ready", flush=True)
        count = 0
        first = 0.0
        async for _message in client.messages:
            if count == 0:
                first = time.monotonic()
            count += 1
            if count >= n:
                break
        report(first, time.monotonic(), count, time.process_time() - cpu0)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=("paho", "aiomqtt"))
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--qos", type=int, default=0)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--topic", default="bench/+/state")
    args = ap.parse_args()
    if args.kind == "paho":
        run_paho(args.port, args.topic, args.qos, args.messages)
    else:
        asyncio.run(run_aiomqtt(args.port, args.topic, args.qos, args.messages))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
