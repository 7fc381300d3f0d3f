"""The simulated serial devices of ``bench/serial_fleet.py``: one process, N pseudo-terminals.

Prints ``{"paths": [...]}`` on stdout once the ptys exist, then obeys stdin:
``go <seconds>`` starts the devices (stream: a ``seq=<n> t=21.5`` line every 1/rate s
on each device; polled: answers every ``READ`` line with the same), ``stop`` ends the
run and prints ``{"sent": [...], "requests": [[t, ...], ...]}`` (lines sent per device
over the whole run; request arrival times in the window per device, monotonic seconds;
polled devices answer outside the window too, so no port is reopened for silence); closing stdin closes the ptys. One thread, one select
loop, a fixed schedule (no drift): the devices cost little next to the gateway.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from pathlib import Path

# Run as a script from bench/: import the gateway from this checkout.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from gateway.testing import SerialPty  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["stream", "polled"], required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument(
        "--stagger",
        action="store_true",
        help="spread the devices' lines evenly over each period (default: all at once)",
    )
    args = parser.parse_args()
    ptys = [SerialPty() for _ in range(args.devices)]
    print(json.dumps({"paths": [p.path for p in ptys]}), flush=True)
    sent = [0] * len(ptys)
    requests: list[list[float]] = [[] for _ in ptys]
    bufs = [b""] * len(ptys)
    by_fd = {p.master_fd: i for i, p in enumerate(ptys)}
    stdin = sys.stdin.fileno()
    period = 1.0 / args.rate
    # A tick sends one line of every device at once, or of one device when staggered.
    step = period / len(ptys) if args.stagger else period
    group = 1 if args.stagger else len(ptys)
    running_until = 0.0
    start = 0.0
    tick = 0
    while True:
        now = time.monotonic()
        streaming = args.mode == "stream" and now < running_until
        wait = max(0.0, start + tick * step - now) if streaming else 1.0
        fds = [stdin, *by_fd] if args.mode == "polled" else [stdin]
        ready, _, _ = select.select(fds, [], [], wait)
        if stdin in ready:
            line = sys.stdin.readline()
            if not line:
                break
            cmd = line.split()
            if cmd and cmd[0] == "go":
                start = time.monotonic()
                running_until = start + float(cmd[1])
                tick = 0
            elif cmd and cmd[0] == "stop":
                running_until = 0.0
                print(json.dumps({"sent": sent, "requests": requests}), flush=True)
        now = time.monotonic()
        while streaming and now >= start + tick * step:
            for k in range(group):
                i = (tick * group + k) % len(ptys)
                ptys[i].write(f"seq={sent[i]} t=21.5\n".encode())
                sent[i] += 1
            tick += 1
        if args.mode == "polled":
            for fd in ready:
                i = by_fd.get(fd)
                if i is None:
                    continue
                try:
                    bufs[i] += os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                *lines, bufs[i] = bufs[i].split(b"\n")
                for req in lines:
                    if req.strip() != b"READ":
                        continue
                    # Always answered (an unanswered device is reopened); counted in
                    # the window only.
                    ptys[i].write(f"seq={sent[i]} t=21.5\n".encode())
                    sent[i] += 1
                    if now < running_until:
                        requests[i].append(now)
    for pty in ptys:
        pty.close()


if __name__ == "__main__":
    main()
