"""``sensor-gateway query`` over InfluxDB 2.x: Flux through influxdb-client.

No InfluxDB 2.x can run here, so the server is :class:`FakeInfluxDB2`, a stand-in that
answers recorded responses (annotated CSV as InfluxDB 2.x writes it) to the exact Flux
text each test expects: the tests check the Flux we send (escaping included) and the rows
we print (golden output).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from fake_influx_query import FakeInfluxDB2, Recorded, flux_csv
from hypothesis import given
from hypothesis import strategies as st
from servers import free_port

from gateway.cli import main
from gateway.query.backend import QueryRequest
from gateway.query.flux import build_flux, flux_string

S = 1_000_000_000
T0 = "2024-05-01T10:00:00Z"
HOSTILE = 'boiler "A" C:\\x\'; DROP") |> drop(fn: (r) => true) // ${bucket}'
HOSTILE_FLUX = '"boiler \\"A\\" C:\\\\x\'; DROP\\") |> drop(fn: (r) => true) // \\${bucket}"'
START, STOP = "1970-01-01T00:00:00Z", "2024-05-01T12:00:00Z"


# --- Flux string literals ------------------------------------------------------------


def _read_flux_string(text: str) -> tuple[str, int]:
    """Read the Flux string literal at the start of ``text`` as the Flux spec defines it
    (escapes ``\\n \\r \\t \\\\ \\" \\${``; ``${`` unescaped is interpolation): its value
    and the index of its closing quote. Raises ValueError on interpolation."""
    assert text[0] == '"'
    out, i = [], 1
    escapes = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"'}
    while True:
        ch = text[i]
        if ch == '"':
            return "".join(out), i
        if ch == "\\":
            nxt = text[i + 1]
            if nxt == "$" and text[i + 2] == "{":
                out.append("${")
                i += 3
                continue
            out.append(escapes[nxt])
            i += 2
            continue
        if ch == "$" and text[i + 1 : i + 2] == "{":
            raise ValueError("interpolation")
        out.append(ch)
        i += 1


@given(st.text())
def test_a_flux_string_literal_holds_exactly_the_text(value: str) -> None:
    literal = flux_string(value)
    decoded, end = _read_flux_string(literal)
    assert (decoded, end) == (value, len(literal) - 1)  # the value, and nothing after it


def test_flux_string_escapes() -> None:
    assert flux_string(HOSTILE) == HOSTILE_FLUX
    assert flux_string("a\nb\tc\r${x}$y") == '"a\\nb\\tc\\r\\${x}$y"'


def test_the_flux_we_build() -> None:
    req = QueryRequest(
        device=HOSTILE,
        measurement='m"x',
        fields=["temperature", 'f") or true or ("'],
        start_ns=1_714_557_600 * S,
        end_ns=1_714_557_600 * S + 123,
        limit=10,
    )
    assert build_flux(req, 'sen"sors') == (
        'from(bucket: "sen\\"sors")\n'
        "  |> range(start: 2024-05-01T10:00:00.000000000Z, stop: 2024-05-01T10:00:00.000000123Z)\n"
        '  |> filter(fn: (r) => r._measurement == "m\\"x")\n'
        f'  |> filter(fn: (r) => r["device"] == {HOSTILE_FLUX})\n'
        '  |> filter(fn: (r) => r._field == "temperature" or r._field == "f\\") or true or (\\"")\n'
        "  |> tail(n: 10)\n"
    )
    latest = build_flux(QueryRequest(latest=True, limit=None), "b")
    assert latest.endswith("|> range(start: 1970-01-01T00:00:00Z)\n  |> last()\n")
    windows = QueryRequest(start_ns=0, every_ns=300 * S, agg="max", limit=None)
    assert build_flux(windows, "b") == (
        'import "types"\n\n'
        'from(bucket: "b")\n'
        "  |> range(start: 1970-01-01T00:00:00.000000000Z)\n"
        "  |> filter(fn: (r) => types.isNumeric(v: r._value))\n"
        '  |> aggregateWindow(every: 300000000000ns, fn: max, createEmpty: false, timeSrc: "_start")\n'
    )
    last = QueryRequest(start_ns=0, every_ns=60 * S, agg="last", limit=5)
    assert "isNumeric" not in build_flux(last, "b")


# --- recorded answers ----------------------------------------------------------------

Value = int | float | bool | str
_TYPES = {int: "long", float: "double", bool: "boolean", str: "string"}


def table(
    number: int,
    device: str,
    site: str,
    field: str,
    points: Sequence[tuple[str, Value]],
    *,
    start: str = START,
    stop: str = STOP,
    result: str = "_result",
) -> str:
    """One Flux table (series ``heating,device,site`` + field) as InfluxDB 2.x writes it in
    annotated CSV: ``#group``, ``#datatype``, ``#default``, the header, the records."""
    kind = _TYPES[type(points[0][1])]
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "#group",
            "false",
            "false",
            "true",
            "true",
            "false",
            "false",
            "true",
            "true",
            "true",
            "true",
        ]
    )
    w.writerow(
        [
            "#datatype",
            "string",
            "long",
            "dateTime:RFC3339",
            "dateTime:RFC3339",
            "dateTime:RFC3339",
            kind,
            "string",
            "string",
            "string",
            "string",
        ]
    )
    w.writerow(["#default", result, "", "", "", "", "", "", "", "", ""])
    w.writerow(
        [
            "",
            "result",
            "table",
            "_start",
            "_stop",
            "_time",
            "_value",
            "_field",
            "_measurement",
            "device",
            "site",
        ]
    )
    for when, value in points:
        text = str(value).lower() if isinstance(value, bool) else str(value)
        w.writerow(["", "", number, start, stop, when, text, field, "heating", device, site])
    return out.getvalue()


# Newest three of each series + field, as `tail(n: 3)` gives them. The plain device's
# readings are 10.123456789 s after the hostile one's.
TAIL3 = flux_csv(
    table(
        0,
        HOSTILE,
        "home",
        "seq",
        [("2024-05-01T10:01:00Z", 3), ("2024-05-01T10:01:20Z", 4), ("2024-05-01T10:01:40Z", 5)],
    ),
    table(
        1,
        HOSTILE,
        "home",
        "temperature",
        [
            ("2024-05-01T10:01:00Z", 20.85),
            ("2024-05-01T10:01:20Z", 21.1),
            ("2024-05-01T10:01:40Z", 21.35),
        ],
    ),
    table(
        2,
        "plain",
        "lab",
        "seq",
        [
            ("2024-05-01T10:01:10.123456789Z", 3),
            ("2024-05-01T10:01:30.123456789Z", 4),
            ("2024-05-01T10:01:50.123456789Z", 5),
        ],
    ),
    table(
        3,
        "plain",
        "lab",
        "temperature",
        [
            ("2024-05-01T10:01:10.123456789Z", 11.05),
            ("2024-05-01T10:01:30.123456789Z", 11.3),
            ("2024-05-01T10:01:50.123456789Z", 11.55),
        ],
    ),
)


@pytest.fixture
def fake() -> Iterator[FakeInfluxDB2]:
    with FakeInfluxDB2() as server:
        yield server


def config(tmp_path: Path, url: str, **extra: str) -> Path:
    path = tmp_path / "gateway.toml"
    settings = {
        "url": url,
        "api": "v2",
        "org": "home",
        "bucket": "sensors",
        "token": "s3cret-token",
    }
    settings.update(extra)
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    path.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n[sinks.influxdb]\n{body}\n')
    return path


def run(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str) -> tuple[int, str, str]:
    code = main(["query", "-c", str(cfg), *args])
    out, err = capsys.readouterr()
    return code, out, err


# --- against the fake server ---------------------------------------------------------


@pytest.mark.integration
def test_newest_readings_golden_csv_and_what_was_sent(
    fake: FakeInfluxDB2, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flux = 'from(bucket: "sensors")\n  |> range(start: 1970-01-01T00:00:00Z)\n  |> tail(n: 3)\n'
    fake.record({flux: TAIL3})
    code, out, err = run(capsys, config(tmp_path, fake.url), "-o", "csv", "-n", "3")
    assert code == 0, err
    assert err == f'sensor-gateway: answered by InfluxDB {fake.url} (bucket "sensors", Flux)\n'
    hostile = '"' + HOSTILE.replace('"', '""') + '"'
    assert out == (  # -n counts readings: three lines, newest last, each with both fields
        "time,measurement,device,site,seq,temperature\n"
        "2024-05-01T10:01:30.123456789Z,heating,plain,lab,4,11.3\n"
        f"2024-05-01T10:01:40.000000000Z,heating,{hostile},home,5,21.35\n"
        "2024-05-01T10:01:50.123456789Z,heating,plain,lab,5,11.55\n"
    )
    ping, sent = fake.requests
    assert (ping.path, sent.method, sent.path, sent.params) == (
        "/ping",
        "POST",
        "/api/v2/query",
        {"org": "home"},
    )
    assert sent.headers["Authorization"] == "Token s3cret-token"
    assert sent.query == flux
    assert json.loads(sent.body)["dialect"]["annotations"] == ["datatype", "group", "default"]
    assert "s3cret-token" not in out + err


@pytest.mark.integration
def test_a_hostile_device_name_is_only_ever_a_value(
    fake: FakeInfluxDB2, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flux = (
        'from(bucket: "sensors")\n  |> range(start: 1970-01-01T00:00:00Z)\n'
        f'  |> filter(fn: (r) => r["device"] == {HOSTILE_FLUX})\n  |> tail(n: 1000)\n'
    )
    fake.record({flux: flux_csv(table(0, HOSTILE, "home", "seq", [("2024-05-01T10:00:00Z", 7)]))})
    code, out, _ = run(capsys, config(tmp_path, fake.url), "-o", "json", "-d", HOSTILE)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "time": "2024-05-01T10:00:00.000000000Z",
            "measurement": "heating",
            "device": HOSTILE,
            "site": "home",
            "seq": 7,
        }
    ]
    assert fake.queries()[0].query == flux


@pytest.mark.integration
def test_windows_are_aligned_and_typed(
    fake: FakeInfluxDB2, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--since`` mid-window: Flux times the first window at the range's start (10:01:30
    here); the output puts it at its window's start, 10:00:00, as InfluxQL does."""
    flux = (
        'import "types"\n\nfrom(bucket: "sensors")\n'
        "  |> range(start: 2024-05-01T10:01:30.000000000Z, stop: 2024-05-01T10:06:00.000000000Z)\n"
        '  |> filter(fn: (r) => r._field == "temperature")\n'
        "  |> filter(fn: (r) => types.isNumeric(v: r._value))\n"
        '  |> aggregateWindow(every: 120000000000ns, fn: mean, createEmpty: false, timeSrc: "_start")\n'
        "  |> tail(n: 1000)\n"
    )
    bounds = {"start": "2024-05-01T10:01:30Z", "stop": "2024-05-01T10:06:00Z"}
    fake.record(
        {
            flux: flux_csv(
                table(
                    0,
                    "plain",
                    "lab",
                    "temperature",
                    [
                        ("2024-05-01T10:01:30Z", 11.5),
                        ("2024-05-01T10:02:00Z", 12.25),
                        ("2024-05-01T10:04:00Z", 13.0),
                    ],
                    **bounds,
                ),
            )
        }
    )
    args = ["-o", "csv", "-f", "temperature", "--every", "2m", "--agg", "mean"]
    code, out, err = run(
        capsys,
        config(tmp_path, fake.url),
        *args,
        "--since",
        "2024-05-01T10:01:30Z",
        "--until",
        "2024-05-01T10:06:00Z",
    )
    assert code == 0, err
    assert out == (
        "time,measurement,device,site,temperature\n"
        "2024-05-01T10:00:00.000000000Z,heating,plain,lab,11.5\n"
        "2024-05-01T10:02:00.000000000Z,heating,plain,lab,12.25\n"
        "2024-05-01T10:04:00.000000000Z,heating,plain,lab,13.0\n"
    )


@pytest.mark.integration
def test_latest_is_per_series_and_field_with_its_own_time(
    fake: FakeInfluxDB2, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flux = 'from(bucket: "sensors")\n  |> range(start: 1970-01-01T00:00:00Z)\n  |> last()\n'
    fake.record(
        {
            flux: flux_csv(
                table(0, "plain", "lab", "door", [("2024-05-01T09:00:00Z", True)]),
                table(1, "plain", "lab", "temperature", [("2024-05-01T10:00:00Z", 11.0)]),
            )
        }
    )
    code, out, _ = run(capsys, config(tmp_path, fake.url), "-o", "csv", "--latest")
    assert code == 0
    assert out == (
        "time,measurement,device,site,door,temperature\n"
        "2024-05-01T09:00:00.000000000Z,heating,plain,lab,true,\n"
        "2024-05-01T10:00:00.000000000Z,heating,plain,lab,,11.0\n"
    )


@pytest.mark.integration
def test_list(fake: FakeInfluxDB2, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flux = (
        'data = from(bucket: "sensors")\n  |> range(start: 1970-01-01T00:00:00Z)\n'
        'data |> count() |> yield(name: "count")\n'
        'data |> first() |> yield(name: "first")\n'
        'data |> last() |> yield(name: "last")\n'
    )
    count = (  # count() drops _time
        "#group,false,false,true,true,false,true,true,true,true\n"
        "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,long,string,string,string,string\n"
        "#default,count,,,,,,,,\n"
        ",result,table,_start,_stop,_value,_field,_measurement,device,site\n"
        f",,0,{START},{STOP},30,seq,heating,plain,lab\n"
        f",,1,{START},{STOP},12,seq,heating,plain,attic\n"
    )
    first = table(0, "plain", "lab", "seq", [("2024-05-01T10:00:00Z", 0)], result="first")
    first2 = table(1, "plain", "attic", "seq", [("2024-04-30T10:00:00Z", 0)], result="first")
    last = table(0, "plain", "lab", "seq", [("2024-05-01T10:09:40Z", 29)], result="last")
    last2 = table(1, "plain", "attic", "seq", [("2024-05-01T08:00:00Z", 11)], result="last")
    fake.record(
        {
            flux: flux_csv(
                count, first + first2[first2.index(",,1") :], last + last2[last2.index(",,1") :]
            )
        }
    )
    code = main(["query", "-c", str(config(tmp_path, fake.url)), "--list"])
    out, _ = capsys.readouterr()
    assert code == 0
    header, line = out.splitlines()
    assert header.split() == ["measurement", "device", "field", "count", "first", "last"]
    assert line.split()[:4] == ["heating", "plain", "seq", "42"]  # both tag sets of "plain"
    assert fake.queries()[0].query == flux


ERROR_TABLE = (
    "#datatype,string,string\n#group,true,true\n#default,,\n,error,reference\n"
    ',"runtime error @4:6-4:41: aggregateWindow: unsupported aggregate column type string",\n'
)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (
            Recorded(401, '{"code":"unauthorized","message":"unauthorized access"}'),
            5,
            "refused the credentials (HTTP 401: unauthorized access); check token / token_file",
        ),
        (
            Recorded(
                404,
                '{"code":"not found","message":"failed to initialize execute state: could not find bucket \\"sensors\\""}',
            ),
            6,
            'has no bucket "sensors" in the organization "home" (failed to initialize execute state: could not find bucket "sensors")',
        ),
        (
            Recorded(
                404, '{"code":"not found","message":"organization name \\"home\\" not found"}'
            ),
            6,
            'has no bucket "sensors" in the organization "home" (organization name "home" not found)',
        ),
        (
            Recorded(
                400,
                '{"code":"invalid","message":"compilation failed: error at @1:1-1:5: undefined identifier frm"}',
            ),
            1,
            "rejected the Flux query (HTTP 400: compilation failed: error at @1:1-1:5: undefined identifier frm)",
        ),
        (
            Recorded(200, ERROR_TABLE, "text/csv; charset=utf-8"),
            1,
            "failed the Flux query: runtime error @4:6-4:41: aggregateWindow: unsupported aggregate column type string",
        ),
    ],
)
def test_errors_and_exit_codes(
    fake: FakeInfluxDB2,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    answer: Recorded,
    code: int,
    message: str,
) -> None:
    fake.script(answer)
    got, out, err = run(capsys, config(tmp_path, fake.url), "--source", "influxdb")
    assert (got, out) == (code, "")
    assert err.startswith(f"sensor-gateway: InfluxDB {fake.url} {message}")
    assert err.count("\n") == 1
    assert "s3cret-token" not in err


@pytest.mark.integration
def test_unreachable_exit_4_or_the_local_store_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cfg = config(tmp_path, url)
    code, _, err = run(capsys, cfg, "--source", "influxdb")
    assert (code, err) == (
        4,
        f"sensor-gateway: cannot connect to InfluxDB at {url}: [Errno 111] Connection refused\n",
    )
    code, _, err = run(capsys, cfg)
    assert code == 1  # the local store answers: there is none here
    assert err.splitlines()[0] == (
        f"sensor-gateway: cannot connect to InfluxDB at {url}: [Errno 111] Connection refused; "
        "reading the local store instead"
    )


def test_org_is_needed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, "http://127.0.0.1:9", org="")
    code, _, err = run(capsys, cfg, "--source", "influxdb")
    assert code == 2
    assert "org is needed to query InfluxDB 2.x" in err


@pytest.mark.integration
def test_units_from_the_state_dir_label_influxdb_answers_too(
    fake: FakeInfluxDB2, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flux = 'from(bucket: "sensors")\n  |> range(start: 1970-01-01T00:00:00Z)\n  |> tail(n: 3)\n'
    fake.record({flux: TAIL3})
    (tmp_path / "units.json").write_text(
        json.dumps({HOSTILE: {"temperature": "degC"}, "plain": {"temperature": "degC"}})
    )
    code, out, _ = run(capsys, config(tmp_path, fake.url), "-n", "3")
    assert code == 0
    assert out.splitlines()[0].split()[-3:] == ["seq", "temperature", "(degC)"]
    code, out, _ = run(capsys, config(tmp_path, fake.url), "-n", "3", "-o", "json")
    assert json.loads(out.splitlines()[0])["units"] == {"temperature": "degC"}


def test_neither_influxdb_client_nor_plotext_is_imported_until_used() -> None:
    """``query`` over the local store, InfluxDB 1.x or 3 never pays for influxdb-client
    or plotext; the daemon imports no query module at all."""
    code = (
        "import sys, gateway.cli, gateway.query.command, gateway.app;"
        "print(sorted(m for m in ('influxdb_client', 'plotext') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"
