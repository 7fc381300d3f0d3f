"""``sensor-gateway demo``: the whole gateway on simulated sensors, no hardware needed.

Three serial sensors run on pseudo-terminals, each speaking a different text format of
the ``line`` driver; when ``mosquitto`` is installed, a private broker is started on a
free loopback port and two MQTT sensors publish JSON to it. Readings go through the
normal pipeline (normalization, spool) into the local store, and each one is printed as
it arrives. Afterwards ``sensor-gateway query --demo`` reads them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tty
from pathlib import Path
from typing import Any

from devices.line.simulator import LineFormat
from gateway.config import config_from_dict
from gateway.logging import configure
from gateway.pipeline.reading import Reading

SERIAL_SENSORS: list[tuple[str, LineFormat, float]] = [
    # name, line format, rate (Hz)
    ("greenhouse", "kv", 2.0),
    ("boiler", "json", 1.0),
    ("weather", "csv", 0.5),
]
MQTT_SENSORS = 2


def _pty() -> tuple[int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    # Keep the slave open: a pty whose slave was never opened reports EIO to readers.
    _keep.append(slave)
    return master, path


_keep: list[int] = []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_mosquitto(state_dir: Path) -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        return None
    port = _free_port()
    conf = state_dir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=0.2),
        ):
            return proc, port
        time.sleep(0.05)
    proc.kill()
    return None


def demo_config(state_dir: Path, ports: dict[str, str], broker_port: int | None) -> dict[str, Any]:
    """The demo's configuration, as a TOML file would hold it."""
    from devices.line.simulator import LineSimulator

    devices: dict[str, Any] = {}
    for name, fmt, _ in SERIAL_SENSORS:
        opts = LineSimulator(None, fmt).options(ports[name])
        devices[name] = {
            "driver": "line",
            **opts,
            "measurement": "climate",
            "tags": {"site": "demo"},
            "fields": {
                "pressure": {"unit": "hPa", "to_unit": "kPa", "round": 3},
                "seq": {"type": "int"},
            },
        }
    config: dict[str, Any] = {
        "gateway": {
            "state_dir": str(state_dir),
            "log_format": "console",
            # Containers and CI hosts often report an unsynchronized clock.
            "clock_sync_check": False,
            "metrics_interval": 10.0,
        },
        "spool": {"commit_interval": 0.2},
        "sinks": {"local": {"enabled": True, "flush_interval": 0.5}},
        "devices": devices,
    }
    if broker_port is not None:
        config["brokers"] = {"demo": {"host": "127.0.0.1", "port": broker_port}}
        devices["rooms"] = {
            "driver": "json",
            "broker": "demo",
            "topics": ["demo/{sensor}/state"],
            "time_field": "ts",
            "measurement": "rooms",
            "tags": {"site": "demo"},
            "fields": {"seq": {"type": "int"}},
        }
    return config


def _print_reading(device: str, reading: Reading) -> None:
    stamp = time.strftime("%H:%M:%S", time.localtime(reading.time_ns / 1e9))
    ms = (reading.time_ns // 1_000_000) % 1000
    fields = " ".join(f"{k}={v}" for k, v in reading.fields.items())
    tags = ",".join(
        f"{k}={v}" for k, v in sorted(reading.tags.items()) if k not in ("device", "site")
    )
    print(
        f"{stamp}.{ms:03d}  {device:<11} {reading.measurement:<8} {fields}"
        + (f"  [{tags}]" if tags else ""),
        flush=True,
    )


async def _publish(port: int, stop: asyncio.Event) -> None:
    import aiomqtt

    from devices.json.simulator import JsonPublisher

    pub = JsonPublisher(MQTT_SENSORS, prefix="demo", seed=7)
    while not stop.is_set():
        try:
            async with aiomqtt.Client(
                "127.0.0.1", port, identifier="sensor-gateway-demo-publisher"
            ) as client:
                while not stop.is_set():
                    for name in pub.names:
                        topic, payload = pub.message(name)
                        await client.publish(topic, payload, qos=1)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await stop.wait()
        except aiomqtt.MqttError:
            await asyncio.sleep(0.5)


def run_demo(state_dir: Path, duration: float | None = None, live: bool = True) -> int:
    """Run the demo until Ctrl-C (or ``duration`` seconds); returns the exit code."""
    from devices.line.simulator import LineSimulator
    from gateway.app import Gateway
    from gateway.service.lock import StateDirBusy

    state_dir.mkdir(parents=True, exist_ok=True)
    configure("info", "console")
    masters: dict[str, int] = {}
    ports: dict[str, str] = {}
    for name, _, _ in SERIAL_SENSORS:
        masters[name], ports[name] = _pty()
    broker = _start_mosquitto(state_dir)
    config = config_from_dict(demo_config(state_dir, ports, broker[1] if broker else None))

    print(
        f"sensor-gateway demo: {len(SERIAL_SENSORS)} serial sensors on pseudo-terminals"
        + (
            f", {MQTT_SENSORS} MQTT sensors on a private mosquitto (port {broker[1]})"
            if broker
            else " (install mosquitto to add MQTT sensors)"
        )
        + f"; data in {state_dir}. Ctrl-C stops.",
        flush=True,
    )

    async def main() -> None:
        gateway = Gateway(config)
        if live:
            gateway.pipeline.taps.append(_print_reading)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        loop.add_signal_handler(signal.SIGHUP, gateway.reload)
        stop = asyncio.Event()
        sims = [
            LineSimulator(masters[name], fmt, seed=i)
            for i, (name, fmt, _) in enumerate(SERIAL_SENSORS)
        ]
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(gateway.run(), name="gateway")
            # pyserial flushes a port's input when it opens it; let the ports open first.
            await asyncio.sleep(0.5)
            helpers: list[asyncio.Task[Any]] = [
                tg.create_task(sim.run(rate), name=f"sim-{name}")
                for sim, (name, _, rate) in zip(sims, SERIAL_SENSORS, strict=True)
            ]
            if broker:
                helpers.append(tg.create_task(_publish(broker[1], stop), name="mqtt-publisher"))
            if duration is not None:
                loop.call_later(duration, gateway.stop)
            await asyncio.wait([run])
            stop.set()
            for task in helpers:
                task.cancel()

    busy: list[StateDirBusy] = []
    try:
        try:
            asyncio.run(main())
        except* StateDirBusy as group:
            busy.extend(e for e in group.exceptions if isinstance(e, StateDirBusy))
    finally:
        if broker:
            broker[0].terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker[0].wait(5)
        for fd in [*masters.values(), *_keep]:
            with contextlib.suppress(OSError):
                os.close(fd)
    if busy:
        print(f"sensor-gateway demo: {busy[0]}", file=sys.stderr)
        return 2
    print(
        "\nDemo stopped. Read back what was stored with:  sensor-gateway query --demo"
        "\n(filters: sensor-gateway query --help; last status: sensor-gateway status --demo)"
    )
    return 0
