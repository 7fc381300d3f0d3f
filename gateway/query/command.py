"""``sensor-gateway query``: choose the backend, run the request, print, exit code.

The argparse lines live in ``gateway.cli``; this is everything after them. Which source
answered is always said on stderr, as is "no readings match" (not an error: exit 0).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from gateway.pipeline.unitcatalog import read_units
from gateway.query.backend import (
    Backend,
    QueryArgumentError,
    QueryError,
    QueryRequest,
)
from gateway.query.flux import FluxBackend
from gateway.query.formats import fit_table, format_csv, format_json, format_summary
from gateway.query.influxdb3 import InfluxDB3Backend
from gateway.query.influxql import InfluxQLBackend
from gateway.query.local import LocalBackend
from gateway.query.plot import plot, require_plotext
from gateway.query.timespec import parse_every, parse_time

if TYPE_CHECKING:
    from gateway.config import Config, InfluxSection

__all__ = ["SOURCES", "influx_backend", "main", "request_from_args", "select_backend"]

SOURCES = ("local", "influxdb")
_PROG = "sensor-gateway"


def influx_backend(section: InfluxSection) -> InfluxQLBackend | FluxBackend:
    """The backend for ``[sinks.influxdb]``: InfluxQL over ``/query`` for v1, Flux for v2
    (:mod:`gateway.query.flux`), InfluxQL over ``/api/v3/query_influxql`` for v3."""
    token = section.resolved_token() if (section.token or section.token_file) else ""
    if section.api == "v2":
        return FluxBackend(
            section.url,
            section.org,
            section.bucket,
            token,
            timeout=section.timeout,
            verify_tls=section.verify_tls,
        )
    if section.api == "v3":
        return InfluxDB3Backend(
            section.url,
            section.database,
            token=token,
            timeout=section.timeout,
            verify_tls=section.verify_tls,
        )
    password = section.resolved_password() if (section.password or section.password_file) else ""
    return InfluxQLBackend(
        section.url,
        section.database or section.bucket,
        retention_policy=section.retention_policy,
        token=token,
        username=section.username,
        password=password,
        timeout=section.timeout,
        verify_tls=section.verify_tls,
    )


def select_backend(
    config: Config | None, source: str | None, demo_store: Path | None, err: TextIO
) -> Backend:
    """The backend ``--source`` names; by default the configured InfluxDB when it answers
    ``/ping``, else the local store (saying why on ``err``)."""
    if demo_store is not None:
        if source == "influxdb":
            raise QueryArgumentError("--source influxdb: the demo has only the local store")
        return LocalBackend(demo_store)
    assert config is not None
    if source == "local":
        return LocalBackend(config.local_path)
    section = config.influx
    if section is None:
        if source == "influxdb":
            raise QueryArgumentError(
                "--source influxdb: the configuration has no enabled [sinks.influxdb]"
            )
        return LocalBackend(config.local_path)
    influx = influx_backend(section)
    if source == "influxdb":
        return influx
    why_not = influx.reachable()
    if why_not is None:
        return influx
    print(f"{_PROG}: {why_not}; reading the local store instead", file=err)
    return LocalBackend(config.local_path)


def request_from_args(args: argparse.Namespace, now: int | None = None) -> QueryRequest:
    """The request the command line asks for. Raises :class:`QueryArgumentError`."""
    now = time.time_ns() if now is None else now

    def when(option: str, text: str | None) -> int | None:
        if text is None:
            return None
        try:
            return parse_time(text, now)
        except QueryError as err:
            raise QueryArgumentError(f"{option}: {err}") from None

    every = getattr(args, "every", None)
    agg = getattr(args, "agg", None)
    if agg is not None and every is None:
        raise QueryArgumentError("--agg needs --every (the window length, e.g. --every 5m)")
    return QueryRequest(
        device=args.device,
        measurement=args.measurement,
        fields=args.fields or None,
        start_ns=when("--since", args.start),
        end_ns=when("--until", args.end),
        limit=args.limit,
        latest=args.latest,
        every_ns=parse_every(every) if every is not None else None,
        agg=(agg or "mean") if every is not None else None,
    )


def main(
    args: argparse.Namespace,
    demo_store: Path,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``sensor-gateway query`` for parsed ``args``; the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        return _run(args, demo_store, out, err)
    except QueryError as error:
        print(f"{_PROG}: {error}", file=err)
        return error.exit_code


def _run(args: argparse.Namespace, demo_store: Path, out: TextIO, err: TextIO) -> int:
    req = None if args.list else request_from_args(args)
    plotting = getattr(args, "plot", False)
    if plotting:
        if args.list or args.format != "table":
            option = "--list" if args.list else f"-o {args.format}"
            raise QueryArgumentError(f"--plot and {option} cannot be combined")
        require_plotext()  # before asking any server
    config = None
    if not args.demo:
        from gateway.config import load_config

        config = load_config(args.config, check_access=False)
    # Units label the output whatever the source: the gateway keeps them beside its state.
    units = read_units(demo_store.parent if config is None else config.state_dir)
    backend = select_backend(
        config, getattr(args, "source", None), demo_store if args.demo else None, err
    )
    answered = f"{_PROG}: answered by {backend.description}"
    if req is None:
        items = backend.summary()
        print(answered, file=err)
        text = format_summary(items)
        if text:
            out.write(text)
        else:
            print(f"{_PROG}: nothing is stored", file=err)
        return 0
    rows = backend.rows(req)
    print(answered, file=err)
    for note in getattr(backend, "notes", ()):
        print(f"{_PROG}: {note}", file=err)
    if plotting:
        size = shutil.get_terminal_size()
        color = out.isatty() and not os.environ.get("NO_COLOR")
        text = plot(rows, width=size.columns, height=size.lines - 2, units=units, color=color)
        if rows and not text:
            print(f"{_PROG}: nothing to plot: no field is a number (-o table shows them)", file=err)
    elif args.format == "table":
        width = shutil.get_terminal_size().columns if out.isatty() else None
        text, hidden = fit_table(rows, width=width, units=units)
        if hidden:
            print(
                f"{_PROG}: {len(hidden)} column(s) left out to fit the terminal "
                f"({', '.join(hidden)}); choose fields with -f, or use -o csv",
                file=err,
            )
    else:
        text = format_csv(rows) if args.format == "csv" else format_json(rows, units)
    if not rows:
        print(f"{_PROG}: no readings match", file=err)
    out.write(text)
    return 0
