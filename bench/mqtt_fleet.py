"""The serial fleet's load over MQTT: what the same 500 readings/s cost when they come
from a broker.

``serial_fleet.py`` measures 50 devices × 10 Hz on pseudo-terminals; ``pipeline.py``
measures the MQTT path flat out (tens of thousands of messages a second, where every
wake-up of the gateway brings a full batch). This runs the MQTT path at the serial
fleet's rate: 50 ``json`` devices, each publishing ``{"seq":…,"t":21.5}`` at 10 Hz, all
in step (every device's message of a period at once), to a real mosquitto; the gateway
(``run_gateway``, default settings, local store, as in ``serial_fleet.py``) subscribed
at ``--qos`` (1 by default: acknowledged after the spool commit). Over ``--seconds``
(15) it measures the gateway's CPU per reading, by thread with its wake-ups, and RSS;
after a graceful stop the local store must hold every reading exactly once.

The floor is paho-mqtt's own loop subscribed to the same topics at the same QoS,
counting messages and nothing else, in the same run. Compare the result with
``serial_fleet.py``'s ``stream-50`` (its floor reads the ptys and counts).

    python bench/mqtt_fleet.py
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _common import (
    ROOT,
    machine,
    run_seconds,
    status_kib,
    thread_activity,
    thread_share,
    thread_summary,
    use_test_helpers,
    wait_quiet,
    write_result,
)
from paho.mqtt.enums import CallbackAPIVersion
from pipeline import QuietMosquitto
from serial_fleet import PY, SETTLE_S, _stored

use_test_helpers()

HERE = Path(__file__).resolve().parent
RATE_HZ = 10.0


class Publisher(threading.Thread):
    """Every device's message of a period at once, ``RATE_HZ`` periods a second."""

    def __init__(self, port: int, devices: int, qos: int) -> None:
        super().__init__(daemon=True)
        self.devices = devices
        self.qos = qos
        self.sent = [0] * devices
        self.halt = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fleet-publisher")
        self.client.max_inflight_messages_set(10_000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def run(self) -> None:
        start = time.monotonic()
        period = 0
        while not self.halt.is_set():
            for d in range(self.devices):
                payload = f'{{"seq":{period},"t":21.5}}'
                self.client.publish(f"fleet/d{d:03}/state", payload, self.qos)
                self.sent[d] += 1
            period += 1
            self.halt.wait(max(0.0, start + period / RATE_HZ - time.monotonic()))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(tmp: Path, port: int, devices: int, qos: int) -> Path:
    config = {
        "gateway": {"state_dir": str(tmp / "state"), "clock_sync_check": False},
        "brokers": {"default": {"host": "127.0.0.1", "port": port, "client_id": "fleet-gw"}},
        "sinks": {"local": {"enabled": True}},
        "devices": {
            f"d{i:03}": {"driver": "json", "topics": [f"fleet/d{i:03}/state"], "qos": qos}
            for i in range(devices)
        },
    }
    path = tmp / "gateway.json"
    path.write_text(json.dumps(config))
    return path


def _publish_for(port: int, devices: int, qos: int, seconds: float, pid: int) -> dict[str, Any]:
    """Publish for ``seconds``; the CPU and threads of process ``pid`` over that window."""
    publisher = Publisher(port, devices, qos)
    try:
        time.sleep(0.5)  # connected
        cpu0, t0 = run_seconds(pid), time.monotonic()
        threads0 = thread_activity(pid)
        publisher.start()
        rss_peak = 0
        while time.monotonic() < t0 + seconds:
            time.sleep(min(1.0, max(0.0, t0 + seconds - time.monotonic())))
            rss_peak = max(rss_peak, status_kib(pid, "VmRSS"))
        publisher.halt.set()
        publisher.join()
        cpu1, t1 = run_seconds(pid), time.monotonic()
        threads1 = thread_activity(pid)
        time.sleep(2.0)  # the last messages arrive and reach the spool
    finally:
        publisher.close()
    sent = sum(publisher.sent)
    cpu = cpu1 - cpu0
    return {
        "readings": sent,
        "sent": publisher.sent,
        "cpu_s": round(cpu, 3),
        "core_pct": round(100 * cpu / (t1 - t0), 2),
        "us_per_reading": round(1e6 * cpu / max(sent, 1), 1),
        "rss_mb_peak": round(rss_peak / 1024, 1),
        "threads": thread_share(threads0, threads1, sent, t1 - t0),
    }


def floor(port: int, devices: int, qos: int, seconds: float) -> dict[str, Any]:
    """paho's loop subscribed to the fleet's topics, counting: the least a subscriber costs."""
    command = [PY, str(HERE / "_subscriber.py"), "paho", "--port", str(port), "--qos", str(qos)]
    sub = subprocess.Popen(
        [*command, "--topic", "fleet/+/state", "--messages", str(10**9)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sub.stdout is not None
        sub.stdout.readline()  # "ready"
        result = _publish_for(port, devices, qos, seconds, sub.pid)
    finally:
        sub.send_signal(signal.SIGTERM)
        sub.wait(30)
    return {k: result[k] for k in ("readings", "cpu_s", "core_pct", "us_per_reading")}


def gateway(port: int, devices: int, qos: int, seconds: float, tmp: Path) -> dict[str, Any]:
    log = (tmp / "gateway.log").open("wb")
    gw = subprocess.Popen(
        [PY, str(HERE / "_serial_gateway.py"), str(_config(tmp, port, devices, qos))],
        stderr=log,
        cwd=ROOT,
    )
    try:
        time.sleep(SETTLE_S)
        if gw.poll() is not None:
            raise RuntimeError(f"gateway exited: {(tmp / 'gateway.log').read_text()[-2000:]}")
        result = _publish_for(port, devices, qos, seconds, gw.pid)
    finally:
        gw.send_signal(signal.SIGTERM)
        code = gw.wait(60)
        log.close()
    stored = _stored(tmp / "state" / "readings.db")
    sent: list[int] = result.pop("sent")
    result["lost"] = sum(
        max(0, s - len({q for (d, q) in stored if d == f"d{i:03}"})) for i, s in enumerate(sent)
    )
    result["stored_twice"] = sum(1 for c in stored.values() if c > 1)
    result["exit_code"] = code
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1)
    args = parser.parse_args()
    quiet = wait_quiet()
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-fleet-", dir="/dev/shm") as shm:
        broker = QuietMosquitto(Path(shm) / "mosquitto", extra_conf="max_queued_messages 0\n")
        broker.start()
        try:
            base = floor(broker.port, args.devices, args.qos, args.seconds)
            with tempfile.TemporaryDirectory(prefix="bench-mqtt-fleet-gw-") as tmp:
                gw = gateway(broker.port, args.devices, args.qos, args.seconds, Path(tmp))
        finally:
            broker.stop()
    gw["floor"] = base
    gw["ratio_to_floor"] = round(gw["us_per_reading"] / max(base["us_per_reading"], 1e-9), 2)
    print(
        f"mqtt-{args.devices} (QoS {args.qos}): {gw['readings']} readings, gateway "
        f"{gw['core_pct']} % of a core ({gw['us_per_reading']} µs/reading, "
        f"{gw['ratio_to_floor']}× the count-only paho subscriber's {base['us_per_reading']} "
        f"µs), RSS {gw['rss_mb_peak']} MB, lost {gw['lost']}, twice {gw['stored_twice']}"
    )
    print(thread_summary(gw["threads"]))
    write_result(
        "mqtt-fleet",
        {"machine": machine(), "load": quiet, "seconds": args.seconds, "qos": args.qos, **gw},
    )


if __name__ == "__main__":
    main()
