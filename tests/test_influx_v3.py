"""``api = "v3"``: InfluxDB 3's native ``/api/v3/write_lp`` against the FAKE InfluxDB.

No InfluxDB 3.x server can run here, so ``FakeInfluxServer`` (tests/servers.py, a FAKE,
not a real server) answers with InfluxDB 3's recorded answers: 204, and the 400 partial
write ``{"error": "partial write of line protocol occurred", "data": [{"original_line",
"line_number" (1-based), "error_message"}]}`` that lists up to 100 refused lines while the
other lines were stored.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import structlog
from gateway_proc import to_toml
from servers import Answer, FakeInfluxServer, SerialPtyFactory
from test_delivery import HTML, NGINX_405, SINK, TOKEN, _assert_exactly_once, _lines, running

from gateway import cli
from gateway.app import Gateway
from gateway.cli.configcheck import check_config
from gateway.config import InfluxSection, load_config
from gateway.sinks.base import Verdict
from gateway.sinks.influxdb import V3_MAX_LISTED, InfluxSink

V3 = {"api": "v3", "database": "sensors", "org": "", "bucket": ""}
PARTIAL = "partial write of line protocol occurred"


def _sink(url: str, **settings: Any) -> InfluxSink:
    options: dict[str, Any] = {"url": url, "token": TOKEN, "timeout": 2.0, **V3, **settings}
    return InfluxSink(InfluxSection(**options))


def _partial(batch: list[str], bad: set[int]) -> dict[str, Any]:
    """InfluxDB 3's 400 body for the 0-based indexes ``bad`` of ``batch``."""
    return {
        "error": PARTIAL,
        "data": [
            {
                "original_line": batch[i],
                "line_number": i + 1,
                "error_message": f"invalid column type for column 'v' (line {i + 1})",
            }
            for i in sorted(bad)
        ][:V3_MAX_LISTED],
    }


def _rejecting(pattern: str) -> Any:
    """A fake InfluxDB 3: stores every line but those matching ``pattern``, lists those."""

    def answer(batch: list[str]) -> Answer:
        bad = {i for i, ln in enumerate(batch) if re.search(pattern, ln)}
        if not bad:
            return Answer(204)
        good = [ln for i, ln in enumerate(batch) if i not in bad]
        return Answer(400, json.dumps(_partial(batch, bad)), written=good)

    return answer


# --- configuration --------------------------------------------------------------------


def test_v3_needs_a_database_and_a_token() -> None:
    with pytest.raises(ValueError, match='"database" is required when api = "v3"'):
        InfluxSection(url="http://h:8181", api="v3", token="t")
    with pytest.raises(ValueError, match='"token" or "token_file" is required when api = "v3"'):
        InfluxSection(url="http://h:8181", api="v3", database="sensors")
    sink = _sink("http://h:8181")
    assert sink.describe() == 'InfluxDB v3 at http://h:8181 (database "sensors", token)'
    assert TOKEN not in repr(sink)


def test_v2_and_v1_options_with_api_v3_have_no_effect(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "s"}"\n\n[sinks.influxdb]\nurl = "http://h:8181"\n'
        'api = "v3"\ndatabase = "d"\ntoken = "t"\nbucket = "b"\nretention_policy = "rp"\n'
    )
    config.chmod(0o600)
    warnings = dict(check_config(config).warnings)
    assert set(warnings) == {"sinks.influxdb.bucket", "sinks.influxdb.retention_policy"}
    assert all(w.startswith('has no effect with api = "v3"') for w in warnings.values())


# --- the request ----------------------------------------------------------------------


@pytest.mark.parametrize("gzip", [True, False])
async def test_the_request_we_send(fake_influx: FakeInfluxServer, gzip: bool) -> None:
    lines = _lines(5)
    sink = _sink(fake_influx.url, gzip=gzip)
    try:
        outcome = await sink.write(lines)
    finally:
        await sink.close()
    assert outcome.verdict is Verdict.OK
    (request,) = fake_influx.write_requests()
    assert request.path == "/api/v3/write_lp"
    # accept_partial said outright; never no_sync (acknowledged before the WAL is persisted).
    assert request.query == {"db": "sensors", "precision": "nanosecond", "accept_partial": "true"}
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers.get("Content-Encoding") == ("gzip" if gzip else None)
    assert request.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert request.lines == lines


# --- classification -------------------------------------------------------------------

_LINES = ["m v=1 1", "m v= 2", "m v=x 3", "m v=4 4"]
_TWO_REJECTED = json.dumps(_partial(_LINES, {1, 2}))
_OUT_OF_RANGE = json.dumps(
    {"error": PARTIAL, "data": [{"original_line": "m v=9 9", "line_number": 5}]}
)
_ZERO_BASED = json.dumps(
    {"error": PARTIAL, "data": [{"original_line": "m v=1 1", "line_number": 0}]}
)
_NOT_PARTIAL = json.dumps(
    {
        "error": "parsing failed for write_lp endpoint",
        "data": {"original_line": "m v= 2", "line_number": 2, "error_message": "No fields"},
    }
)


@pytest.mark.parametrize(
    ("answer", "verdict", "in_reason"),
    [
        (Answer(204), Verdict.OK, ""),
        (Answer(400, _TWO_REJECTED), Verdict.PARTIAL, "400 partial write, 2 of 4 lines"),
        # A 400 naming no line we can map: blocked, never bisected.
        (Answer(400, '{"error":"invalid precision"}'), Verdict.CONFIG, "400"),
        (Answer(400, '{"error":"unexpected EOF"}'), Verdict.CONFIG, "names no line"),
        (Answer(400), Verdict.CONFIG, "names no line"),
        (Answer(400, _OUT_OF_RANGE), Verdict.CONFIG, "names no line"),
        (Answer(400, _ZERO_BASED), Verdict.CONFIG, "names no line"),
        (Answer(400, _NOT_PARTIAL), Verdict.CONFIG, "names no line"),
        (Answer(400, NGINX_405, HTML), Verdict.CONFIG, "400 Bad Request"),
        (Answer(422, '{"error":"unexpected"}'), Verdict.CONFIG, "422 Unprocessable"),
        (Answer(401, '{"error":"unauthorized access"}'), Verdict.CONFIG, "sinks.influxdb.token"),
        (
            Answer(403, '{"error":"forbidden"}'),
            Verdict.CONFIG,
            'may not write to database "sensors"',
        ),
        (
            Answer(404, '{"error":"database not found: sensors"}'),
            Verdict.CONFIG,
            'database "sensors" not found',
        ),
        (Answer(404, "404 page not found"), Verdict.CONFIG, 'api = "v2"'),
        (Answer(405, NGINX_405, HTML), Verdict.CONFIG, "/api/v3/write_lp refused the request"),
        (Answer(413, "too large"), Verdict.TOO_LARGE, "413"),
        (Answer(429, "", {"Retry-After": "7"}), Verdict.RETRY, "HTTP 429"),
        (Answer(500, '{"error":"write buffer error"}'), Verdict.RETRY, "HTTP 500"),
        (Answer(503), Verdict.RETRY, "HTTP 503"),
    ],
    ids=lambda v: f"{v.status}" if isinstance(v, Answer) else None,
)
async def test_classification(
    fake_influx: FakeInfluxServer, answer: Answer, verdict: Verdict, in_reason: str
) -> None:
    fake_influx.script([answer])
    sink = _sink(fake_influx.url)
    try:
        outcome = await sink.write(_LINES)
    finally:
        await sink.close()
    assert outcome.verdict is verdict, outcome.reason
    assert in_reason in outcome.reason
    assert TOKEN not in outcome.reason
    if verdict is Verdict.PARTIAL:
        # line_number is 1-based: lines 2 and 3 are indexes 1 and 2.
        assert [i for i, _ in outcome.rejected] == [1, 2]
        assert outcome.rejected[0][1] == "invalid column type for column 'v' (line 2)"
        assert not outcome.resend_rest
    if answer.status == 429:
        assert outcome.retry_after == 7.0
    (request,) = fake_influx.write_requests()
    assert request.path == "/api/v3/write_lp"


# --- delivery: partial writes, blocked, retried ---------------------------------------


async def test_partial_write_dead_letters_exactly_the_rejected_lines(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    lines = _lines(40)
    bad_at = [0, 13, 39]
    for i in bad_at:
        lines[i] = lines[i].replace(" v=", ' v="text" ', 1).replace("i ", " ", 1)
    fake_influx.default = _rejecting('v="text"')
    async with running(fake_influx, tmp_path, **V3) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == [lines[i] for i in bad_at]
        rows = await rig.spool.dead_letters(SINK)
        assert {r["reason"] for r in rows} == {
            f"invalid column type for column 'v' (line {i + 1})" for i in bad_at
        }
        assert rig.loop.stats.dead_lettered == 3
        assert rig.loop.stats.points_written == 37
    (request,) = fake_influx.write_requests()
    assert request.path == "/api/v3/write_lp"
    assert request.lines == lines, "one request: never bisected, nothing re-sent"
    _assert_exactly_once(
        fake_influx.accepted_lines(), [ln for i, ln in enumerate(lines) if i not in bad_at]
    )


async def test_a_list_cut_at_100_sends_the_unlisted_lines_again(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    """InfluxDB 3 names at most 100 refused lines: with 100 named, more may be unnamed."""
    lines = _lines(300)
    bad_at = set(range(0, 300, 2))  # 150 refused: the first answer names only 100
    for i in bad_at:
        lines[i] = lines[i].replace(" v=", " v=bad", 1)
    fake_influx.default = _rejecting(" v=bad")
    async with running(fake_influx, tmp_path, **V3) as rig:
        await rig.deliver(lines)
        assert sorted(await rig.dead()) == sorted(lines[i] for i in bad_at)
    first, second = fake_influx.write_requests()
    assert first.lines == lines
    listed = {i for i in bad_at if i < 200}
    assert second.lines == [ln for i, ln in enumerate(lines) if i not in listed]
    good = [ln for i, ln in enumerate(lines) if i not in bad_at]
    # Sent again only because the list was cut; stored twice = the same points (merged).
    assert set(fake_influx.accepted_lines()) == set(good)


@pytest.mark.parametrize(
    ("answer", "hint"),
    [
        pytest.param(Answer(400, '{"error":"unexpected EOF"}'), "names no line", id="400"),
        pytest.param(Answer(400), "names no line", id="400-empty"),
        pytest.param(Answer(401, '{"error":"unauthorized"}'), "401 unauthorized", id="401"),
        pytest.param(Answer(403, "{}"), "403 forbidden", id="403"),
        pytest.param(
            Answer(404, '{"error":"database not found: sensors"}'),
            'database "sensors" not found',
            id="404-database",
        ),
    ],
)
async def test_refusals_naming_no_line_block_the_sink_until_fixed(
    fake_influx: FakeInfluxServer, tmp_path: Path, answer: Answer, hint: str
) -> None:
    fixed = False

    def script(batch: list[str]) -> Answer:
        return Answer(204) if fixed else answer

    fake_influx.default = script
    lines = _lines(50)
    with structlog.testing.capture_logs() as logs:
        async with running(fake_influx, tmp_path, **V3) as rig:
            rig.spool.add_many(lines)
            await rig.spool.commit()
            await asyncio.to_thread(fake_influx.wait_for_requests, 3)
            assert rig.loop.stats.state == "blocked"
            assert hint in rig.loop.stats.last_error
            assert await rig.dead() == []
            assert rig.spool.behind(SINK) == len(lines), "all still spooled"
            fixed = True
            await rig.drained()
            assert rig.loop.stats.state == "ok"
    assert all(r.lines == lines for r in fake_influx.write_requests()), "never bisected"
    _assert_exactly_once(fake_influx.accepted_lines(), lines)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["sink cannot write; readings stay spooled until fixed"]
    assert hint in errors[0]["reason"]
    assert f"InfluxDB at {fake_influx.url}" in errors[0]["reason"]
    assert TOKEN not in str(logs)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Answer(500, '{"error":"write buffer error"}'), id="500"),
        pytest.param(Answer(503), id="503"),
        pytest.param(Answer(429, "", {"Retry-After": "0.1"}), id="429"),
    ],
)
async def test_server_trouble_is_retried(
    fake_influx: FakeInfluxServer, tmp_path: Path, answer: Answer
) -> None:
    fake_influx.script([answer, answer])
    lines = _lines(20)
    async with running(fake_influx, tmp_path, **V3) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == []
    assert [r.status for r in fake_influx.write_requests()] == [answer.status] * 2 + [204]
    assert all(r.lines == lines for r in fake_influx.write_requests())
    _assert_exactly_once(fake_influx.accepted_lines(), lines)


# --- the whole gateway ----------------------------------------------------------------


async def test_gateway_writes_to_influxdb3_and_dead_letters_the_bad_line(
    tmp_path: Path,
    fake_influx: FakeInfluxServer,
    serial_pty: SerialPtyFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The in-process gateway: a serial device's readings to the fake InfluxDB 3, which
    refuses the reading seq=3 (as a type conflict would) and stores the others."""
    fake_influx.default = _rejecting(r" seq=3\.0 ")
    pty = serial_pty()
    path = tmp_path / "gateway.toml"
    path.write_text(
        to_toml(
            {
                "gateway": {"state_dir": str(tmp_path / "state"), "clock_sync_check": False},
                "spool": {"commit_interval": 0.05},
                "sinks": {
                    "influxdb": {
                        "url": fake_influx.url,
                        "api": "v3",
                        "database": "sensors",
                        "token": TOKEN,
                        "flush_interval": 0.05,
                        "retry_max_interval": 0.1,
                    }
                },
                "devices": {"s": {"driver": "line", "port": pty.path, "measurement": "m"}},
            }
        )
    )
    path.chmod(0o600)
    gateway = Gateway(load_config(path))
    ready = asyncio.Event()
    task = asyncio.create_task(gateway.run(ready=ready.set))
    try:
        await ready.wait()
        async with asyncio.timeout(10):
            while gateway.pipeline.devices["s"].stats.state != "running":
                await asyncio.sleep(0.02)
        pty.write(b"".join(f"seq={i}\n".encode() for i in range(6)))
        (loop,) = gateway.loops
        async with asyncio.timeout(15):
            while loop.stats.points_written + loop.stats.dead_lettered < 6:
                await asyncio.sleep(0.02)
    finally:
        gateway.stop()
        await task
    requests = fake_influx.write_requests()
    sent = [ln for r in requests for ln in r.lines]
    assert len(sent) == 6, "each reading sent once: the good ones are not sent again"
    assert all(r.path == "/api/v3/write_lp" for r in requests)
    bad = [ln for ln in sent if re.search(r" seq=3\.0 ", ln)]
    assert len(bad) == 1
    assert sorted(fake_influx.accepted_lines()) == sorted(ln for ln in sent if ln not in bad)
    assert loop.stats.dead_lettered == 1
    assert loop.stats.points_written == 5

    capsys.readouterr()
    assert cli.main(["dead-letter", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 dead-lettered point(s)")
    assert "[influxdb] invalid column type for column 'v' (line " in out
    assert bad[0] in out
