"""Queries over the local store: filters, ranges, latest, limit, formats, time parsing."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, timedelta, timezone
from pathlib import Path

import pytest

from gateway.cli import _parser
from gateway.query import (
    QueryArgumentError,
    QueryError,
    QueryRequest,
    Row,
    SeriesSummary,
    command,
    format_csv,
    format_json,
    format_summary,
    format_table,
    parse_time,
    rfc3339,
    run_query,
    summary,
)
from gateway.query.formats import fit_table
from gateway.query.influxql import build_select, quote_ident, quote_string
from gateway.sinks.local import LocalStore

T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z
S = 1_000_000_000
PLUS2 = timezone(timedelta(hours=2))

LINES = [
    f"climate,device=d1,site=home temperature=21.5,humidity=45.2,battery=87i {T0}",
    f'climate,device=d2,site=lab temperature=19.0,door=true,note="hello, \\"world\\"" {T0 + 30 * S}',
    f"climate,device=d1,site=home temperature=21.75,humidity=45.0 {T0 + 60 * S}",
    f"power,device=d1,phase=L1 watts=120i {T0 + 90 * S + 123_456_789}",
    f"status ok=false {T0 + 120 * S}",
]
D1 = {"device": "d1", "site": "home"}
D2 = {"device": "d2", "site": "lab"}
P1 = {"device": "d1", "phase": "L1"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("query") / "readings.db"

    async def build() -> None:
        local = LocalStore(path, retention=None)
        await local.open()
        result = await local.write(LINES)
        await local.close()
        assert result.rejected == []

    asyncio.run(build())
    return path


def q(store: Path, **kwargs: object) -> list[tuple[float, str, str | None, str, object]]:
    """The rows as (time offset in s from T0, measurement, device, field, value)."""
    return [
        ((r.time_ns - T0) / S, r.measurement, r.device, r.field, r.value)
        for r in run_query(store, QueryRequest(**kwargs))  # type: ignore[arg-type]
    ]


# --- selecting ---------------------------------------------------------------------


def test_everything_in_time_order_with_ties_in_series_order(store: Path) -> None:
    assert run_query(store, QueryRequest()) == [
        Row(T0, "climate", "d1", D1, "battery", 87),
        Row(T0, "climate", "d1", D1, "humidity", 45.2),
        Row(T0, "climate", "d1", D1, "temperature", 21.5),
        Row(T0 + 30 * S, "climate", "d2", D2, "door", True),
        Row(T0 + 30 * S, "climate", "d2", D2, "note", 'hello, "world"'),
        Row(T0 + 30 * S, "climate", "d2", D2, "temperature", 19.0),
        Row(T0 + 60 * S, "climate", "d1", D1, "humidity", 45.0),
        Row(T0 + 60 * S, "climate", "d1", D1, "temperature", 21.75),
        Row(T0 + 90 * S + 123_456_789, "power", "d1", P1, "watts", 120),
        Row(T0 + 120 * S, "status", None, {}, "ok", False),
    ]


def test_filter_by_device(store: Path) -> None:
    assert q(store, device="d1") == [
        (0, "climate", "d1", "battery", 87),
        (0, "climate", "d1", "humidity", 45.2),
        (0, "climate", "d1", "temperature", 21.5),
        (60, "climate", "d1", "humidity", 45.0),
        (60, "climate", "d1", "temperature", 21.75),
        (90.123456789, "power", "d1", "watts", 120),
    ]


def test_filter_by_measurement_and_fields(store: Path) -> None:
    assert q(store, measurement="climate", fields=["temperature", "door"]) == [
        (0, "climate", "d1", "temperature", 21.5),
        (30, "climate", "d2", "door", True),
        (30, "climate", "d2", "temperature", 19.0),
        (60, "climate", "d1", "temperature", 21.75),
    ]


def test_filters_that_match_nothing(store: Path) -> None:
    assert q(store, device="nope") == []
    assert q(store, measurement="power", fields=["temperature"]) == []


def test_time_range_includes_start_and_excludes_end(store: Path) -> None:
    got = q(store, start_ns=T0 + 30 * S, end_ns=T0 + 60 * S, fields=["temperature"])
    assert got == [(30, "climate", "d2", "temperature", 19.0)]
    assert [r[0] for r in q(store, start_ns=T0 + 61 * S)] == [90.123456789, 120]
    assert [r[0] for r in q(store, end_ns=T0 + 1)] == [0, 0, 0]


def test_limit_keeps_the_most_recent_readings_in_ascending_order(store: Path) -> None:
    """The limit counts readings (time + series), not field values."""
    assert q(store, limit=2) == [
        (90.123456789, "power", "d1", "watts", 120),
        (120, "status", None, "ok", False),
    ]
    assert q(store, limit=2, device="d1") == [
        (60, "climate", "d1", "humidity", 45.0),
        (60, "climate", "d1", "temperature", 21.75),
        (90.123456789, "power", "d1", "watts", 120),
    ]
    assert q(store, limit=3, device="d1") == [
        (0, "climate", "d1", "battery", 87),
        (0, "climate", "d1", "humidity", 45.2),
        (0, "climate", "d1", "temperature", 21.5),
        *q(store, limit=2, device="d1"),
    ]
    assert len(q(store, limit=None)) == 10


def test_latest_gives_the_newest_value_of_each_series_field(store: Path) -> None:
    assert q(store, latest=True, device="d1") == [
        (0, "climate", "d1", "battery", 87),
        (60, "climate", "d1", "humidity", 45.0),
        (60, "climate", "d1", "temperature", 21.75),
        (90.123456789, "power", "d1", "watts", 120),
    ]


def test_latest_within_a_range_and_with_a_limit(store: Path) -> None:
    assert q(store, latest=True, measurement="climate", end_ns=T0 + 60 * S) == [
        (0, "climate", "d1", "battery", 87),
        (0, "climate", "d1", "humidity", 45.2),
        (0, "climate", "d1", "temperature", 21.5),
        (30, "climate", "d2", "door", True),
        (30, "climate", "d2", "note", 'hello, "world"'),
        (30, "climate", "d2", "temperature", 19.0),
    ]
    assert len(q(store, latest=True, limit=2)) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "--limit: must be at least 1, got 0"),
        (
            {"start_ns": T0, "end_ns": T0},
            "--since/--until: the start (2024-05-01T10:00:00.000000000Z) is not before the end "
            "(2024-05-01T10:00:00.000000000Z)",
        ),
        (
            {"every_ns": 60 * S, "agg": "mean"},
            "--every needs --since (where the first window starts), e.g. --since -1h",
        ),
        ({"every_ns": 60 * S}, "--every and --agg go together: give both or neither"),
    ],
)
def test_invalid_requests(store: Path, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(QueryArgumentError) as err:
        run_query(store, QueryRequest(**kwargs))  # type: ignore[arg-type]
    assert str(err.value) == message
    assert err.value.exit_code == 2


def test_missing_store_says_how_to_get_one(tmp_path: Path) -> None:
    path = tmp_path / "readings.db"
    with pytest.raises(QueryError) as err:
        run_query(path, QueryRequest())
    assert str(err.value) == (
        f"no local store at {path} — is the local sink enabled? (sinks.local)"
    )
    with pytest.raises(QueryError, match="no local store at"):
        summary(path)
    assert not path.exists()  # a query never creates the store


def test_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a database, just text " * 100)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    for path in (text, other):
        with pytest.raises(QueryError) as err:
            run_query(path, QueryRequest())
        assert str(err.value).startswith(f"{path} is not a sensor-gateway local store (")


def test_summary_lists_each_measurement_device_field(store: Path) -> None:
    assert summary(store) == [
        SeriesSummary("climate", "d1", "battery", 1, T0, T0),
        SeriesSummary("climate", "d1", "humidity", 2, T0, T0 + 60 * S),
        SeriesSummary("climate", "d1", "temperature", 2, T0, T0 + 60 * S),
        SeriesSummary("climate", "d2", "door", 1, T0 + 30 * S, T0 + 30 * S),
        SeriesSummary("climate", "d2", "note", 1, T0 + 30 * S, T0 + 30 * S),
        SeriesSummary("climate", "d2", "temperature", 1, T0 + 30 * S, T0 + 30 * S),
        SeriesSummary(
            "power", "d1", "watts", 1, T0 + 90 * S + 123_456_789, T0 + 90 * S + 123_456_789
        ),
        SeriesSummary("status", None, "ok", 1, T0 + 120 * S, T0 + 120 * S),
    ]


async def test_rows_in_sample_and_in_recent_read_as_one_store(store: Path, tmp_path: Path) -> None:
    # The same lines, some folded into ``sample`` and the rest still in ``recent``, and
    # one point first written with another value, folded, then written again.
    path = tmp_path / "split.db"
    local = LocalStore(path, retention=None)
    await local.open()
    try:
        await local.write([LINES[0], LINES[2].replace("temperature=21.75", "temperature=0.0")])
        await local.write(LINES[1:2])
        await local.fold()
        await local.write(LINES[2:])
        with sqlite3.connect(path) as db:
            tables = [
                db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("sample", "recent")
            ]
        assert tables == [8, 4]  # the points of LINES[2] are in both
        requests = [
            QueryRequest(limit=None),
            QueryRequest(limit=3),
            QueryRequest(latest=True),
            QueryRequest(latest=True, end_ns=T0 + 61 * S),
            QueryRequest(device="d1", start_ns=T0 + 30 * S, end_ns=T0 + 91 * S),
            QueryRequest(fields=["temperature"], limit=2),
        ]
        for req in requests:
            assert run_query(path, req) == run_query(store, req), req
        assert summary(path) == summary(store)
    finally:
        await local.close()
    assert run_query(path, QueryRequest(limit=None)) == run_query(store, QueryRequest(limit=None))


def test_windows_mean_takes_numbers_only(store: Path) -> None:
    """Two-minute windows from T0: booleans and strings have no mean."""
    rows = run_query(store, QueryRequest(start_ns=T0, every_ns=120 * S, agg="mean"))
    assert rows == [
        Row(T0, "climate", "d1", D1, "battery", 87.0),
        Row(T0, "climate", "d1", D1, "humidity", (45.2 + 45.0) / 2),
        Row(T0, "climate", "d1", D1, "temperature", (21.5 + 21.75) / 2),
        Row(T0, "climate", "d2", D2, "temperature", 19.0),
        Row(T0, "power", "d1", P1, "watts", 120.0),
    ]
    assert [type(r.value) for r in rows] == [float] * 5


def test_windows_count_and_last_take_every_value(store: Path) -> None:
    req = QueryRequest(start_ns=T0, every_ns=60 * S, agg="count")
    assert [(r.time_ns - T0, r.device, r.field, r.value) for r in run_query(store, req)] == [
        (0, "d1", "battery", 1),
        (0, "d1", "humidity", 1),
        (0, "d1", "temperature", 1),
        (0, "d2", "door", 1),
        (0, "d2", "note", 1),
        (0, "d2", "temperature", 1),
        (60 * S, "d1", "humidity", 1),
        (60 * S, "d1", "temperature", 1),
        (60 * S, "d1", "watts", 1),
        (120 * S, None, "ok", 1),
    ]
    req = QueryRequest(start_ns=T0, every_ns=3600 * S, agg="last", limit=2)
    assert [(r.field, r.value) for r in run_query(store, req)] == [("watts", 120), ("ok", False)]


# --- formatting --------------------------------------------------------------------


def test_format_table(store: Path) -> None:
    """One line per reading, one column per field, newest last; blanks where missing."""
    assert format_table(run_query(store, QueryRequest()), tz=PLUS2) == (
        "time                           measurement  device  phase  site  battery  door  humidity  note            ok     temperature  watts\n"
        "2024-05-01T12:00:00.000+02:00  climate      d1             home  87             45.2                             21.5\n"
        '2024-05-01T12:00:30.000+02:00  climate      d2             lab            true            hello, "world"         19.0\n'
        "2024-05-01T12:01:00.000+02:00  climate      d1             home                 45.0                             21.75\n"
        "2024-05-01T12:01:30.123+02:00  power        d1      L1                                                                        120\n"
        "2024-05-01T12:02:00.000+02:00  status                                                                     false\n"
    )  # fmt: skip


def test_format_table_fits_the_width() -> None:
    """Values are cut to their column name's width first, then columns go from the right."""
    rows = [
        Row(T0, "m", "d", {"device": "d"}, "text", "a rather long text value"),
        Row(T0, "m", "d", {"device": "d"}, "zeta", 1.5),
    ]
    wide = format_table(rows, tz=UTC)
    assert wide.splitlines()[1] == (
        "2024-05-01T10:00:00.000+00:00  m            d       a rather long text value  1.5"
    )
    assert fit_table(rows, tz=UTC, width=max(map(len, wide.splitlines()))) == (wide, [])
    assert fit_table(rows, tz=UTC, width=70) == (
        "time                           measurement  device  text          zeta\n"
        "2024-05-01T10:00:00.000+00:00  m            d       a rather lo…  1.5\n",
        [],
    )
    assert fit_table(rows, tz=UTC, width=60) == (
        "time                           measurement  device  text\n"
        "2024-05-01T10:00:00.000+00:00  m            d       a rathe…\n",
        ["zeta"],
    )


@pytest.fixture
def tz_plus2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "XYZ-2")  # POSIX: 2 hours east of UTC
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tz_plus2")
def test_format_table_uses_the_system_time_zone_by_default(store: Path) -> None:
    text = format_table(run_query(store, QueryRequest(limit=1)))
    assert text.splitlines()[1] == "2024-05-01T12:02:00.000+02:00  status               false"


def test_format_csv(store: Path) -> None:
    assert format_csv(run_query(store, QueryRequest())) == (
        "time,measurement,device,phase,site,battery,door,humidity,note,ok,temperature,watts\n"
        "2024-05-01T10:00:00.000000000Z,climate,d1,,home,87,,45.2,,,21.5,\n"
        '2024-05-01T10:00:30.000000000Z,climate,d2,,lab,,true,,"hello, ""world""",,19.0,\n'
        "2024-05-01T10:01:00.000000000Z,climate,d1,,home,,,45.0,,,21.75,\n"
        "2024-05-01T10:01:30.123456789Z,power,d1,L1,,,,,,,,120\n"
        "2024-05-01T10:02:00.000000000Z,status,,,,,,,,false,,\n"
    )


def test_a_field_named_like_a_tag_gets_its_own_column() -> None:
    rows = [
        Row(0, "m", "d", {"device": "d", "site": "x"}, "site", 1),
        Row(0, "m", "d", {"device": "d", "site": "x"}, "device", 2),
    ]
    assert format_csv(rows) == (
        "time,measurement,device,site,device_field,site_field\n"
        "1970-01-01T00:00:00.000000000Z,m,d,x,2,1\n"
    )


def test_format_json(store: Path) -> None:
    rows = run_query(store, QueryRequest(measurement="climate"))
    assert format_json(rows) == (
        '{"time":"2024-05-01T10:00:00.000000000Z","measurement":"climate","device":"d1",'
        '"site":"home","battery":87,"door":null,"humidity":45.2,"note":null,"temperature":21.5}\n'
        '{"time":"2024-05-01T10:00:30.000000000Z","measurement":"climate","device":"d2",'
        '"site":"lab","battery":null,"door":true,"humidity":null,"note":"hello, \\"world\\"",'
        '"temperature":19.0}\n'
        '{"time":"2024-05-01T10:01:00.000000000Z","measurement":"climate","device":"d1",'
        '"site":"home","battery":null,"door":null,"humidity":45.0,"note":null,"temperature":21.75}\n'
    )


def test_format_json_keeps_floats_floats(store: Path) -> None:
    rows = run_query(store, QueryRequest(device="d2", fields=["temperature"]))
    assert '"temperature":19.0}' in format_json(rows)


def test_formats_of_no_rows() -> None:
    assert format_table([]) == ""
    assert format_csv([]) == ""
    assert format_json([]) == ""
    assert format_summary([]) == ""


def test_format_summary(store: Path) -> None:
    text = format_summary(summary(store), tz=UTC)
    assert text.splitlines()[:3] == [
        "measurement  device  field        count  first                          last",
        "climate      d1      battery      1      2024-05-01T10:00:00.000+00:00  2024-05-01T10:00:00.000+00:00",
        "climate      d1      humidity     2      2024-05-01T10:00:00.000+00:00  2024-05-01T10:01:00.000+00:00",
    ]
    assert text.splitlines()[-1] == (
        "status       -       ok           1      2024-05-01T10:02:00.000+00:00  2024-05-01T10:02:00.000+00:00"
    )


@pytest.mark.parametrize(
    ("time_ns", "text"),
    [
        (0, "1970-01-01T00:00:00.000000000Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
        (T0 + 123_456_789, "2024-05-01T10:00:00.123456789Z"),
    ],
)
def test_rfc3339(time_ns: int, text: str) -> None:
    assert rfc3339(time_ns) == text


# --- parsing times -----------------------------------------------------------------

NOW = T0 + 12 * 3600 * S  # 2024-05-01T22:00:00Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        (" NOW ", NOW),
        ("-1h", NOW - 3600 * S),
        ("-30m", NOW - 1800 * S),
        ("-2d", NOW - 2 * 86400 * S),
        ("-1w", NOW - 7 * 86400 * S),
        ("-90s", NOW - 90 * S),
        ("-250ms", NOW - 250_000_000),
        ("-1h30m", NOW - 5400 * S),
        ("now-15m", NOW - 900 * S),
        ("1714557600", T0),
        ("1714557600.25", T0 + 250_000_000),
        ("0", 0),
        ("2024-05-01T10:00:00Z", T0),
        ("2024-05-01t10:00:00z", T0),
        ("2024-05-01T12:00:00+02:00", T0),
        ("2024-05-01T05:30:00-0430", T0),
        ("2024-05-01T12:00:00.123456789+02:00", T0 + 123_456_789),
        ("2024-05-01T10:00:00.5Z", T0 + 500_000_000),
        ("2024-05-01 10:00Z", T0),
        ("2024-05-01T12:00", T0),  # no offset: the given zone (+02:00 here)
        ("2024-05-01", T0 - 12 * 3600 * S),  # local midnight
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text, NOW, tz=PLUS2) == expected


@pytest.mark.usefixtures("tz_plus2")
def test_parse_time_without_offset_uses_the_system_zone() -> None:
    assert parse_time("2024-05-01T12:00:00") == T0


def test_parse_time_defaults_to_the_clock() -> None:
    before = time.time_ns()
    assert before <= parse_time("now") <= time.time_ns()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", 'invalid time "yesterday": use RFC 3339'),
        ("-1y", 'invalid time "-1y": use RFC 3339'),
        ("1h", 'invalid time "1h": use RFC 3339'),
        ("", 'invalid time "": use RFC 3339'),
        ("2024-13-01", 'invalid time "2024-13-01": month must be in 1..12'),
        ("2024-05-01T25:00Z", 'invalid time "2024-05-01T25:00Z": hour must be in 0..23'),
        ("2024-05-01T10:00+25:00", "bad UTC offset"),
        ("2024-05-01T10:00:00.1234567891Z", "more than nine fraction digits"),
        ("1714557600000", "epoch times are in seconds; this looks like milliseconds"),
        ("3000-01-01", "outside the years 1677–2262"),
        ("-300000d", "outside the years 1677–2262"),
    ],
)
def test_parse_time_errors(text: str, message: str) -> None:
    with pytest.raises(QueryError) as err:
        parse_time(text, NOW, tz=PLUS2)
    assert message in str(err.value)


# --- the command on a terminal -------------------------------------------------------


class _Terminal(io.StringIO):
    """stdout as a terminal (``isatty``); its width comes from ``COLUMNS``."""

    def isatty(self) -> bool:
        return True


def test_the_table_fits_the_terminal_and_names_what_it_left_out(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n[sinks.local]\npath = "{store}"\n')
    args = _parser().parse_args(["query", "-c", str(config), "-m", "climate"])
    monkeypatch.setenv("COLUMNS", "72")
    out, err = _Terminal(), io.StringIO()
    assert command.main(args, tmp_path / "demo.db", out=out, err=err) == 0
    assert max(map(len, out.getvalue().splitlines())) <= 72
    assert out.getvalue().splitlines()[0].split() == [
        "time", "measurement", "device", "site", "battery", "door",
    ]  # fmt: skip
    assert err.getvalue().splitlines() == [
        f"sensor-gateway: answered by the local store {store}",
        "sensor-gateway: 3 column(s) left out to fit the terminal (humidity, note, "
        "temperature); choose fields with -f, or use -o csv",
    ]
    out = io.StringIO()  # not a terminal: every column, however wide
    assert command.main(args, tmp_path / "demo.db", out=out, err=io.StringIO()) == 0
    assert out.getvalue().splitlines()[0].split()[-1] == "temperature"


# --- InfluxQL quoting -----------------------------------------------------------------------


def test_quoting() -> None:
    assert quote_ident('a "b"\\c') == '"a \\"b\\"\\\\c"'
    assert quote_string("it's \\ fine\nreally") == "'it\\'s \\\\ fine\\nreally'"
    sql = build_select(QueryRequest(device="x' OR '1'='1", measurement='m"; DROP', limit=5))
    assert sql == (
        "SELECT * FROM \"m\\\"; DROP\" WHERE \"device\" = 'x\\' OR \\'1\\'=\\'1' "
        "GROUP BY * ORDER BY time DESC LIMIT 5"
    )
