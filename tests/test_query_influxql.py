"""``sensor-gateway query`` against a real InfluxDB 1.x, with data the gateway wrote.

One gateway subprocess (``api = "v1"`` sink and the local store both on) is fed device
lines with chosen device times through a pty; then ``query`` reads them back from
InfluxDB (InfluxQL over ``/query``) and from the local store, and both must agree with
what was written. One device's name carries quotes, a space and ``'; DROP ...``: it must
select exactly that device and change nothing on the server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from gateway_proc import GatewayProcess
from servers import (
    HOST,
    Influx1,
    Influx1Factory,
    InfluxQueryError,
    SerialPty,
    free_port,
    wait_until,
)

from gateway.cli import main

pytestmark = pytest.mark.integration

S = 1_000_000_000
N = 30
STEP_S = 20
HOSTILE = 'boiler "A" C:\\x\'; DROP MEASUREMENT heating; --'
MEASUREMENT = "heating"


@dataclass(frozen=True)
class Written:
    config: Path
    db: str
    server: Influx1
    base_ns: int
    """The first reading's time, on a 10-minute boundary."""
    points: list[dict[str, Any]]
    """Every reading written: time, device, site, seq, temperature."""


def _value(device: int, i: int) -> float:
    # Never whole numbers (InfluxDB's JSON would show 20.0 as 20) and not symmetric.
    return round((20.1 if device == 0 else 10.3) + i * 0.25 + (i % 3) * 0.5, 2)


@pytest.fixture(scope="module")
def written(influx1: Influx1, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Written]:
    tmp = tmp_path_factory.mktemp("query-influxql")
    db = "query_influxql"
    influx1.create_database(db)
    base_ns = ((time.time_ns() // S) // 600 * 600 - 1800) * S
    with SerialPty() as pty_a, SerialPty() as pty_b:
        device = {
            "driver": "line",
            "time_field": "ts",
            "measurement": MEASUREMENT,
            "max_clock_skew_s": 3600,
            "fields": {"seq": {"type": "int"}},
        }
        gw = GatewayProcess(
            tmp / "gw",
            {
                "sinks": {
                    "influxdb": {
                        "url": influx1.url,
                        "api": "v1",
                        "database": db,
                        "flush_interval": 0.1,
                    },
                    "local": {"enabled": True, "flush_interval": 0.1},
                },
                "devices": {
                    HOSTILE: {**device, "port": pty_a.path, "tags": {"site": "home"}},
                    "plain": {**device, "port": pty_b.path, "tags": {"site": "lab"}},
                },
            },
        )
        try:
            gw.start()
            gw.wait_for_log("serial port opened", occurrence=2)
            points = []
            for index, (pty, name, site) in enumerate(
                ((pty_a, HOSTILE, "home"), (pty_b, "plain", "lab"))
            ):
                lines = []
                for i in range(N):
                    t_ns = base_ns + i * STEP_S * S
                    value = _value(index, i)
                    lines.append(f"seq={i} temperature={value} ts={t_ns // 1_000_000}\n")
                    points.append(
                        {"time": t_ns, "device": name, "site": site, "seq": i, "temperature": value}
                    )
                os.write(pty.master_fd, "".join(lines).encode())

            def all_in() -> bool:
                try:
                    return len(influx1.points(db, MEASUREMENT)) == 2 * N
                except InfluxQueryError:
                    return False

            wait_until(all_in, timeout=20, what=f"{2 * N} points in InfluxDB")
            assert gw.stop() == 0  # the local store has them all too
        finally:
            gw.close()
        yield Written(gw.config_path, db, influx1, base_ns, points)


def query(written: Written, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["query", "-c", str(written.config), *args])
    out, err = capsys.readouterr()
    return code, out, err


def json_rows(out: str) -> list[dict[str, Any]]:
    """``-o json`` (one object per reading) as one dict per field value: time_ns,
    device, field, value."""
    rows = []
    for line in out.splitlines():
        reading = json.loads(line)
        assert list(reading)[:4] == ["time", "measurement", "device", "site"]
        for name in ("seq", "temperature"):
            if reading.get(name) is not None:
                rows.append(
                    {
                        "time_ns": ns(reading["time"]),
                        "device": reading["device"],
                        "field": name,
                        "value": reading[name],
                    }
                )
    return rows


def stamp(time_ns: int) -> str:
    """RFC 3339 with nine fraction digits, UTC."""
    moment = datetime.fromtimestamp(time_ns // S, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{moment}.{time_ns % S:09d}Z"


def ns(rfc3339: str) -> int:
    """Nanoseconds for ``2024-05-01T10:00:00.123456789Z``."""
    whole, frac = rfc3339.removesuffix("Z").split(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return int(seconds) * S + int(frac)


# --- against the server --------------------------------------------------------------


def test_influxdb_answers_by_default_and_says_so(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = query(written, capsys, "-o", "json", "-d", "plain", "-f", "seq", "-n", "10")
    assert code == 0
    assert err == (
        f'sensor-gateway: answered by InfluxDB {written.server.url} (database "{written.db}")\n'
    )
    assert [r["value"] for r in json_rows(out)] == list(range(N - 10, N))  # -n counts readings


def test_both_sources_give_the_same_rows(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    outs = {}
    for source in ("local", "influxdb"):
        code, out, _ = query(written, capsys, "--source", source, "-o", "json", "-n", "100000")
        assert code == 0
        outs[source] = json_rows(out)
    assert outs["influxdb"] == outs["local"]
    for fmt in ("csv", "table"):
        texts = {
            source: query(written, capsys, "--source", source, "-o", fmt, "-n", "3")[1]
            for source in ("local", "influxdb")
        }
        assert texts["influxdb"] == texts["local"]
        assert len(texts["local"].splitlines()) == 1 + 3
    header, *lines = texts["local"].splitlines()
    assert header.split() == ["time", "measurement", "device", "site", "seq", "temperature"]
    assert lines[-1].split()[1:] == [MEASUREMENT, "plain", "lab", "29", f"{_value(1, N - 1)!r}"]
    code, out, _ = query(written, capsys, "--source", "influxdb", "-o", "csv", "-n", "3")
    t28, t29 = (stamp(written.base_ns + i * STEP_S * S) for i in (N - 2, N - 1))
    hostile = '"' + HOSTILE.replace('"', '""') + '"'
    assert out == (
        "time,measurement,device,site,seq,temperature\n"
        f"{t28},heating,plain,lab,28,{_value(1, 28)}\n"
        f"{t29},heating,{hostile},home,29,{_value(0, 29)}\n"
        f"{t29},heating,plain,lab,29,{_value(1, 29)}\n"
    )
    got = {(r["time_ns"], r["device"], r["field"]): r["value"] for r in outs["influxdb"]}
    expected = {
        (p["time"], p["device"], f): p[f] for p in written.points for f in ("seq", "temperature")
    }
    assert got == expected


def test_a_hostile_device_name_selects_that_device_and_injects_nothing(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = query(written, capsys, "--source", "influxdb", "-o", "json", "-d", HOSTILE)
    assert code == 0
    rows = json_rows(out)
    assert {r["device"] for r in rows} == {HOSTILE}
    assert len(rows) == 2 * N
    code, out, err = query(written, capsys, "--source", "influxdb", "-d", "x' OR '1'='1")
    assert (code, out) == (0, "")
    assert err.endswith("sensor-gateway: no readings match\n")
    # The measurement is still there, with every point.
    assert len(written.server.points(written.db, MEASUREMENT)) == 2 * N


def test_time_range_and_latest(written: Written, capsys: pytest.CaptureFixture[str]) -> None:
    base_s = written.base_ns // S
    since, until = str(base_s + 5 * STEP_S), str(base_s + 9 * STEP_S)
    args = ["--source", "influxdb", "-o", "json", "-d", "plain", "-f", "seq"]
    code, out, _ = query(written, capsys, *args, "--since", since, "--until", until)
    assert code == 0
    assert [r["value"] for r in json_rows(out)] == [5, 6, 7, 8]
    code, out, _ = query(written, capsys, "--source", "influxdb", "-o", "json", "--latest")
    latest = {(r["device"], r["field"]): r["value"] for r in json_rows(out)}
    assert latest == {
        (HOSTILE, "seq"): N - 1,
        (HOSTILE, "temperature"): _value(0, N - 1),
        ("plain", "seq"): N - 1,
        ("plain", "temperature"): _value(1, N - 1),
    }


def test_list_from_influxdb(written: Written, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = query(written, capsys, "--source", "influxdb", "--list")
    assert code == 0
    assert query(written, capsys, "--source", "local", "--list")[1] == out
    header, *lines = out.splitlines()
    assert header.split() == ["measurement", "device", "field", "count", "first", "last"]
    assert [line.split("  ")[0:1] for line in lines] == [[MEASUREMENT]] * 4
    assert sum(f"  {N}  " in line for line in lines) == 4


def test_missing_database_exit_6(
    written: Written, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n'
        f'[sinks.influxdb]\nurl = "{written.server.url}"\napi = "v1"\ndatabase = "nosuch_db"\n'
    )
    code = main(["query", "-c", str(config), "--source", "influxdb"])
    _, err = capsys.readouterr()
    assert code == 6
    assert 'has no database "nosuch_db"' in err


def _config(tmp_path: Path, url: str, *extra: str) -> Path:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "\n".join(
            [
                f'[gateway]\nstate_dir = "{tmp_path}"',
                f'[sinks.influxdb]\nurl = "{url}"\napi = "v1"\ndatabase = "query_influxql"',
                *extra,
            ]
        )
        + "\n"
    )
    return config


def test_unreachable_exit_4_or_the_local_store_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://{HOST}:{free_port()}"
    config = _config(tmp_path, url)
    code = main(["query", "-c", str(config), "--source", "influxdb"])
    _, err = capsys.readouterr()
    assert code == 4
    assert err.startswith(f"sensor-gateway: cannot connect to InfluxDB at {url}: ")
    code = main(["query", "-c", str(config)])
    _, err = capsys.readouterr()
    assert code == 1  # the local store answers: there is none here
    assert err.splitlines() == [
        f"sensor-gateway: cannot connect to InfluxDB at {url}: [Errno 111] Connection refused; "
        "reading the local store instead",
        f"sensor-gateway: no local store at {tmp_path / 'readings.db'} — is the local sink "
        "enabled? (sinks.local)",
    ]


def test_wrong_password_exit_5_and_never_shown(
    influx1_factory: Influx1Factory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = influx1_factory(auth=True)
    server.create_database("query_influxql")
    config = _config(
        tmp_path, server.url, f'username = "{server.admin_user}"', 'password = "wrong-secret"'
    )
    code = main(["query", "-c", str(config), "--source", "influxdb"])
    out, err = capsys.readouterr()
    assert code == 5
    assert f"InfluxDB {server.url} refused the credentials (HTTP 401" in err
    assert "wrong-secret" not in out + err
    right = _config(
        tmp_path,
        server.url,
        f'username = "{server.admin_user}"',
        f'password = "{server.admin_password}"',
    )
    code = main(["query", "-c", str(right), "--source", "influxdb"])
    _, err = capsys.readouterr()
    assert code == 0
    assert err.endswith("sensor-gateway: no readings match\n")


# --- windows and aggregates ------------------------------------------------------------


def _expected_windows(
    written: Written, every_s: int, agg: str
) -> dict[tuple[int, str, str], float | int]:
    """Each window's aggregate, computed here from the points written."""
    groups: dict[tuple[int, str, str], list[float | int]] = {}
    for p in written.points:
        start = p["time"] - p["time"] % (every_s * S)
        for field in ("seq", "temperature"):
            groups.setdefault((start, p["device"], field), []).append(p[field])
    reduce = {
        "mean": lambda v: sum(v) / len(v),
        "sum": sum,
        "min": min,
        "max": max,
        "last": lambda v: v[-1],
        "count": len,
    }[agg]
    return {key: reduce(values) for key, values in groups.items()}


@pytest.mark.parametrize("agg", ["mean", "min", "max", "last", "count", "sum"])
@pytest.mark.parametrize("source", ["local", "influxdb"])
def test_windows_and_aggregates(
    written: Written, capsys: pytest.CaptureFixture[str], source: str, agg: str
) -> None:
    since = str(written.base_ns // S)
    code, out, err = query(
        written, capsys, "--source", source, "-o", "json", "--since", since,
        "--every", "2m", "--agg", agg,
    )  # fmt: skip
    assert code == 0, err
    rows = json_rows(out)
    got = {(r["time_ns"], r["device"], r["field"]): r["value"] for r in rows}
    expected = _expected_windows(written, 120, agg)
    assert got == pytest.approx(expected, rel=1e-12)
    assert len(rows) == len(expected) == 5 * 2 * 2
    kinds = {(r["field"], type(r["value"])) for r in rows}
    if agg == "mean":
        assert kinds == {("seq", float), ("temperature", float)}
    elif agg == "count":
        assert kinds == {("seq", int), ("temperature", int)}
    else:
        assert kinds == {("seq", int), ("temperature", float)}
    assert [r["time_ns"] for r in rows] == sorted(r["time_ns"] for r in rows)


def test_every_needs_since_and_a_valid_window(
    written: Written, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = query(written, capsys, "--every", "5m")
    assert code == 2
    assert "sensor-gateway: --every needs --since" in err
    code, _, err = query(written, capsys, "--since", "-1h", "--every", "5 minutes")
    assert code == 2
    assert 'sensor-gateway: --every: invalid window "5 minutes"' in err


def test_latest_is_per_field_when_the_newest_point_lacks_one(
    influx1: Influx1, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Points written here (not by the gateway; a database of its own) so that the
    newest has only ``a``: ``b``'s latest is from the point before, with its time."""
    db, t = "query_influxql_sparse", 1_714_557_600 * S
    influx1.create_database(db)
    influx1.write_lines(
        db, [f"sparse,device=s a=1,b=10 {t}", f"sparse,device=s a=2,b=20 {t + S}", f"sparse,device=s a=3 {t + 2 * S}"]
    )  # fmt: skip
    config = tmp_path / "gateway.toml"
    config.write_text(_config(tmp_path, influx1.url).read_text().replace("query_influxql", db))
    code = main(["query", "-c", str(config), "--source", "influxdb", "-o", "csv", "--latest"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out == (
        "time,measurement,device,a,b\n"
        "2024-05-01T10:00:01.000000000Z,sparse,s,,20.0\n"
        "2024-05-01T10:00:02.000000000Z,sparse,s,3.0,\n"
    )

