"""``sensor-gateway capture``: record a real device into a capture file the test kit replays."""

from __future__ import annotations

import argparse
import ast
import asyncio
import re
import signal
import sys
from pathlib import Path
from typing import Literal, cast

from gateway.errors import DeviceUnavailable
from gateway.options import parse_duration
from gateway.serial.ports import LineSettings

__all__ = ["add_parser", "cmd_capture", "parse_framing", "parse_request"]

_FRAMING = re.compile(r"(?P<bits>[5-8])(?P<parity>[NEOMS])(?P<stop>[12])", re.IGNORECASE)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``capture`` subcommand."""
    p = sub.add_parser(
        "capture", help="record what a serial device sends into a capture file for tests"
    )
    p.add_argument(
        "port", metavar="PORT", help="a device's port value: a path, by-id/by-path, usb:VID:PID"
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="the capture file to write")
    p.add_argument("--baud", type=int, default=9600, help="line speed (default 9600)")
    p.add_argument(
        "--framing", default="8N1", help="data bits, parity, stop bits (default 8N1; e.g. 7E1)"
    )
    p.add_argument(
        "--duration", metavar="DUR", help='stop after this long ("30s", "5m"; default: Ctrl-C)'
    )
    p.add_argument(
        "--request",
        metavar="BYTES",
        help='for a polled device: send this (hex, or a quoted literal like "READ\\n") '
        "every --interval",
    )
    p.add_argument(
        "--interval", metavar="DUR", default="1s", help='between requests (default "1s")'
    )
    p.set_defaults(func=cmd_capture)


def parse_framing(text: str) -> tuple[int, str, int]:
    """``"7E1"`` → (7, "E", 1); ValueError saying what is expected."""
    match = _FRAMING.fullmatch(text.strip())
    if match is None:
        msg = f"--framing {text!r}: expected data bits, parity, stop bits like 8N1 or 7E1"
        raise ValueError(msg)
    return int(match["bits"]), match["parity"].upper(), int(match["stop"])


def parse_request(text: str) -> bytes:
    """Request bytes as hex (``"ff 01 86"``) or a quoted bytes literal (``'"READ\\n"'``)."""
    text = text.strip()
    try:
        if text[:1] in "\"'":
            value = ast.literal_eval("b" + text)
            if not isinstance(value, bytes):
                raise ValueError("not bytes")
        else:
            value = bytes.fromhex(text)
    except (ValueError, SyntaxError):
        msg = f'--request {text!r}: expected hex (ff 01 86 …) or a quoted literal ("READ\\n")'
        raise ValueError(msg) from None
    if not value:
        raise ValueError("--request is empty")
    return value


def cmd_capture(args: argparse.Namespace) -> int:
    """Record until --duration, Ctrl-C or SIGTERM; print a summary on stderr."""
    from gateway.testing.record import record_capture

    try:
        bits, parity, stop_bits = parse_framing(args.framing)
        duration = None if args.duration is None else parse_duration(args.duration)
        interval = parse_duration(args.interval)
        request = None if args.request is None else parse_request(args.request)
        if args.baud <= 0:
            raise ValueError(f"--baud {args.baud}: must be positive")
        if interval <= 0:
            raise ValueError(f"--interval {args.interval}: must be positive")
    except ValueError as err:
        print(f"sensor-gateway capture: {err}", file=sys.stderr)
        return 2
    line = LineSettings(
        args.baud,
        cast(Literal[5, 6, 7, 8], bits),
        cast(Literal["N", "E", "O", "M", "S"], parity),
        cast(Literal[1, 2], stop_bits),
    )

    async def record() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        until = f"for {args.duration}" if duration is not None else "until Ctrl-C"
        print(f"recording {args.port} at {line} {until} into {args.output}", file=sys.stderr)
        try:
            result = await record_capture(
                args.port,
                args.output,
                line=line,
                duration=duration,
                request=request,
                interval=interval,
                stop=stop,
            )
        except DeviceUnavailable as err:
            print(f"sensor-gateway capture: {err}", file=sys.stderr)
            return 1
        except OSError as err:
            print(f"sensor-gateway capture: cannot write {args.output}: {err}", file=sys.stderr)
            return 1
        print(
            f"{result.device_bytes} bytes from the device in {result.events} events"
            + (f" ({result.requests} requests)" if request is not None else "")
            + f" over {result.seconds:.1f} s written to {args.output} ({result.ended})",
            file=sys.stderr,
        )
        if not result.device_bytes:
            print(
                "the device sent nothing: check --baud, the wiring, or --request", file=sys.stderr
            )
        return 0 if result.ended in ("duration", "stopped") else 1

    return asyncio.run(record())
