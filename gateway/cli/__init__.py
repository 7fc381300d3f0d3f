"""The ``sensor-gateway`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.errors import ConfigError, GatewayError

DEFAULT_CONFIG = os.environ.get("SENSOR_GATEWAY_CONFIG", "/etc/sensor-gateway/gateway.toml")
DEMO_DIR = (
    Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    / "sensor-gateway"
    / "demo"
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
# The spool became unusable (damaged beyond what can be skipped, or gone): systemd's
# Restart= starts it again, and opening the spool salvages what can be read.
EXIT_SPOOL = 3


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sensor-gateway`` console script."""
    parser = _parser()
    args = parser.parse_args(_attach_relative_times(sys.argv[1:] if argv is None else argv))
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        code: int = args.func(args)
        return code
    except ConfigError as err:
        print(f"sensor-gateway: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except GatewayError as err:
        print(f"sensor-gateway: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `sensor-gateway query | head`
        sys.stderr.close()
        return EXIT_OK


_TIME_OPTIONS = ("--since", "--start", "--until", "--end")


def _attach_relative_times(argv: list[str]) -> list[str]:
    """``--since -1h`` → ``--since=-1h``: argparse would take ``-1h`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in _TIME_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensor-gateway",
        description="Reads serial and MQTT sensors, keeps every reading safe on disk and "
        "writes them to InfluxDB (or the embedded local store).",
    )
    parser.add_argument("--version", action="version", version=f"sensor-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            default=DEFAULT_CONFIG,
            help=f"main TOML file; conf.d/*.toml beside it is merged (default: {DEFAULT_CONFIG})",
        )

    p = sub.add_parser("run", help="run the gateway until SIGTERM/SIGINT")
    config_arg(p)
    p.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="instead of gateway.log_level",
    )
    p.add_argument(
        "-v", "--verbose", action="count", default=0, help="one level more (-vv: libraries too)"
    )
    p.add_argument("-q", "--quiet", action="count", default=0, help="one level less")
    p.add_argument(
        "--test",
        action="store_true",
        help="try the devices: print each reading (and its line protocol) and each "
        "rejection, store nothing; runs beside a running gateway",
    )
    p.add_argument(
        "-d",
        "--device",
        action="append",
        dest="devices",
        metavar="DEVICE",
        help="with --test: only this device (repeatable; default: the enabled ones)",
    )
    p.add_argument(
        "--duration", metavar="DUR", help='with --test: stop after this long (default "30s")'
    )
    p.add_argument(
        "-o",
        "--format",
        choices=["table", "json"],
        help="with --test: table (default), or json: one object per line",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a configuration and list every mistake")
    config_arg(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("drivers", help="list built-in and plugin drivers with their options")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("name", nargs="?", help="show one driver in detail")
    p.add_argument(
        "-c",
        "--config",
        help="also list the devices discovered on this configuration's brokers (read from "
        "its state directory; docs/discovery.md)",
    )
    p.set_defaults(func=cmd_drivers)

    p = sub.add_parser(
        "ports", help="list the serial ports plugged in, with the port value to paste"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_ports)

    from gateway.cli import capture as cli_capture

    cli_capture.add_parser(sub)

    p = sub.add_parser("config", help="print a commented starting configuration")
    p.add_argument(
        "--driver",
        action="append",
        default=[],
        metavar="NAME",
        help="add example devices of this driver (repeatable; default: line)",
    )
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("new-driver", help="create a driver package to start from")
    p.add_argument("name", help='the driver name configs will use (driver = "NAME")')
    p.add_argument("--dir", type=Path, default=Path(), help="where to create it (default: here)")
    p.set_defaults(func=cmd_new_driver)

    p = sub.add_parser("query", help="print readings from InfluxDB or the local store")
    config_arg(p)
    p.add_argument("--demo", action="store_true", help=f"query the demo's store ({DEMO_DIR})")
    p.add_argument("-d", "--device", help="only this device")
    p.add_argument("-m", "--measurement", help="only this measurement")
    p.add_argument(
        "-f", "--field", action="append", dest="fields", help="only this field (repeatable)"
    )
    p.add_argument(
        "--since",
        "--start",
        dest="start",
        default=None,
        help='start time: RFC 3339, epoch seconds or relative like "-1h" (default: all)',
    )
    p.add_argument("--until", "--end", dest="end", default=None, help="end time (default: now)")
    p.add_argument(
        "--latest", action="store_true", help="only the newest value per series and field"
    )
    p.add_argument(
        "-n",
        "--limit",
        type=int,
        default=1000,
        help="at most this many readings, the newest (default 1000)",
    )
    p.add_argument(
        "-o",
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table (default), csv, or json: one object per line",
    )
    p.add_argument(
        "--list", action="store_true", help="list measurements, devices and fields stored"
    )
    p.add_argument(
        "--source",
        choices=["local", "influxdb"],
        help="where to read (default: InfluxDB when configured and reachable, else local)",
    )
    p.add_argument("--every", metavar="DUR", help='windows of this length, e.g. "5m", "1h"')
    p.add_argument(
        "--agg",
        choices=["mean", "min", "max", "last", "count", "sum"],
        help="the aggregate per --every window (default: mean)",
    )
    p.add_argument(
        "--plot",
        action="store_true",
        help="draw a chart in the terminal instead (needs: pip install 'sensor-gateway[plot]')",
    )
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("status", help="show what the running gateway is doing")
    config_arg(p)
    p.add_argument("--demo", action="store_true", help="status of the demo")
    p.add_argument(
        "-o",
        "--format",
        choices=["table", "json"],
        default="table",
        help="table (default), or json: the status document",
    )
    p.add_argument(
        "--json", dest="format", action="store_const", const="json", help="same as --format json"
    )
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("dead-letter", help="list or export points a server refused for good")
    config_arg(p)
    p.add_argument("--sink", help="only this sink")
    p.add_argument(
        "-n", "--limit", type=int, default=100, help="at most this many, newest (default 100)"
    )
    p.add_argument(
        "--export", metavar="FILE", help="write them as line protocol to FILE ('-' = stdout)"
    )
    p.set_defaults(func=cmd_dead_letter)

    p = sub.add_parser(
        "demo", help="run with simulated sensors and the local store, no hardware needed"
    )
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument(
        "--state-dir",
        type=Path,
        default=DEMO_DIR,
        help=f"where the demo keeps its data ({DEMO_DIR})",
    )
    p.add_argument("--quiet", action="store_true", help="no live view of readings")
    p.add_argument(
        "--keep", action="store_true", help="keep earlier runs' readings (default: start empty)"
    )
    p.set_defaults(func=cmd_demo)
    from gateway.cli.help import decorate

    decorate(sub)
    return parser


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.cli.configcheck import check_config, format_findings

    result = check_config(args.config)
    width = 80 if sys.stderr.isatty() else None
    if result.errors:
        print(format_findings(args.config, result.errors, "problem", width), file=sys.stderr)
    if result.warnings:
        print(format_findings(args.config, result.warnings, "warning", width), file=sys.stderr)
    config = result.config
    if config is None:
        return EXIT_CONFIG
    sinks = []
    if config.influx is not None:
        sinks.append(f"influxdb ({config.influx.api}, {config.influx.url})")
    if config.local_enabled:
        sinks.append(f"local store ({config.local_path})")
    enabled = [n for n, d in config.devices.items() if d.section.enabled]
    print(
        f"{args.config}: OK — {len(enabled)} device(s) enabled, {len(config.brokers)} broker(s), "
        f"sinks: {', '.join(sinks) or 'none'}; spool {config.spool_path}"
    )
    for name, spec in config.devices.items():
        state = "" if spec.section.enabled else " (disabled)"
        print(f"  {name}: {spec.section.driver}{state}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.logging import configure, level_from_flags

    if args.test:
        return cmd_run_test(args)
    if args.devices or args.duration is not None or args.format is not None:
        print("sensor-gateway: -d, --duration and -o go with run --test", file=sys.stderr)
        return EXIT_CONFIG
    config = load_config(args.config)
    level, libraries = level_from_flags(
        config.gateway.log_level, args.log_level, args.verbose, args.quiet
    )
    configure(level, config.gateway.log_format, libraries=libraries)
    from gateway.cli.configcheck import log_warnings

    log_warnings(config)
    return run_gateway(config)


def cmd_run_test(args: argparse.Namespace) -> int:
    """``run --test``: the devices run as in the gateway for a while; nothing is stored."""
    from gateway.cli.trial import DEFAULT_DURATION_S, TrialEvents, run_trial
    from gateway.cli.trial_output import JsonOutput, TableOutput
    from gateway.config import load_config
    from gateway.logging import configure, level_from_flags
    from gateway.options import parse_duration

    try:
        duration = parse_duration(_number_or_text(args.duration or DEFAULT_DURATION_S))
    except ValueError as err:
        print(f"sensor-gateway: --duration: {err}", file=sys.stderr)
        return EXIT_CONFIG
    if duration <= 0:
        print("sensor-gateway: --duration: must be greater than 0", file=sys.stderr)
        return EXIT_CONFIG
    # Nothing is written, so the state directory need not be writable by this user.
    config = load_config(args.config, check_access=False)
    names = [n for n, d in config.devices.items() if d.section.enabled]
    if args.devices:
        unknown = [n for n in args.devices if n not in config.devices]
        if unknown:
            listed = ", ".join(
                n + ("" if d.section.enabled else " (disabled)") for n, d in config.devices.items()
            )
            print(
                f"sensor-gateway: no device named {', '.join(map(repr, unknown))} in "
                f"{args.config}; configured: {listed or 'none'}",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        names = list(dict.fromkeys(args.devices))  # a disabled device may be tried too
    if not names:
        print(f"sensor-gateway: no enabled device in {args.config} to try", file=sys.stderr)
        return EXIT_CONFIG
    # The rejections are printed on stdout; the log (stderr) says only errors unless -v.
    level, libraries = level_from_flags("error", args.log_level, args.verbose, args.quiet)
    configure(level, config.gateway.log_format, libraries=libraries)
    events: TrialEvents
    if args.format == "json":
        events = JsonOutput(sys.stdout, sys.stderr)
    else:
        events = TableOutput(sys.stdout, sys.stderr, names)
    run_trial(config, names, duration, events)
    return EXIT_OK


def _number_or_text(value: str | float) -> str | float:
    try:
        return float(value)
    except ValueError:
        return value


def run_gateway(config: Any, ready: Any = None) -> int:
    """Run a gateway for ``config`` until SIGTERM/SIGINT; return the exit code.

    A second SIGTERM/SIGINT stops at once without waiting for the sinks (what was read
    is already in the spool); SIGHUP reloads the configuration (gateway.service.reload).
    """
    from gateway.app import Gateway
    from gateway.service.lock import StateDirBusy

    async def _main() -> int:
        gateway = Gateway(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, gateway.stop)
        loop.add_signal_handler(signal.SIGHUP, gateway.reload)
        await gateway.run(ready=ready)
        return EXIT_SPOOL if gateway.fatal_reason is not None else EXIT_OK

    try:
        return asyncio.run(_main())
    except StateDirBusy as err:
        print(f"sensor-gateway: {err}", file=sys.stderr)
        return EXIT_CONFIG


def cmd_ports(args: argparse.Namespace) -> int:
    from gateway.serial.listing import render_ports
    from gateway.serial.ports import available_ports

    print(render_ports(available_ports(), as_json=args.json))
    return EXIT_OK


def cmd_drivers(args: argparse.Namespace) -> int:
    from gateway.cli import drivers as cli_drivers
    from gateway.plugins import discover

    found = discover()
    info = cli_drivers.driver_info(found)
    chosen = [d for d in info if d["name"] == args.name] if args.name else info
    if args.name and not chosen:
        print(cli_drivers.render_unknown(args.name, info), file=sys.stderr)
        return EXIT_ERROR
    discovered = cli_drivers.discovered_devices(args.config) if args.config else None
    if args.json:
        problems = [{"name": p.name, "target": p.target, "error": p.error} for p in found.problems]
        doc: dict[str, Any] = {"drivers": chosen, "problems": problems}
        if discovered is not None:
            doc["discovered"] = discovered
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    if args.name:
        print(cli_drivers.render_one(chosen[0], cli_drivers.core_keys()))
    else:
        print(cli_drivers.render_list(info))
        if discovered is not None:
            print(cli_drivers.render_discovered(discovered))
    for p in found.problems:
        print(f"! driver {p.name!r} ({p.target}) failed to load: {p.error}", file=sys.stderr)
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from gateway.cli.configgen import UnknownDriver, generate
    from gateway.plugins import load_drivers

    try:
        print(generate(args.driver, load_drivers()), end="")
    except UnknownDriver as err:
        print(f"sensor-gateway: {err}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_new_driver(args: argparse.Namespace) -> int:
    from gateway.cli.newdriver import NewDriverError, create

    try:
        folder = create(args.name, args.dir)
    except NewDriverError as err:
        print(f"sensor-gateway: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(f"created {folder}; next:")
    print(f"  pip install -e '{folder}[test]'")
    print(f"  sensor-gateway drivers {args.name}")
    print(f"  cd {folder} && pytest")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    from gateway.query import command

    return command.main(args, DEMO_DIR / "readings.db")


def cmd_status(args: argparse.Namespace) -> int:
    from gateway.telemetry import status

    if args.demo:
        return status.main(DEMO_DIR, args.format)
    refused = status.unreadable_config(Path(args.config))
    if refused:
        print(f"sensor-gateway: {refused}", file=sys.stderr)
        return EXIT_CONFIG
    from gateway.config import load_gateway_section

    # Only [gateway]: the rest may name what only the service sees (its credentials).
    section = load_gateway_section(args.config)
    return status.main(status.state_dir_of(section), args.format)


def cmd_dead_letter(args: argparse.Namespace) -> int:
    import sqlite3

    from gateway.config import load_config

    config = load_config(args.config, check_access=False)
    path = config.spool_path
    if not path.exists():
        print(f"sensor-gateway: no spool at {path}", file=sys.stderr)
        return EXIT_ERROR
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    sql = "SELECT id, sink, created_ns, reason, line FROM dead_letter"
    params: tuple[Any, ...] = ()
    if args.sink:
        sql += " WHERE sink = ?"
        params = (args.sink,)
    rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, args.limit)).fetchall()
    total = db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
    db.close()
    if args.export:
        text = "".join(f"{r[4]}\n" for r in reversed(rows))
        if args.export == "-":
            sys.stdout.write(text)
        else:
            Path(args.export).write_text(text)
            print(f"wrote {len(rows)} line(s) to {args.export}", file=sys.stderr)
        return EXIT_OK
    if not rows:
        print("no dead-lettered points")
        return EXIT_OK
    print(f"{total} dead-lettered point(s); newest {len(rows)}:")
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r[2] / 1e9))
        print(f"#{r[0]} {when} [{r[1]}] {r[3][:200]}\n    {r[4][:300]}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(args.state_dir, duration=args.duration, live=not args.quiet, keep=args.keep)
