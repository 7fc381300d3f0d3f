"""Idle RSS of the gateway with 20 configured devices, as a subprocess (``python -m gateway``).

10 ``line`` devices on pseudo-terminals that stay silent and 10 ``json`` MQTT devices on
a real mosquitto (connected, subscribed, no traffic). After ``--settle`` seconds (10) the
gateway's VmRSS is read, in two configurations:

* ``local``: the default configuration (no InfluxDB: the embedded local store is the sink);
* ``influxdb-v2``: ``[sinks.influxdb]`` with ``api = "v2"`` (aiohttp is imported when the
  sink starts) and the local store off.

    python bench/idle_rss.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cpu_seconds, status_kib, use_test_helpers, wait_quiet, write_result

use_test_helpers()

from gateway_proc import GatewayProcess  # noqa: E402
from servers import Mosquitto, SerialPty, VictoriaMetrics  # noqa: E402


def config(ptys: list[SerialPty], mqtt_port: int, influx_url: str | None) -> dict[str, Any]:
    devices: dict[str, dict[str, Any]] = {}
    for i, pty in enumerate(ptys):
        devices[f"serial-{i}"] = {"driver": "line", "port": pty.path, "format": "kv"}
    for i in range(10):
        devices[f"mqtt-{i}"] = {
            "driver": "json",
            "topics": [f"idle/mqtt-{i}/{{sensor}}/state"],
            "time_field": "ts",
        }
    cfg: dict[str, Any] = {
        "brokers": {"default": {"host": "127.0.0.1", "port": mqtt_port, "client_id": "idle-gw"}},
        "devices": devices,
    }
    if influx_url is not None:
        cfg["sinks"] = {
            "influxdb": {"url": influx_url, "api": "v2", "org": "o", "bucket": "b", "token": "t"}
        }
    return cfg


def measure(
    tmp: Path, name: str, influx_url: str | None, mqtt_port: int, settle: float
) -> dict[str, Any]:
    ptys = [SerialPty() for _ in range(10)]
    gw = GatewayProcess(tmp / name, config(ptys, mqtt_port, influx_url))
    try:
        gw.start()
        assert gw.proc is not None
        pid = gw.proc.pid
        t0 = time.monotonic()
        time.sleep(settle)
        rss = status_kib(pid, "VmRSS")
        hwm = status_kib(pid, "VmHWM")
        cpu = cpu_seconds(pid)
        smaps = Path(f"/proc/{pid}/smaps_rollup").read_text()
        anon = next(int(ln.split()[1]) for ln in smaps.splitlines() if ln.startswith("Anonymous:"))
        modules = len(
            [ln for ln in Path(f"/proc/{pid}/maps").read_text().splitlines() if ".so" in ln]
        )
        status = gw.status()
        connected = all(b["state"] == "connected" for b in status["brokers"].values())
        states: dict[str, int] = {}
        for dev in status["devices"].values():
            states[dev["state"]] = states.get(dev["state"], 0) + 1
        elapsed = time.monotonic() - t0
        gw.stop()
    finally:
        gw.close()
        for pty in ptys:
            pty.close()
    return {
        "config": name,
        "devices": 20,
        "settled_s": round(elapsed, 1),
        "rss_mb": round(rss / 1024, 1),
        "peak_rss_mb": round(hwm / 1024, 1),
        "anonymous_mb": round(anon / 1024, 1),
        "shared_object_mappings": modules,
        "cpu_s_since_start": round(cpu, 2),
        "mqtt_connected": connected,
        "device_states": states,
        "sinks": sorted(status["sinks"]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--settle", type=float, default=10.0)
    args = ap.parse_args()
    quiet = wait_quiet()
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-idle-") as tmp_name:
        tmp = Path(tmp_name)
        with Mosquitto(tmp / "mosquitto") as mosq, VictoriaMetrics(tmp / "vm") as vm:
            for name, url in (("local", None), ("influxdb-v2", vm.url)):
                r = measure(tmp, name, url, mosq.port, args.settle)
                runs.append(r)
                print(
                    f"{name:12s} idle RSS {r['rss_mb']} MB after {r['settled_s']} s "
                    f"(peak {r['peak_rss_mb']} MB, anonymous {r['anonymous_mb']} MB; "
                    f"sinks {r['sinks']}; MQTT connected: {r['mqtt_connected']}; devices "
                    f"{r['device_states']})"
                )
                if not r["mqtt_connected"]:
                    print("  warning: the MQTT devices were not connected", file=sys.stderr)
    write_result("idle_rss", {"machine_load": quiet, "runs": runs})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
