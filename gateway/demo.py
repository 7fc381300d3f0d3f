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
from gateway import tomlwrite
from gateway.logging import configure
from gateway.pipeline.reading import Reading
from gateway.service.lock import StateDirBusy, StateDirLock, read_lock_info

DEFAULT_DEMO_DIR = (
    Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    / "sensor-gateway"
    / "demo"
)

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


# Every demo sensor reports °C, % and hPa; pressure is stored in kPa (a conversion to
# show) and `query --demo` shows the units in its header.
DEMO_UNITS: dict[str, Any] = {
    "temperature": {"unit": "degC"},
    "humidity": {"unit": "%"},
    "pressure": {"unit": "hPa", "to_unit": "kPa", "round": 3},
}


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
            "fields": {**DEMO_UNITS, "seq": {"type": "int"}},
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
            "fields": {**DEMO_UNITS, "seq": {"type": "int"}},
        }
    return config


def _print_reading(device: str, reading: Reading) -> None:
    """One line per reading, cut to the terminal's width (80 columns when not a terminal).

    The measurement is left out (``query --demo`` shows it); a tag other than the demo's
    own names the sensor: ``rooms/sensor-0``.
    """
    stamp = time.strftime("%H:%M:%S", time.localtime(reading.time_ns / 1e9))
    extra = [v for k, v in sorted(reading.tags.items()) if k not in ("device", "site", "clock")]
    name = "/".join([device, *extra])
    fields = " ".join(f"{k}={v}" for k, v in reading.fields.items())
    line = f"{stamp} {name:<14} {fields}"
    if reading.tags.get("clock") or "clock" in reading.fields:
        line += " (clock unsynced)"
    print(fit(line, shutil.get_terminal_size((80, 24)).columns), flush=True)


def fit(line: str, width: int) -> str:
    """``line`` cut to ``width`` columns with an ellipsis (a live view never wraps)."""
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


async def _publish(port: int, stop: asyncio.Event) -> None:
    """Publish the MQTT sensors' readings until ``stop`` is set.

    QoS 0: no publish waits for an acknowledgement, so stopping never leaves a pending
    publish whose failure nobody retrieves ("Future exception was never retrieved").
    """
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
                        await client.publish(topic, payload, qos=0)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await stop.wait()
        except aiomqtt.MqttError:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await stop.wait()


# What a demo run leaves behind; removed at the start of the next run unless --keep.
_RUN_FILES = ("readings.db", "spool.db", "status.json")


def _clear(state_dir: Path) -> bool:
    """Remove the previous run's store, spool and status; False if another demo runs."""
    lock = StateDirLock(state_dir)
    try:
        lock.acquire({"demo": True})
    except StateDirBusy:
        return False
    try:
        for name in _RUN_FILES:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    (state_dir / f"{name}{suffix}").unlink()
    finally:
        lock.release()
    return True


def command_name() -> str:
    """``sensor-gateway`` as the user can type it to run this same installation."""
    argv0 = sys.argv[0]
    if argv0.endswith("__main__.py"):  # python -m gateway
        return f"{_shorter(sys.executable)} -m gateway"
    found = shutil.which("sensor-gateway")
    with contextlib.suppress(OSError):
        if found and os.path.samefile(found, argv0):
            return "sensor-gateway"
    if os.path.basename(argv0) == "sensor-gateway":
        return _shorter(argv0)
    return "sensor-gateway"


def _shorter(path: str) -> str:
    """``path`` relative to the working directory when it is below it."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return relative if not relative.startswith("..") else absolute


def run_demo(
    state_dir: Path, duration: float | None = None, live: bool = True, keep: bool = False
) -> int:
    """Run the demo until Ctrl-C (or ``duration`` seconds); returns the exit code."""
    from devices.line.simulator import LineSimulator
    from gateway.app import Gateway
    from gateway.config import load_config

    state_dir.mkdir(parents=True, exist_ok=True)
    configure("info", "console")
    if not keep and not _clear(state_dir):
        info = read_lock_info(state_dir)
        print(
            f"sensor-gateway demo: another sensor-gateway (pid {info.get('pid', '?')}) "
            f"is using {state_dir}",
            file=sys.stderr,
        )
        return 2
    masters: dict[str, int] = {}
    ports: dict[str, str] = {}
    for name, _, _ in SERIAL_SENSORS:
        masters[name], ports[name] = _pty()
    broker = _start_mosquitto(state_dir)
    config_path = state_dir / "demo.toml"
    config_path.write_text(
        "# The demo's configuration, written by `sensor-gateway demo` for this run: the\n"
        "# serial ports are its pseudo-terminals and the broker its private mosquitto.\n"
        "# Copy it as a start for your own (see docs/configuration.md).\n\n"
        + tomlwrite.dumps(demo_config(state_dir, ports, broker[1] if broker else None))
    )
    config = load_config(config_path)
    cmd = command_name()
    mqtt = (
        f"{MQTT_SENSORS} MQTT sensors on a private mosquitto (port {broker[1]})"
        if broker
        else "no MQTT sensors (install mosquitto to add them)"
    )
    kept = (
        "earlier runs' readings are kept (--keep)"
        if keep
        else "the store starts empty (--keep keeps earlier runs)"
    )
    print(
        f"sensor-gateway demo: {len(SERIAL_SENSORS)} serial sensors on pseudo-terminals,\n"
        f"  {mqtt}.\n"
        f"  Data in {state_dir}; {kept}.\n"
        f"  Config: {config_path}\n"
        "  Ctrl-C stops.",
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
            sim_tasks = [
                tg.create_task(sim.run(rate), name=f"sim-{name}")
                for sim, (name, _, rate) in zip(sims, SERIAL_SENSORS, strict=True)
            ]
            publisher = (
                tg.create_task(_publish(broker[1], stop), name="mqtt-publisher") if broker else None
            )
            if duration is not None:
                loop.call_later(duration, gateway.stop)
            await asyncio.wait([run])
            stop.set()
            for task in sim_tasks:
                task.cancel()
            if publisher is not None and not publisher.done():
                # It leaves at its next check of `stop`; cancelling it mid-publish is
                # what used to leave an unretrieved exception behind.
                done, _ = await asyncio.wait([publisher], timeout=5)
                if not done:
                    publisher.cancel()

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
    # query/status --demo read the default demo directory; elsewhere, the written config.
    target = "--demo" if state_dir == DEFAULT_DEMO_DIR else f"-c {config_path}"
    print(closing_hint(cmd, config_path, target))
    return 0


def closing_hint(cmd: str, config_path: Path, target: str = "--demo") -> str:
    """What to do next, with the command as the user can type it (lines ≤ 80 columns)."""
    lines = [
        "",
        "Demo stopped. Read back what this run stored:",
        f"  {cmd} query {target}",
        f"  {cmd} query {target} --latest",
        f"  {cmd} status {target}",
        "Start your own configuration from the demo's:",
        f"  {config_path}",
    ]
    if cmd != "sensor-gateway" and " -m " not in cmd:
        bindir = os.path.dirname(os.path.abspath(cmd))
        lines.append(f'To type just "sensor-gateway": export PATH="{bindir}:$PATH"')
    return "\n".join(lines)
