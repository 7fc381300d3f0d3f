"""``sensor-gateway query`` over InfluxDB 3 Core: InfluxQL over ``/api/v3/query_influxql``.

No InfluxDB 3 can run here, so the server is :class:`FakeInfluxDB3`, a stand-in that
answers recorded responses (the JSON rows Core writes for ``format=json``) to the exact
InfluxQL each test expects: the tests check the statements we send (one per request, the
long ranges split into pieces of at most 72 h) and the rows we print (golden output).
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_influx_query import FakeInfluxDB3, Recorded, v3_rows
from servers import free_port

from gateway.cli import main
from gateway.query.backend import QueryArgumentError
from gateway.query.influxdb3 import split_range

S = 1_000_000_000
H = 3600 * S
MAY1 = 1_714_521_600 * S  # 2024-05-01T00:00:00Z
DAY = 24 * H
HOSTILE = 'boiler "A" C:\\x\'; DROP MEASUREMENT heating; --'
SHOW_FIELDS = "SHOW FIELD KEYS FROM /.*/"
SHOW_TAGS = "SHOW TAG KEYS FROM /.*/"
FIELDS = v3_rows(
    [
        {"iox::measurement": "heating", "fieldKey": "seq", "fieldType": "integer"},
        {"iox::measurement": "heating", "fieldKey": "temperature", "fieldType": "float"},
    ]
)
TAGS = v3_rows(
    [
        {"iox::measurement": "heating", "tagKey": "device"},
        {"iox::measurement": "heating", "tagKey": "site"},
    ]
)


def row(when: str, device: str, site: str, **fields: Any) -> dict[str, Any]:
    """One row as Core writes it: nulls left out, time without a zone."""
    return {"iox::measurement": "heating", "time": when, "device": device, "site": site, **fields}


def select(
    start: int, end: int, what: str = "*", tail: str = "GROUP BY * ORDER BY time DESC LIMIT 1000"
) -> str:
    return f"SELECT {what} FROM /.*/ WHERE time >= {start} AND time < {end} {tail}"


@pytest.fixture
def fake() -> Iterator[FakeInfluxDB3]:
    with FakeInfluxDB3() as server:
        server.record({SHOW_FIELDS: FIELDS, SHOW_TAGS: TAGS})
        yield server


def config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n[sinks.influxdb]\nurl = "{url}"\napi = "v3"\n'
        'database = "sensors"\ntoken = "apiv3_s3cret"\n'
    )
    return path


def run(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str) -> tuple[int, str, str]:
    code = main(["query", "-c", str(cfg), *args])
    out, err = capsys.readouterr()
    return code, out, err


def ranges(fake: FakeInfluxDB3) -> list[tuple[int, int]]:
    """The ``time >= a AND time < b`` of each SELECT sent, in the order sent."""
    found = []
    for sent in fake.queries():
        if m := re.search(r"WHERE time >= (-?\d+) AND time < (-?\d+)", sent.query):
            found.append((int(m[1]), int(m[2])))
    return found


# --- splitting a range ---------------------------------------------------------------


def test_split_range() -> None:
    assert split_range(0, 7 * DAY, 72 * H) == [(0, 72 * H), (72 * H, 144 * H), (144 * H, 168 * H)]
    assert split_range(5, 6, 72 * H) == [(5, 6)]
    assert split_range(6, 6, 72 * H) == []
    # With windows, pieces end on window boundaries (multiples of 7 h from the epoch).
    start = MAY1 + 1
    pieces = split_range(start, start + 7 * DAY, 72 * H, every=7 * H)
    assert [b % (7 * H) for _, b in pieces[:-1]] == [0] * (len(pieces) - 1)
    assert all(0 < b - a <= 72 * H for a, b in pieces)
    assert [a for a, _ in pieces[1:]] == [b for _, b in pieces[:-1]]
    assert (pieces[0][0], pieces[-1][1]) == (start, start + 7 * DAY)
    with pytest.raises(QueryArgumentError, match="--every: InfluxDB 3 answers at most 72 h"):
        split_range(0, DAY, 72 * H, every=4 * DAY)


# --- against the fake server ---------------------------------------------------------


@pytest.mark.integration
def test_a_7_day_range_is_3_requests_newest_first_golden_csv(
    fake: FakeInfluxDB3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    may4, may7, may8 = MAY1 + 3 * DAY, MAY1 + 6 * DAY, MAY1 + 7 * DAY
    fake.record(
        {
            select(may7, may8): v3_rows(
                [
                    row("2024-05-07T10:00:20.123456789", HOSTILE, "home", seq=9, temperature=20.5),
                    row("2024-05-07T10:00:00", HOSTILE, "home", seq=8),
                ]
            ),
            select(may4, may7): v3_rows([]),
            select(MAY1, may4): v3_rows(
                [row("2024-05-01T00:00:00.5", "plain", "lab", seq=1, temperature=10.0)]
            ),
        }
    )
    code, out, err = run(
        capsys,
        config(tmp_path, fake.url),
        "-o",
        "csv",
        "--since",
        "2024-05-01T00:00:00Z",
        "--until",
        "2024-05-08T00:00:00Z",
    )
    assert code == 0, err
    hostile = '"' + HOSTILE.replace('"', '""') + '"'
    assert out == (
        "time,measurement,device,site,seq,temperature\n"
        "2024-05-01T00:00:00.500000000Z,heating,plain,lab,1,10.0\n"
        f"2024-05-07T10:00:00.000000000Z,heating,{hostile},home,8,\n"
        f"2024-05-07T10:00:20.123456789Z,heating,{hostile},home,9,20.5\n"
    )
    assert err == (
        f'sensor-gateway: answered by InfluxDB 3 {fake.url} (database "sensors", '
        "/api/v3/query_influxql)\n"
    )
    # Three SELECTs, newest piece first; together contiguous and not overlapping.
    assert ranges(fake) == [(may7, may8), (may4, may7), (MAY1, may4)]
    for sent in fake.queries():
        assert (sent.method, sent.params["db"], sent.params["format"]) == ("GET", "sensors", "json")
        assert sent.headers["Authorization"] == "Bearer apiv3_s3cret"
        assert "apiv3_s3cret" not in json.dumps(sent.params)
    assert [s.query for s in fake.queries()][:2] == [SHOW_FIELDS, select(may7, may8)]


@pytest.mark.integration
def test_a_limit_met_by_the_newest_piece_reads_no_older_one(
    fake: FakeInfluxDB3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    may7, may8 = MAY1 + 6 * DAY, MAY1 + 7 * DAY
    fake.record(
        {
            select(may7, may8, '"seq"', "GROUP BY * ORDER BY time DESC LIMIT 2"): v3_rows(
                [
                    row("2024-05-07T10:00:40", "plain", "lab", seq=3),
                    row("2024-05-07T10:00:20", "plain", "lab", seq=2),
                ]
            )
        }
    )
    code, out, _ = run(
        capsys,
        config(tmp_path, fake.url),
        "-o",
        "csv",
        "-n",
        "2",
        "-f",
        "seq",
        "--since",
        "2024-05-01T00:00:00Z",
        "--until",
        "2024-05-08T00:00:00Z",
    )
    assert code == 0
    assert out.splitlines()[1:] == [
        "2024-05-07T10:00:20.000000000Z,heating,plain,lab,2",
        "2024-05-07T10:00:40.000000000Z,heating,plain,lab,3",
    ]
    assert ranges(fake) == [(may7, may8)]
    assert fake.queries()[1].query == (
        f'SELECT "seq" FROM /.*/ WHERE time >= {may7} AND time < {may8} '
        "GROUP BY * ORDER BY time DESC LIMIT 2"
    )


@pytest.mark.integration
def test_windows_never_cut_across_pieces(
    fake: FakeInfluxDB3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    every = 7 * H
    start, end = MAY1, MAY1 + 7 * DAY
    # The boundaries, worked out here: a piece ends at the last multiple of 7 h (from
    # the epoch) at most 72 h after it starts.
    bounds = [start]
    while bounds[-1] < end:
        bounds.append(min((bounds[-1] + 72 * H) // every * every, end))
    pieces = list(itertools.pairwise(bounds))
    assert len(pieces) == 3
    tail = f"GROUP BY time({every}ns), * fill(none) ORDER BY time DESC LIMIT 1000"
    answers = {select(a, b, "max(*)", tail): v3_rows([]) for a, b in pieces}
    a, b = pieces[1]
    window = b - every  # the last window of the middle piece ends exactly at its end
    when = f"2024-05-0{1 + (window - MAY1) // DAY}T{(window - MAY1) % DAY // H:02d}:00:00"
    answers[select(a, b, "max(*)", tail)] = v3_rows(
        [row(when, "plain", "lab", max_seq=41, max_temperature=12.5)]
    )
    fake.record(answers)
    code, out, err = run(
        capsys,
        config(tmp_path, fake.url),
        "-o",
        "json",
        "--every",
        "7h",
        "--agg",
        "max",
        "--since",
        "2024-05-01T00:00:00Z",
        "--until",
        "2024-05-08T00:00:00Z",
    )
    assert code == 0, err
    assert ranges(fake) == list(reversed(pieces))
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "time": when + ".000000000Z",
            "measurement": "heating",
            "device": "plain",
            "site": "lab",
            "seq": 41,
            "temperature": 12.5,
        }
    ]


@pytest.mark.integration
def test_latest_without_since_reads_the_last_7_days_and_says_so(
    fake: FakeInfluxDB3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    end = MAY1 + 7 * DAY
    pieces = [(MAY1 + 6 * DAY, end), (MAY1 + 3 * DAY, MAY1 + 6 * DAY), (MAY1, MAY1 + 3 * DAY)]
    tail = "GROUP BY * ORDER BY time DESC LIMIT 1"
    answers: dict[str, Recorded] = {}
    for a, b in pieces:
        for field in ("seq", "temperature"):
            q = f'SELECT "{field}" FROM "heating" WHERE time >= {a} AND time < {b} {tail}'
            answers[q] = v3_rows([])
    newest, middle, oldest = pieces
    answers[f'SELECT "seq" FROM "heating" WHERE time >= {newest[0]} AND time < {end} {tail}'] = (
        v3_rows([row("2024-05-07T09:00:00", "plain", "lab", seq=7)])
    )
    answers[
        f'SELECT "seq" FROM "heating" WHERE time >= {oldest[0]} AND time < {oldest[1]} {tail}'
    ] = v3_rows(
        [
            row("2024-05-02T09:00:00", "plain", "lab", seq=3),
            row("2024-05-02T08:00:00", "gone", "attic", seq=1),
        ]
    )
    answers[
        f'SELECT "temperature" FROM "heating" WHERE time >= {middle[0]} AND time < {middle[1]} {tail}'
    ] = v3_rows([row("2024-05-05T09:00:00", "plain", "lab", temperature=11.5)])
    fake.record(answers)
    code, out, err = run(
        capsys,
        config(tmp_path, fake.url),
        "-o",
        "csv",
        "--latest",
        "--until",
        "2024-05-08T00:00:00Z",
    )
    assert code == 0, err
    assert out == (
        "time,measurement,device,site,seq,temperature\n"
        "2024-05-02T08:00:00.000000000Z,heating,gone,attic,1,\n"
        "2024-05-05T09:00:00.000000000Z,heating,plain,lab,,11.5\n"
        "2024-05-07T09:00:00.000000000Z,heating,plain,lab,7,\n"
    )
    assert err.splitlines()[1] == (
        "sensor-gateway: InfluxDB 3 answers at most 72 h per query: reading the last 7 days "
        "(--since for more)"
    )
    assert ranges(fake) == [p for p in pieces for _ in range(2)]


@pytest.mark.integration
def test_a_hostile_device_name_is_a_quoted_string(
    fake: FakeInfluxDB3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = MAY1, MAY1 + H
    q = (
        f'SELECT * FROM /.*/ WHERE "device" = \'boiler "A" C:\\\\x\\\'; DROP MEASUREMENT heating; --\' '
        f"AND time >= {a} AND time < {b} GROUP BY * ORDER BY time DESC LIMIT 1000"
    )
    fake.record({q: v3_rows([row("2024-05-01T00:30:00", HOSTILE, "home", seq=1)])})
    code, out, _ = run(
        capsys,
        config(tmp_path, fake.url),
        "-o",
        "csv",
        "-d",
        HOSTILE,
        "--since",
        "2024-05-01T00:00:00Z",
        "--until",
        "2024-05-01T01:00:00Z",
    )
    assert code == 0
    assert fake.queries()[1].query == q
    assert len(out.splitlines()) == 2


@pytest.mark.integration
@pytest.mark.parametrize(
    ("answer", "code", "message"),
    [
        (Recorded(401, "", "text/plain"), 5, "refused the token (HTTP 401"),
        (
            Recorded(404, '{"error":"query error: database not found: sensors","data":null}'),
            6,
            'has no database "sensors" (query error: database not found: sensors)',
        ),
        (
            Recorded(200, "<html>not json</html>", "text/html"),
            1,
            "answered something that is not JSON",
        ),
        (Recorded(200, '{"results":[]}'), 1, "did not answer like /api/v3/query_influxql"),
    ],
)
def test_errors_and_exit_codes(
    fake: FakeInfluxDB3,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    answer: Recorded,
    code: int,
    message: str,
) -> None:
    fake.script(answer)
    got, out, err = run(
        capsys, config(tmp_path, fake.url), "--source", "influxdb", "--since", "-1h"
    )
    assert (got, out) == (code, "")
    assert err.startswith(f"sensor-gateway: InfluxDB 3 {fake.url} {message}")
    assert "apiv3_s3cret" not in err


@pytest.mark.integration
def test_windows_longer_than_a_piece_are_a_bad_argument(
    fake: FakeInfluxDB3, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, config(tmp_path, fake.url), "--since", "-30d", "--every", "4d")
    assert code == 2
    assert "--every: InfluxDB 3 answers at most 72 h per query" in err


@pytest.mark.integration
def test_unreachable_falls_back_to_the_local_store_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, _, err = run(capsys, config(tmp_path, url), "--source", "influxdb", "--since", "-1h")
    assert code == 4
    assert err.startswith(f"sensor-gateway: cannot connect to InfluxDB at {url}: ")
    code, _, err = run(capsys, config(tmp_path, url))
    assert code == 1  # the local store answers: there is none here
    assert err.splitlines()[0].endswith("; reading the local store instead")
