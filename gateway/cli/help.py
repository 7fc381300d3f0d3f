"""What ``sensor-gateway COMMAND --help`` says beyond its options: one line on what the
command is for, and examples to copy. Every line fits 80 columns (tests/test_cli_help.py).
"""

from __future__ import annotations

import argparse

# command: (description, examples)
HELP: dict[str, tuple[str, list[str]]] = {
    "run": (
        "Run the gateway until SIGTERM or Ctrl-C. Logs go to stderr. With --test, run "
        "the devices for a while (30 s) and print each reading as a row and as the line "
        "protocol it would write, and each rejection with its reason; nothing is stored, "
        "and it can run beside the running gateway.",
        [
            "sensor-gateway run -c /etc/sensor-gateway/gateway.toml",
            "sensor-gateway run -c gateway.toml -v       # debug lines",
            "sensor-gateway run -c gateway.toml -vv      # ... and the MQTT client's",
            "sensor-gateway run -c gateway.toml --test   # try the devices, store nothing",
            "sensor-gateway run -c gateway.toml --test -d boiler --duration 2m",
            "sensor-gateway run -c gateway.toml --test -o json | jq -c 'select(.rejection)'",
        ],
    ),
    "check-config": (
        "Check a configuration: every mistake with its TOML path in one pass, then "
        "warnings. Exit 0 when valid (warnings or not), 2 when not.",
        ["sensor-gateway check-config -c gateway.toml"],
    ),
    "drivers": (
        "List the installed drivers (built in and from packages); with NAME, its "
        "options and the keys every device takes; with -c, also the devices "
        "discovered on the configuration's brokers.",
        [
            "sensor-gateway drivers",
            "sensor-gateway drivers line",
            "sensor-gateway drivers --json",
            "sensor-gateway drivers -c gateway.toml   # and the devices discovered",
        ],
    ),
    "config": (
        "Print a commented starting configuration with example devices of the "
        "drivers named (like `telegraf config`).",
        [
            "sensor-gateway config > gateway.toml",
            "sensor-gateway config --driver line --driver json > gateway.toml",
        ],
    ),
    "query": (
        "Print readings, newest last, from InfluxDB (when configured and reachable) "
        "or the local store; stderr says which answered (docs/querying.md).",
        [
            "sensor-gateway query --demo",
            "sensor-gateway query -c gateway.toml -d boiler --since -1h",
            "sensor-gateway query -c gateway.toml --latest -o csv",
            "sensor-gateway query -c gateway.toml --since -1d --every 1h --agg max",
            "sensor-gateway query -c gateway.toml -f temperature --since -6h --plot",
            "sensor-gateway query -c gateway.toml --source local --list",
        ],
    ),
    "status": (
        "Ask the running gateway what it is doing, over its status socket: devices, "
        "brokers, sinks, spool. Members of gateway.status_group need no sudo. When it "
        "is not running, say so with the last known spool figures and exit 1.",
        [
            "sensor-gateway status -c gateway.toml",
            "sensor-gateway status -c gateway.toml --format json",
            "sensor-gateway status --demo",
        ],
    ),
    "dead-letter": (
        "List or export the points a server refused for good (kept in the spool).",
        [
            "sensor-gateway dead-letter -c gateway.toml",
            "sensor-gateway dead-letter -c gateway.toml --export refused.lp",
        ],
    ),
    "demo": (
        "Run on simulated sensors (pseudo-terminals, and MQTT when mosquitto is "
        "installed) into the local store; no hardware needed. Each run starts with an "
        "empty store.",
        ["sensor-gateway demo", "sensor-gateway demo --duration 30 --quiet"],
    ),
    "new-driver": (
        "Create a driver package to start from: a working serial driver for "
        "key=value lines, its sample.toml and README, and tests that use the "
        "gateway's driver test kit (docs/writing-a-driver.md).",
        [
            "sensor-gateway new-driver thermo",
            "sensor-gateway new-driver thermo --dir ~/src",
        ],
    ),
    "ports": (
        "List the serial ports plugged in, each with the port value to paste into a device table.",
        ["sensor-gateway ports", "sensor-gateway ports --json"],
    ),
    "capture": (
        "Record what a serial device sends, with its timing, into a capture file "
        "that the driver test kit replays (docs/writing-a-driver.md). The port is "
        "opened as the gateway opens it: stop the gateway's device first.",
        [
            "sensor-gateway capture /dev/ttyUSB0 -o dsmr.cap --baud 115200 --duration 30s",
            "sensor-gateway capture usb:1a86:7523 -o p1.cap --baud 9600 --framing 7E1",
            "sensor-gateway capture /dev/ttyAMA0 -o co2.cap --request 'ff0186000000000079'",
        ],
    ),
}


def decorate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Give each subcommand its description and examples (commands not listed keep
    what they have)."""
    for name, parser in sub.choices.items():
        if name not in HELP:
            continue
        description, examples = HELP[name]
        parser.description = description
        parser.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
        parser.formatter_class = _Formatter


class _Formatter(argparse.HelpFormatter):
    """Wraps the description like argparse does, keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("examples:\n"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)
