"""InfluxSink: its classification (against the FAKE InfluxDB) and real round trips.

Real servers: VictoriaMetrics for the v2 write API, InfluxDB
1.x for the v1 API, the TcpProxy between the sink and VictoriaMetrics for network faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from servers import (
    Answer,
    FakeInfluxServer,
    Influx1,
    TcpProxyFactory,
    VictoriaFactory,
    VictoriaMetrics,
)
from test_delivery import HTML, NGINX_405

from gateway.backoff import Backoff
from gateway.config import InfluxSection
from gateway.delivery.loop import DeliveryLoop
from gateway.delivery.spool import Spool
from gateway.sinks.base import Outcome, Verdict
from gateway.sinks.influxdb import InfluxSink, parse_retry_after, safe_url

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def _sink(url: str, **settings: Any) -> InfluxSink:
    options: dict[str, Any] = {
        "url": url,
        "org": "org",
        "bucket": "bucket",
        "token": "test-token",
        "timeout": 2.0,
    }
    options.update(settings)
    return InfluxSink(InfluxSection(**options))


@contextlib.asynccontextmanager
async def started(sink: InfluxSink) -> AsyncIterator[InfluxSink]:
    await sink.start()
    try:
        yield sink
    finally:
        await sink.close()


# --- unit: Retry-After, URLs, classification ------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("0", None),
        ("-3", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_750_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 90, usegmt=True), now) == 90.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now) is None, "in the past"
    assert parse_retry_after("Wed, 99 Foo 2015 07:28:00 GMT", now) is None


def test_safe_url_drops_credentials_and_query() -> None:
    assert (
        safe_url("https://u:pw@db.example:8086/prefix/?token=x") == "https://db.example:8086/prefix"
    )
    assert safe_url("http://[::1]:8086") == "http://[::1]:8086"


def test_describe_and_repr_never_show_secrets(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in the url"):
        _sink("http://u:pw@h:8086", token="s3cr3t-token")
    v2 = _sink("http://h:8086", token="s3cr3t-token")
    v1 = _sink("http://h:8086", api="v1", database="db", username="u", password="pass-w0rd")
    for sink in (v2, v1):
        for text in (sink.describe(), repr(sink)):
            assert "s3cr3t-token" not in text
            assert "pass-w0rd" not in text
            assert ":pw@" not in text
    assert v2.describe() == 'InfluxDB v2 at http://h:8086 (org "org", bucket "bucket", token)'
    assert v1.describe() == 'InfluxDB v1 at http://h:8086 (database "db", user "u" with password)'


_V3_PARTIAL = json.dumps(
    {
        "error": "partial write of line protocol occurred",
        "data": [
            {"original_line": "m v= 2", "line_number": 2, "error_message": "No fields"},
            {"original_line": "m v=x 3", "line_number": 3, "error_message": "bad value"},
        ],
    }
)
_V3_NOT_PARTIAL = json.dumps(
    {
        "error": "parsing failed for write_lp endpoint",
        "data": {"original_line": "m v= 2", "line_number": 2, "error_message": "No fields"},
    }
)
_HTML_400 = (
    "<html><head><title>400 Bad Request</title></head><body><h1>Bad Request</h1>"
    "<p>Request Header Or Cookie Too Large &amp; unable to parse it</p></body></html>"
)


@pytest.mark.parametrize("api", ["v2", "v1"])
@pytest.mark.parametrize(
    ("answer", "verdict", "in_reason"),
    [
        (Answer(204), Verdict.OK, ""),
        (Answer(200), Verdict.OK, ""),
        (
            Answer(400, '{"code":"invalid","message":"unable to parse \'m v=\': missing field"}'),
            Verdict.REJECTS_SOME,
            "unable to parse",
        ),
        (
            Answer(400, '{"error":"partial write: field type conflict dropped=1"}'),
            Verdict.REJECTS_SOME,
            "partial write",
        ),
        (
            Answer(422, '{"code":"unprocessable entity","message":"partial write: x dropped=1"}'),
            Verdict.REJECTS_SOME,
            "422",
        ),
        (Answer(400, _V3_PARTIAL), Verdict.PARTIAL, "2 of 4 lines rejected"),
        (Answer(400, _V3_NOT_PARTIAL), Verdict.REJECTS_SOME, "parsing failed"),
        (Answer(413, "request too large"), Verdict.TOO_LARGE, "413"),
        (Answer(401, '{"code":"unauthorized"}'), Verdict.CONFIG, "401 unauthorized"),
        (Answer(403, '{"code":"forbidden"}'), Verdict.CONFIG, "403 forbidden"),
        (Answer(404, '{"code":"not found","message":"bucket not found"}'), Verdict.CONFIG, "404"),
        (Answer(404, "404 page not found"), Verdict.CONFIG, "404"),
        (Answer(500, '{"error":"retention policy not found: x"}'), Verdict.CONFIG, "retention"),
        (Answer(400, '{"error":"database is required"}'), Verdict.CONFIG, "400"),
        (Answer(429, "", {"Retry-After": "30"}), Verdict.RETRY, "HTTP 429"),
        (Answer(503, "", {"Retry-After": "12"}), Verdict.RETRY, "HTTP 503"),
        (Answer(500, '{"error":"timeout"}'), Verdict.RETRY, "HTTP 500"),
        (Answer(502), Verdict.RETRY, "HTTP 502"),
        (Answer(504), Verdict.RETRY, "HTTP 504"),
        (Answer(408), Verdict.RETRY, "HTTP 408"),
        # Answers that name the data (the real servers' texts): bisect.
        (
            Answer(400, '{"error":"partial write: unable to parse \'m v=x 3\': bad dropped=0"}'),
            Verdict.REJECTS_SOME,
            "400 rejected",
        ),
        (
            Answer(400, '{"error":"field type conflict: input field \\"v\\" on measurement"}'),
            Verdict.REJECTS_SOME,
            "field type conflict",
        ),
        (
            Answer(400, '{"error":"line protocol parsing error","data":{"line_number":2}}'),
            Verdict.REJECTS_SOME,
            "parsing error",
        ),
        # Answers about the request or the path, not the data: blocked, never bisected.
        (Answer(409, "conflict"), Verdict.CONFIG, "409 Conflict"),
        (Answer(405, NGINX_405, HTML), Verdict.CONFIG, "405 Method Not Allowed"),
        (Answer(405, "Method Not Allowed\n"), Verdict.CONFIG, "takes no POST"),
        (Answer(407, "", {"Proxy-Authenticate": "Basic"}), Verdict.CONFIG, "407 Proxy"),
        (Answer(411, "Length Required"), Verdict.CONFIG, "411 Length Required"),
        (Answer(414), Verdict.CONFIG, "414 "),
        (Answer(415, "unsupported media type"), Verdict.CONFIG, "gzip = false"),
        (Answer(431), Verdict.CONFIG, "431 Request Header Fields Too Large"),
        (Answer(400, _HTML_400, HTML), Verdict.CONFIG, "400 Bad Request"),
        (Answer(400, "<html><body>bad</body></html>"), Verdict.CONFIG, "(bad)"),
        (
            Answer(400, '{"code":"invalid","message":"writing requires points"}'),
            Verdict.CONFIG,
            "400",
        ),
        (Answer(400, '{"error":"unexpected EOF"}'), Verdict.CONFIG, "names no line"),
        (Answer(400), Verdict.CONFIG, "400 Bad Request"),
        (Answer(422, "<html><h1>422</h1></html>", HTML), Verdict.CONFIG, "422"),
        (Answer(499, "client closed"), Verdict.CONFIG, "499 client error"),
    ],
    ids=lambda v: f"{v.status}" if isinstance(v, Answer) else None,
)
async def test_classification(
    fake_influx: FakeInfluxServer, api: str, answer: Answer, verdict: Verdict, in_reason: str
) -> None:
    fake_influx.script([answer])
    settings = {"api": api, "database": "db1"} if api == "v1" else {}
    lines = ["m v=1 1", "m v= 2", "m v=x 3", "m v=4 4"]
    async with started(_sink(fake_influx.url, **settings)) as sink:
        outcome = await sink.write(lines)
    assert outcome.verdict is verdict
    assert in_reason in outcome.reason
    if verdict is Verdict.PARTIAL:
        assert list(outcome.rejected) == [(1, "No fields"), (2, "bad value")]
    if answer.status in (429, 503):
        assert outcome.retry_after == float(answer.headers["Retry-After"])
    (request,) = fake_influx.write_requests()
    assert request.lines == lines, "the lines go out as they are"
    assert request.path == ("/api/v2/write" if api == "v2" else "/write")


def test_404_hints_name_what_to_fix() -> None:
    v2 = _sink("http://h:8086")
    v1 = _sink("http://h:8086", api="v1", database="db1")

    def reason(sink: InfluxSink, body: str) -> str:
        return sink._classify(404, body, None, 1, 10).reason

    assert 'bucket "bucket" or org "org" not found' in reason(v2, '{"message":"bucket not found"}')
    assert 'api = "v1"' in reason(v2, "404 page not found")
    assert "CREATE DATABASE db1" in reason(v1, '{"error":"database not found: \\"db1\\""}')


def test_refused_requests_say_what_and_where() -> None:
    """A 4xx naming no line: the code, the URL written to, the answer as text, cut short."""
    sink = _sink("http://h:8086/influx/")
    assert sink._classify(405, NGINX_405, HTML, 1, 10).reason == (
        "InfluxDB at http://h:8086/influx: 405 Method Not Allowed — POST "
        "http://h:8086/influx/api/v2/write refused the request itself, not the data (that URL "
        "takes no POST: a proxy or another service answers there); readings stay spooled: "
        "check sinks.influxdb.url and any proxy in between "
        "(405 Not Allowed 405 Not Allowed nginx)"
    )
    page = sink._classify(400, "<p>" + "x" * 5000 + "</p>", None, 1, 10).reason
    assert page.endswith(" (" + "x" * 300 + ")")
    v1 = _sink("http://h:8086", api="v1", database="db1")
    assert "POST http://h:8086/write refused" in v1._classify(431, "", None, 1, 10).reason


@pytest.mark.parametrize("api", ["v2", "v1"])
@pytest.mark.parametrize("gzip", [True, False])
async def test_gzip_setting(fake_influx: FakeInfluxServer, api: str, gzip: bool) -> None:
    settings = {"api": api, "database": "db1", "gzip": gzip}
    lines = [f'm,t=a\\ b s="é\\"x" {i}' for i in range(50)]
    async with started(_sink(fake_influx.url, **settings)) as sink:
        assert (await sink.write(lines)).verdict is Verdict.OK
    (request,) = fake_influx.write_requests()
    assert request.lines == lines
    assert ("Content-Encoding" in request.headers) is gzip


@pytest.mark.parametrize(
    ("api", "path", "query", "auth"),
    [
        ("v2", "/api/v2/write", {"org": "org", "bucket": "bucket", "precision": "ns"},
         "Token s3cr3t-token"),
        ("v1", "/write", {"db": "db1", "rp": "rp1", "precision": "ns"}, "Token s3cr3t-token"),
        ("v3", "/api/v3/write_lp",
         {"db": "db1", "precision": "nanosecond", "accept_partial": "true"},
         "Bearer s3cr3t-token"),
    ],
)  # fmt: skip
async def test_each_api_posts_its_request_with_the_token_in_a_header(
    fake_influx: FakeInfluxServer, api: str, path: str, query: dict[str, str], auth: str
) -> None:
    settings = {"api": api, "database": "db1", "token": "s3cr3t-token"}
    if api == "v1":
        settings["retention_policy"] = "rp1"
    async with started(_sink(fake_influx.url, **settings)) as sink:
        assert (await sink.write(["m v=1 1", "m v=2 2"])).verdict is Verdict.OK
    (request,) = fake_influx.write_requests()
    assert (request.path, request.query) == (path, query)
    assert request.headers["Authorization"] == auth
    assert request.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert request.lines == ["m v=1 1", "m v=2 2"]


async def test_v2_picks_up_a_fixed_token_file_after_a_401(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    fake_influx.script([Answer(401, '{"code":"unauthorized","message":"unauthorized access"}')])
    async with started(_sink(fake_influx.url, token=None, token_file=str(token_file))) as sink:
        refused = await sink.write(["m v=1 1"])
        token_file.write_text("new-token\n")
        accepted = await sink.write(["m v=1 1"])
    assert refused.verdict is Verdict.CONFIG
    assert "401 unauthorized" in refused.reason
    assert "old-token" not in refused.reason
    assert accepted.verdict is Verdict.OK
    sent = [r.headers["Authorization"] for r in fake_influx.write_requests()]
    assert sent == ["Token old-token", "Token new-token"]


def test_no_api_imports_influxdb_client() -> None:
    """The daemon's write path never loads influxdb-client (~14 MB of RSS), whatever api."""
    code = """
import asyncio, sys
from gateway.config import InfluxSection
from gateway.sinks.influxdb import InfluxSink
async def main(api):
    section = InfluxSection(url="http://127.0.0.1:9", api=api, bucket="b", database="d", token="t")
    sink = InfluxSink(section)
    await sink.start()
    assert (await sink.write(["m v=1 1"])).verdict.name == "RETRY"
    await sink.close()
    return "influxdb_client" in sys.modules
print(asyncio.run(main("v1")), asyncio.run(main("v2")), asyncio.run(main("v3")))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.splitlines()[-1].split() == ["False", "False", "False"]


async def test_start_and_write_with_the_server_down() -> None:
    sink = _sink("http://127.0.0.1:9", api="v1", database="d")
    async with started(sink):
        outcome = await sink.write(["m v=1 1"])
    assert outcome.verdict is Verdict.RETRY
    assert outcome.reason.startswith("connect: InfluxDB at http://127.0.0.1:9")


async def test_unreadable_token_file_is_a_config_outcome(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    sink = _sink("http://127.0.0.1:9", token=None, token_file=str(token_file))
    async with started(sink):
        outcome = await sink.write(["m v=1 1"])
        assert outcome.verdict is Verdict.CONFIG
        assert "cannot read sinks.influxdb.token_file" in outcome.reason
        token_file.write_text("now-there\n")
        outcome = await sink.write(["m v=1 1"])
    assert outcome.verdict is Verdict.RETRY, "fixed: it tries the server again"


# --- real servers ---------------------------------------------------------------------


def _escaping_lines(
    m: str,
) -> tuple[list[str], dict[tuple[str, frozenset[tuple[str, str]]], int]]:
    """Line protocol full of escapes, and what VictoriaMetrics should store for it."""
    lines = [
        f'{m}\\ sp\\,c,t\\ k=v\\,w,t\\=k=a\\=b f\\ g=1.5,f\\,h=2i,s="q\\"u\\\\o" {T0}',
        f"{m}\\ sp\\,c,t\\ k=v\\,w,t\\=k=a\\=b f\\ g=2.5 {T0 + MS}",
        f'{m}_plain,unit=°C,where=a\\ b temp=21.5,ok=true,note="x=1,y=2" {T0}',
    ]
    tags = frozenset({("t k", "v,w"), ("t=k", "a=b")})
    plain = frozenset({("unit", "°C"), ("where", "a b")})
    expected = {
        (f"{m} sp,c_f g", tags): 2,
        (f"{m} sp,c_f,h", tags): 1,
        (f"{m} sp,c_s", tags): 1,
        (f"{m}_plain_temp", plain): 1,
        (f"{m}_plain_ok", plain): 1,
        (f"{m}_plain_note", plain): 1,
    }
    return lines, expected


@pytest.mark.integration
async def test_victoria_round_trip_with_escapes(
    victoria: VictoriaMetrics, unique_name: str
) -> None:
    lines, expected = _escaping_lines(unique_name)
    async with started(_sink(victoria.url)) as sink:
        assert (await sink.write(lines)).verdict is Verdict.OK
    stored = await asyncio.to_thread(victoria.series_points, f"{unique_name}.*")
    assert {key: len(points) for key, points in stored.items()} == expected
    tags = frozenset({("t k", "v,w"), ("t=k", "a=b")})
    assert stored[(f"{unique_name} sp,c_f g", tags)] == [(T0 // MS, 1.5), (T0 // MS + 1, 2.5)]
    assert stored[(f"{unique_name} sp,c_f,h", tags)] == [(T0 // MS, 2.0)]


@pytest.mark.integration
async def test_influx1_round_trip_and_real_rejects(influx1: Influx1, unique_name: str) -> None:
    db = unique_name
    await asyncio.to_thread(influx1.create_database, db)
    m = f"{unique_name} sp,c"
    em = m.replace(" ", "\\ ").replace(",", "\\,")
    lines = [
        f'{em},t\\ k=v\\,w,t\\=k=a\\=b f\\ g=1.5,n=2i,s="q\\"u\\\\o" {T0}',
        f"{em},t\\ k=v\\,w,t\\=k=a\\=b f\\ g=2.5,n=3i {T0 + 1}",
    ]
    async with started(_sink(influx1.url, api="v1", database=db, token=None)) as sink:
        assert (await sink.write(lines)).verdict is Verdict.OK
        points = await asyncio.to_thread(influx1.points, db, m)
        assert points == [
            {"time": T0, "f g": 1.5, "n": 2, "s": 'q"u\\o', "t k": "v,w", "t=k": "a=b"},
            {"time": T0 + 1, "f g": 2.5, "n": 3, "s": None, "t k": "v,w", "t=k": "a=b"},
        ]
        # What InfluxDB 1.6 really answers, classified.
        conflict = await sink.write([f'{em} n="text" {T0 + 2}', f"{em} n=4i {T0 + 3}"])
        assert conflict.verdict is Verdict.REJECTS_SOME
        assert "partial write: field type conflict" in conflict.reason
        unparseable = await sink.write([f"{em} n=oops {T0 + 4}"])
        assert unparseable.verdict is Verdict.REJECTS_SOME
        assert "unable to parse" in unparseable.reason
        # A bad line among good ones: 1.x writes the good ones and says so.
        mixed = await sink.write([f"{em} n=5i {T0 + 5}", f"{em} n=oops {T0 + 6}"])
        assert mixed.verdict is Verdict.REJECTS_SOME
        assert "partial write: unable to parse" in mixed.reason
    missing = _sink(influx1.url, api="v1", database=f"{db}_missing", token=None)
    async with started(missing) as sink:
        outcome = await sink.write(lines)
    assert outcome.verdict is Verdict.CONFIG
    assert f"CREATE DATABASE {db}_missing" in outcome.reason
    wrong_rp = _sink(influx1.url, api="v1", database=db, retention_policy="nope", token=None)
    async with started(wrong_rp) as sink:
        outcome = await sink.write(lines)
    assert outcome.verdict is Verdict.CONFIG
    assert 'retention policy "nope" not found' in outcome.reason
    v2_on_1x = _sink(influx1.url, bucket=db)
    async with started(v2_on_1x) as sink:
        outcome = await sink.write(lines)
    assert outcome.verdict is Verdict.CONFIG
    assert 'set sinks.influxdb.api = "v1"' in outcome.reason


@pytest.mark.integration
async def test_influx1_delivery_dead_letters_only_the_bad_point(
    influx1: Influx1, unique_name: str, tmp_path: Path
) -> None:
    db = unique_name
    await asyncio.to_thread(influx1.create_database, db)
    lines = [f"m,seq={i} v={i}i {T0 + i}" for i in range(20)]
    bad = f'm,seq=7 v="seven" {T0 + 7}'
    lines[7] = bad
    sink = _sink(influx1.url, api="v1", database=db, token=None, flush_interval=0.05)
    async with running(sink, tmp_path) as (spool, _):
        spool.add_many(lines)
        await spool.commit()
        await _drained(spool)
        dead = [row["line"] for row in await spool.dead_letters("influxdb")]
    assert dead == [bad]
    points = await asyncio.to_thread(influx1.points, db, "m")
    assert sorted(p["v"] for p in points) == [i for i in range(20) if i != 7]


async def _retry_through(sink: InfluxSink, lines: list[str]) -> Outcome:
    outcome = await sink.write(lines)
    assert outcome.verdict is Verdict.RETRY, outcome
    return outcome


@pytest.mark.integration
async def test_proxy_faults_are_retried(
    victoria: VictoriaMetrics, tcp_proxy: TcpProxyFactory, unique_name: str
) -> None:
    proxy = tcp_proxy(victoria.host, victoria.port)
    lines = [f"{unique_name},dev=a v={i} {T0 + i * MS}" for i in range(50)]
    selector = f"{unique_name}_v"
    async with started(_sink(proxy.url, timeout=0.5)) as sink:
        assert (await sink.write(lines[:10])).verdict is Verdict.OK

        proxy.blackhole()
        started_at = time.monotonic()
        outcome = await _retry_through(sink, lines[10:20])
        assert outcome.reason.startswith("timeout: InfluxDB at http://127.0.0.1:")
        assert 0.4 <= time.monotonic() - started_at < 2.0

        # A connection cut (RST) in the middle of a request.
        write = asyncio.create_task(sink.write(lines[10:20]))
        await asyncio.to_thread(proxy.wait_for_connections, proxy.connections_seen + 1)
        await asyncio.sleep(0.05)
        await asyncio.to_thread(proxy.cut)
        outcome = await write
        assert outcome.verdict is Verdict.RETRY
        assert "InfluxDB at" in outcome.reason

        # The server stores the batch but the answer is lost: RETRY, then the resend.
        proxy.drop_responses()
        await _retry_through(sink, lines[20:50])
        assert proxy.responses_dropped >= 1
        proxy.pass_through()
        assert (await sink.write(lines[10:50])).verdict is Verdict.OK
    rows = await asyncio.to_thread(victoria.wait_for_points, selector, 50)
    (series,) = rows
    assert series["timestamps"] == [T0 // MS + i for i in range(50)], "each point once"
    assert series["values"] == [float(i) for i in range(50)]


class RecordingSink(InfluxSink):
    """The real sink, remembering each batch it wrote and how that went."""

    def __init__(self, section: InfluxSection) -> None:
        super().__init__(section)
        self.batches: list[tuple[list[str], Verdict]] = []

    async def write(self, lines: list[str]) -> Outcome:
        outcome = await super().write(lines)
        self.batches.append((list(lines), outcome.verdict))
        return outcome


@contextlib.asynccontextmanager
async def running(sink: InfluxSink, tmp_path: Path) -> AsyncIterator[tuple[Spool, DeliveryLoop]]:
    spool = Spool(tmp_path / "spool.db", [sink.name], commit_interval=0.05)
    await spool.open()
    await sink.start()
    loop = DeliveryLoop(sink, spool)
    loop._backoff = Backoff(0.1, sink.retry_max_interval)  # base.py starts at 1 s
    tasks = [
        asyncio.create_task(loop.run(), name="delivery"),
        asyncio.create_task(spool.run_commits(), name="commits"),
    ]
    try:
        yield spool, loop
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sink.close()
        await spool.close()


async def _drained(spool: Spool, sink: str = "influxdb") -> None:
    """Wait until everything committed so far was settled (commit() first)."""
    async with asyncio.timeout(20):
        while spool.behind(sink):
            await asyncio.sleep(0.02)


@pytest.mark.integration
async def test_victoria_restart_while_readings_flow(
    victoria_factory: VictoriaFactory, tmp_path: Path, unique_name: str
) -> None:
    vm = victoria_factory()
    sink = RecordingSink(
        InfluxSection(
            url=vm.url,
            org="o",
            bucket="b",
            token=SecretStr("t"),
            timeout=1.0,
            flush_interval=0.05,
            retry_max_interval=0.3,
            batch_size=50,
        )
    )
    produced: list[str] = []
    async with running(sink, tmp_path) as (spool, loop):

        async def produce(n: int) -> None:
            for _ in range(n):
                i = len(produced)
                produced.append(f"{unique_name},dev=a seq={i}i {T0 + i * MS}")
                spool.add(produced[-1])
                await asyncio.sleep(0.005)

        await produce(100)
        await asyncio.to_thread(vm.stop)
        await produce(150)  # the database is down: everything waits in the spool
        assert spool.behind("influxdb") > 0
        await asyncio.to_thread(vm.start)
        await produce(100)
        await spool.commit()  # waits for a commit in flight, then commits the rest
        await _drained(spool)
        assert loop.stats.batches_failed, "the outage was noticed"
    delivered = [ln for batch, verdict in sink.batches if verdict is Verdict.OK for ln in batch]
    assert delivered == produced, "every reading once, in order"
    rows = await asyncio.to_thread(vm.wait_for_points, f"{unique_name}_seq", len(produced))
    (series,) = rows
    assert series["values"] == [float(i) for i in range(len(produced))]
