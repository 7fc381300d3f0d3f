"""What ``sensor-gateway COMMAND --help`` says beyond its options: one line on what the
command is for, and examples to copy. Every line fits 80 columns (tests/test_cli_help.py).
"""

from __future__ import annotations

import argparse

# command: (description, examples)
HELP: dict[str, tuple[str, list[str]]] = {
    "run": (
        "Run the gateway until SIGTERM or Ctrl-C. Logs go to stderr.",
        [
            "sensor-gateway run -c /etc/sensor-gateway/gateway.toml",
            "sensor-gateway run -c gateway.toml -v       # debug lines",
            "sensor-gateway run -c gateway.toml -vv      # ... and the MQTT client's",
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
            "sensor-gateway query -c gateway.toml --source local --list",
        ],
    ),
    "status": (
        "Show what the running gateway is doing: devices, brokers, sinks, spool. "
        "Exit 1 when it is not running.",
        ["sensor-gateway status -c gateway.toml", "sensor-gateway status --demo"],
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
