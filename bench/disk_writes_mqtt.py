"""Disk writes of the whole gateway at 100 readings/s: MQTT QoS 0 / QoS 1 against serial.

What acknowledging MQTT messages only after the spool commit costs the SD card. The real
gateway (``python -m gateway run``) runs as a subprocess with its state directory (the
spool) on the project's disk, writing to a VictoriaMetrics (``[sinks.influxdb]``, api v2,
batches every second; local store off). It is fed 100 readings/s (10 devices × 10/s,
3 fields each, on an absolute schedule) for ``--seconds`` (25) after a 3 s warm-up, in
four modes:

* ``serial``: 10 ``line`` devices on pseudo-terminals. Nothing to acknowledge: the spool
  commits on its 200 ms window only. The baseline each MQTT mode is compared with;
* ``mqtt-qos0``: 10 ``json`` devices at QoS 0 (nothing to acknowledge either);
* ``mqtt-qos1``: QoS 1 over MQTT 5, the default: Receive Maximum 2000, so the early
  commit (half the window waiting unacknowledged) is due at 1,000 messages;
* ``mqtt-qos1-v311``: QoS 1 over MQTT 3.1.1 against mosquitto's default
  ``max_inflight_messages 20``: an early commit whenever 10 messages wait, the commit
  policy's worst case.

Counted over the window from ``/proc/<gateway>/io``: write syscalls (``syscw``), bytes
written (``wchar``) and bytes of page cache dirtied on storage (``write_bytes``: what
reaches the disk); fsync/fdatasync calls with ``strace -f -c -p`` if installed; spool
commits and early commits from the status document. The config, the log and
``status.json`` live on /dev/shm (a tmpfs, as the systemd unit's runtime directory is),
so ``write_bytes`` is the spool's alone, as on a Pi.

    python bench/disk_writes_mqtt.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from _common import proc_io, use_test_helpers, wait_quiet, write_result
from disk_writes import start_strace, stop_strace
from paho.mqtt.enums import CallbackAPIVersion
from pipeline import QuietMosquitto, vm_rows_inserted

use_test_helpers()

from gateway_proc import GatewayProcess  # noqa: E402
from servers import SerialPty, VictoriaMetrics  # noqa: E402

MODES = ("serial", "mqtt-qos0", "mqtt-qos1", "mqtt-qos1-v311")
DEVICES = 10
FIELDS = 3
MEASUREMENT = "bench"
WARM_UP_S = 3.0


def gateway_config(mode: str, mqtt_port: int, vm_url: str, ptys: list[SerialPty]) -> dict[str, Any]:
    devices: dict[str, dict[str, Any]] = {}
    for i in range(DEVICES):
        if mode == "serial":
            devices[f"sensor-{i}"] = {
                "driver": "line",
                "port": ptys[i].path,
                "format": "kv",
                "measurement": MEASUREMENT,
            }
        else:
            devices[f"sensor-{i}"] = {
                "driver": "json",
                "topics": [f"disk/sensor-{i}/state"],
                "qos": 0 if mode == "mqtt-qos0" else 1,
                "time_field": "ts",
                "measurement": MEASUREMENT,
            }
    config: dict[str, Any] = {
        # Self-metrics would add readings (and spool writes) of their own.
        "gateway": {"log_level": "info", "metrics_interval": 86400},
        "sinks": {
            "influxdb": {"url": vm_url, "api": "v2", "org": "b", "bucket": "b", "token": "b"},
            "local": {"enabled": False},
        },
        "devices": devices,
    }
    if mode != "serial":
        broker: dict[str, Any] = {"host": "127.0.0.1", "port": mqtt_port, "client_id": "disk-gw"}
        if mode == "mqtt-qos1-v311":
            broker["protocol"] = "3.1.1"
        config["brokers"] = {"default": broker}
    return config


def body(i: int, t_us: int) -> dict[str, float | int]:
    return {
        "temperature": round(18.0 + (i % 997) / 100.0, 2),
        "humidity": round(35.0 + (i % 613) / 20.0, 1),
        "pressure": round(990.0 + (i % 409) / 10.0, 1),
        "ts": t_us,
    }


class Feeder(threading.Thread):
    """Sends reading ``i`` to device ``i % DEVICES`` at ``rate`` per second, no drift."""

    def __init__(self, send: Callable[[int, int], None], rate: float) -> None:
        super().__init__(daemon=True)
        self.send = send
        self.rate = rate
        self.sent = 0
        self.halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        base_us = time.time_ns() // 1000
        interval = 1.0 / self.rate
        while not self.halt.is_set():
            # Each device's readings 1 ms apart at least: VictoriaMetrics keeps one per ms.
            self.send(self.sent, base_us + self.sent * int(interval * 1e6))
            self.sent += 1
            self.halt.wait(max(0.0, start + self.sent * interval - time.monotonic()))


def status_sample(gw: GatewayProcess, after: float) -> dict[str, Any]:
    """The first status document written after ``after`` (wall time)."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            doc = gw.status()
        except (OSError, ValueError):
            doc = {}
        if doc.get("updated_at", 0.0) > after or time.monotonic() > deadline:
            return doc
        time.sleep(0.05)


def counters(doc: dict[str, Any]) -> tuple[float, int, int]:
    """(updated_at, spool commits, early commits) of a status document."""
    early = sum(b.get("early_commits", 0) for b in doc.get("brokers", {}).values())
    return doc.get("updated_at", 0.0), doc.get("spool", {}).get("commits", 0), early


def run_mode(mode: str, disk: Path, shm: Path, seconds: float, rate: float) -> dict[str, Any]:
    ptys = [SerialPty() for _ in range(DEVICES)] if mode == "serial" else []
    # mosquitto's defaults otherwise (max_inflight_messages 20 for 3.1.1 clients).
    mosq = QuietMosquitto(shm / "mosquitto").start()
    vm = VictoriaMetrics(shm / "vm").start()
    config = gateway_config(mode, mosq.port, vm.url, ptys)
    config["gateway"]["state_dir"] = str(disk / "state")
    gw = GatewayProcess(shm / "gw", config, env={"RUNTIME_DIRECTORY": str(shm / "run")})
    (shm / "run").mkdir()
    pub: mqtt.Client | None = None
    feeder: Feeder | None = None
    try:
        gw.start()
        assert gw.proc is not None
        pid = gw.proc.pid
        if mode == "serial":

            def send(i: int, t_us: int) -> None:
                b = body(i, t_us)
                text = f"temperature={b['temperature']} humidity={b['humidity']} "
                ptys[i % DEVICES].write(f"{text}pressure={b['pressure']}\n".encode())

        else:
            gw.wait_for_log("connected to MQTT broker")
            qos = 0 if mode == "mqtt-qos0" else 1
            pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="disk-publisher")
            pub.connect("127.0.0.1", mosq.port)
            pub.loop_start()
            client = pub

            def send(i: int, t_us: int) -> None:
                payload = json.dumps(body(i, t_us), separators=(",", ":"))
                client.publish(f"disk/sensor-{i % DEVICES}/state", payload, qos)

        feeder = Feeder(send, rate)
        feeder.start()
        time.sleep(WARM_UP_S)
        strace_out = shm / "strace.txt"
        tracer = start_strace(strace_out, pid)
        time.sleep(1.0)  # let strace attach to every thread
        io0, t0 = proc_io(pid), time.monotonic()
        s0 = counters(status_sample(gw, time.time()))
        time.sleep(seconds)
        io1, t1 = proc_io(pid), time.monotonic()
        s1 = counters(status_sample(gw, time.time()))
        calls = stop_strace(tracer, strace_out)
        feeder.halt.set()
        feeder.join()
        sent = feeder.sent
        target = sent * FIELDS
        deadline = time.monotonic() + 30.0
        while vm_rows_inserted(vm) < target and time.monotonic() < deadline:
            time.sleep(0.2)
        vm.force_flush()
        stored = vm.count_points(f'{{__name__=~"{MEASUREMENT}_.+"}}')
        gw.stop()
    finally:
        if feeder is not None:
            feeder.halt.set()
        if pub is not None:
            pub.disconnect()
            pub.loop_stop()
        gw.close()
        vm.stop()
        mosq.stop()
        for pty in ptys:
            pty.close()
    window = t1 - t0
    status_window = s1[0] - s0[0]

    def per_s(key: str) -> float:
        return round((io1[key] - io0[key]) / window, 1)

    result: dict[str, Any] = {
        "mode": mode,
        "window_s": round(window, 2),
        "readings_sent": sent,
        "points_expected": target,
        "points_stored": stored,
        "spool_commits_per_s": round((s1[1] - s0[1]) / status_window, 2),
        "early_commits_per_s": round((s1[2] - s0[2]) / status_window, 2),
        "write_syscalls_per_s": per_s("syscw"),
        "written_bytes_per_s": per_s("wchar"),
        "storage_write_bytes_per_s": per_s("write_bytes"),
        "storage_write_bytes_per_reading": round(
            (io1["write_bytes"] - io0["write_bytes"]) / (rate * window), 1
        ),
        "storage_write_mb_per_day": round(per_s("write_bytes") * 86400 / 1e6, 1),
    }
    if calls is not None:
        syncs = calls.get("fsync", 0) + calls.get("fdatasync", 0)
        result["strace_calls"] = calls
        result["fsyncs_per_s"] = round(syncs / window, 2)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=25.0)
    ap.add_argument("--rate", type=float, default=100.0, help="readings/s over all devices")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = ap.parse_args()
    quiet = wait_quiet()
    runs = []
    for mode in args.modes:
        # The spool on the project's disk (write_bytes counts real storage only), the rest
        # on a tmpfs.
        with (
            tempfile.TemporaryDirectory(prefix="bench-disk-", dir=Path(__file__).parent) as disk,
            tempfile.TemporaryDirectory(prefix="bench-disk-", dir="/dev/shm") as shm,
        ):
            r = run_mode(mode, Path(disk), Path(shm), args.seconds, args.rate)
        runs.append(r)
        fsync = f", {r['fsyncs_per_s']} fsync/s" if "fsyncs_per_s" in r else ""
        print(
            f"{mode:15s} {r['spool_commits_per_s']} commits/s ({r['early_commits_per_s']} "
            f"early): {r['write_syscalls_per_s']} write syscalls/s{fsync}, "
            f"{r['storage_write_bytes_per_s'] / 1024:.1f} KiB/s to storage "
            f"({r['storage_write_bytes_per_reading']} B/reading, "
            f"{r['storage_write_mb_per_day']} MB/day); points {r['points_stored']} of "
            f"{r['points_expected']}"
        )
    base = next((r for r in runs if r["mode"] == "serial"), None)
    if base is not None and base["storage_write_bytes_per_s"] > 0:
        for r in runs:
            r["storage_ratio_to_serial"] = round(
                r["storage_write_bytes_per_s"] / base["storage_write_bytes_per_s"], 2
            )
        print(
            "to storage ÷ serial: "
            + ", ".join(f"{r['mode']} {r['storage_ratio_to_serial']}×" for r in runs)
        )
    write_result("disk_writes_mqtt", {"machine_load": quiet, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
