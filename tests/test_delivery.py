"""DeliveryLoop + real Spool + InfluxSink against the FAKE InfluxDB (scripted answers).

The fake (``FakeInfluxServer``, not a real server) gives the answers real servers will
not give on demand: 429/503 with Retry-After, 400/422 rejects, InfluxDB 3 partial
writes, 413, 401, 404. Every test checks "nothing lost, nothing extra": each line is
either accepted by the fake or sits in the dead-letter table, never both, never neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from servers import Answer, FakeInfluxServer

from gateway.backoff import Backoff
from gateway.config import InfluxSection
from gateway.delivery.loop import DeliveryLoop
from gateway.delivery.spool import Spool
from gateway.sinks.influxdb import InfluxSink

TOKEN = "tok-5f3e-SECRET-9a1c"
PASSWORD = "pw-77c1-SECRET-e402"
SINK = "influxdb"


def _lines(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix},dev=d{i % 3} v={i}i {1_700_000_000_000_000_000 + i}" for i in range(n)]


@dataclass
class Rig:
    """A running delivery loop draining a real spool into an InfluxSink."""

    spool: Spool
    sink: InfluxSink
    loop: DeliveryLoop
    fake: FakeInfluxServer

    async def deliver(self, lines: list[str]) -> None:
        """Spool ``lines`` and wait until the loop settled every one of them."""
        self.spool.add_many(lines)
        await self.spool.commit()
        await self.drained()

    async def drained(self) -> None:
        """Wait (at most 15 s) until the spool has nothing left for the sink."""
        async with asyncio.timeout(15):
            while self.spool.behind(SINK):
                await asyncio.sleep(0.02)

    async def dead(self) -> list[str]:
        return [row["line"] for row in reversed(await self.spool.dead_letters(SINK))]


@contextlib.asynccontextmanager
async def running(fake: FakeInfluxServer, tmp_path: Path, **settings: Any) -> AsyncIterator[Rig]:
    options: dict[str, Any] = {
        "url": fake.url,
        "org": "org",
        "bucket": "bucket",
        "token": TOKEN,
        "flush_interval": 0.05,
        "retry_max_interval": 0.2,
        "timeout": 3.0,
        "batch_size": 1000,
    }
    options.update(settings)
    spool = Spool(tmp_path / "spool.db", [SINK], commit_interval=0.05)
    await spool.open()
    sink = InfluxSink(InfluxSection(**options))
    await sink.start()
    loop = DeliveryLoop(sink, spool)
    # base.py starts re-checks of a configuration error at 5 s; keep the tests quick.
    loop._config_backoff = Backoff(0.1, 0.3)
    task = asyncio.create_task(loop.run(), name="delivery")
    try:
        yield Rig(spool, sink, loop, fake)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sink.close()
        await spool.close()


def _timed(answers: Callable[[list[str]], Answer], times: list[float]) -> Callable[..., Answer]:
    def answer(lines: list[str]) -> Answer:
        times.append(time.monotonic())
        return answers(lines)

    return answer


def _assert_exactly_once(accepted: list[str], expected: list[str]) -> None:
    counts = Counter(accepted)
    assert set(counts) == set(expected)
    assert all(c == 1 for c in counts.values()), [ln for ln, c in counts.items() if c > 1]


# --- throttling and transient errors -------------------------------------------------


@pytest.mark.parametrize(
    ("status", "header", "cap", "low", "high"),
    [
        pytest.param(429, "1", 300.0, 0.95, 2.5, id="429-seconds"),
        pytest.param(429, "date+2", 300.0, 0.95, 3.0, id="429-http-date"),
        pytest.param(503, "1", 300.0, 0.95, 2.5, id="503-seconds"),
        pytest.param(429, "3600", 0.4, 0.35, 1.5, id="429-capped"),
    ],
)
async def test_retry_after_is_honoured_and_capped(
    fake_influx: FakeInfluxServer,
    tmp_path: Path,
    status: int,
    header: str,
    cap: float,
    low: float,
    high: float,
) -> None:
    times: list[float] = []
    lines = _lines(10)

    def script(batch: list[str]) -> Answer:
        if len(times) == 1:
            value = header
            if header == "date+2":
                value = email.utils.formatdate(time.time() + 2, usegmt=True)
            return Answer(status, '{"code":"too many requests"}', {"Retry-After": value})
        return Answer(204)

    fake_influx.default = _timed(script, times)
    async with running(fake_influx, tmp_path, retry_after_max=cap) as rig:
        await rig.deliver(lines)
        assert rig.loop.stats.batches_failed
    assert len(times) == 2
    waited = times[1] - times[0]
    # Without Retry-After the loop would retry within retry_max_interval (0.2 s).
    assert low <= waited <= high
    _assert_exactly_once(fake_influx.accepted_lines(), lines)


async def test_server_errors_back_off_then_deliver(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    fake_influx.script(
        [
            Answer(500, '{"code":"internal error","message":"engine: cache full"}'),
            Answer(502, "<html>Bad Gateway</html>", {"Content-Type": "text/html"}),
            Answer(504),
        ]
    )
    lines = _lines(50)
    async with running(fake_influx, tmp_path) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == []
        assert rig.loop.stats.state == "ok"
        failed = rig.loop.stats.batches_failed
        assert failed == {"HTTP 500": 1, "HTTP 502": 1, "HTTP 504": 1}
    assert len(fake_influx.write_requests()) == 4
    _assert_exactly_once(fake_influx.accepted_lines(), lines)


# --- rejects -------------------------------------------------------------------------


async def test_unparseable_line_is_found_by_bisecting(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    """InfluxDB 2.x: one bad line makes the whole batch fail (nothing written)."""
    lines = _lines(64)
    bad = "m,dev=x v=oops 1700000000000000000"
    lines.insert(37, bad)

    def script(batch: list[str]) -> Answer:
        if bad in batch:
            body = {"code": "invalid", "message": f"unable to parse '{bad}': invalid number"}
            return Answer(400, json.dumps(body))
        return Answer(204)

    fake_influx.default = script
    async with running(fake_influx, tmp_path) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == [bad]
        rows = await rig.spool.dead_letters(SINK)
        assert "unable to parse" in rows[0]["reason"]
    good = [ln for ln in lines if ln != bad]
    _assert_exactly_once(fake_influx.accepted_lines(), good)
    assert len(fake_influx.write_requests()) <= 2 * 7 + 1, "log2 splits, not one per line"


async def test_422_partial_write_dead_letters_only_the_dropped_point(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    """InfluxDB 2.x 422: the other points were written; resending them merges."""
    lines = _lines(40)
    bad = 'm,dev=d0 v="text" 1700000000000000007'
    lines[7] = bad

    def script(batch: list[str]) -> Answer:
        if bad in batch:
            body = {
                "code": "unprocessable entity",
                "message": "failure writing points to database: partial write: field type "
                'conflict: input field "v" on measurement "m" is type string, already '
                "exists as type integer dropped=1",
            }
            return Answer(422, json.dumps(body), written=[ln for ln in batch if ln != bad])
        return Answer(204)

    fake_influx.default = script
    async with running(fake_influx, tmp_path) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == [bad]
        assert rig.loop.stats.dead_lettered == 1
    accepted = fake_influx.accepted_lines()
    assert bad not in accepted
    assert set(accepted) == {ln for ln in lines if ln != bad}, "every good point stored"
    assert len(fake_influx.write_requests()) <= 2 * 6 + 1, "no retry loop"


async def test_influxdb3_partial_write_names_the_lines(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    """InfluxDB 3: 400 with data[] naming the rejected lines; the rest was written."""
    lines = _lines(30)
    bad_at = [3, 17, 29]
    for i in bad_at:
        lines[i] = f"m,dev=d0 v= {i}"

    def script(batch: list[str]) -> Answer:
        data = [
            {"original_line": ln, "line_number": n, "error_message": "No fields were provided"}
            for n, ln in enumerate(batch, start=1)
            if "v= " in ln
        ]
        if not data:
            return Answer(204)
        body = {"error": "partial write of line protocol occurred", "data": data}
        return Answer(400, json.dumps(body), written=[ln for ln in batch if "v= " not in ln])

    fake_influx.default = script
    async with running(fake_influx, tmp_path) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == [lines[i] for i in bad_at]
        rows = await rig.spool.dead_letters(SINK)
        assert all(r["reason"] == "No fields were provided" for r in rows)
    assert len(fake_influx.write_requests()) == 1, "no bisecting, no resend"
    _assert_exactly_once(
        fake_influx.accepted_lines(), [ln for i, ln in enumerate(lines) if i not in bad_at]
    )


async def test_413_splits_batches_and_dead_letters_a_huge_line(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    max_lines, max_line_bytes = 8, 2000
    lines = _lines(40)
    huge = f'm,dev=big s="{"x" * 5000}" 1700000000000000999'
    lines.insert(21, huge)

    def script(batch: list[str]) -> Answer:
        if len(batch) > max_lines or any(len(ln) > max_line_bytes for ln in batch):
            return Answer(
                413, '{"code":"request too large","message":"http: request body too large"}'
            )
        return Answer(204)

    fake_influx.default = script
    async with running(fake_influx, tmp_path) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == [huge]
    assert all(len(r.lines) <= max_lines for r in fake_influx.write_requests() if r.status == 204)
    _assert_exactly_once(fake_influx.accepted_lines(), [ln for ln in lines if ln != huge])


# --- configuration errors: keep spooling, say what to fix, resume by itself -----------


def _no_secret(*texts: object) -> None:
    for text in texts:
        assert TOKEN not in str(text)
        assert PASSWORD not in str(text)


@pytest.mark.parametrize(
    ("status", "body", "hint"),
    [
        pytest.param(
            401,
            '{"code":"unauthorized","message":"unauthorized access"}',
            "check sinks.influxdb.token / token_file",
            id="401",
        ),
        pytest.param(
            403,
            '{"code":"forbidden","message":"insufficient permissions for write"}',
            "403 forbidden",
            id="403",
        ),
        pytest.param(
            404,
            '{"code":"not found","message":"bucket \\"bucket\\" not found"}',
            'bucket "bucket" or org "org" not found',
            id="404",
        ),
    ],
)
async def test_config_error_keeps_data_spooled_until_fixed(
    fake_influx: FakeInfluxServer, tmp_path: Path, status: int, body: str, hint: str
) -> None:
    fixed = False

    def script(batch: list[str]) -> Answer:
        return Answer(204) if fixed else Answer(status, body)

    fake_influx.default = script
    lines = _lines(25)
    with structlog.testing.capture_logs() as logs:
        async with running(fake_influx, tmp_path) as rig:
            rig.spool.add_many(lines)
            await rig.spool.commit()
            await asyncio.to_thread(fake_influx.wait_for_requests, 3)
            # Still refused: nothing accepted, nothing dead-lettered, all still spooled.
            assert fake_influx.accepted_lines() == []
            assert await rig.dead() == []
            assert rig.spool.behind(SINK) == len(lines)
            assert rig.loop.stats.state == "blocked"
            fixed = True  # the operator fixes the token / creates the bucket
            await rig.drained()
            assert rig.loop.stats.state == "ok"
            description = rig.sink.describe()
            representation = repr(rig.sink)
    _assert_exactly_once(fake_influx.accepted_lines(), lines)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1, "one clear error, not one per retry"
    reason = errors[0]["reason"]
    assert hint in reason
    assert f"InfluxDB at {fake_influx.url}: {status}" in reason
    assert any(e["event"] == "sink writing again" for e in logs)
    _no_secret(reason, description, representation, *logs)


# A reverse proxy's own error pages (nginx's), as they come back instead of InfluxDB's answer.
NGINX_405 = (
    "<html>\r\n<head><title>405 Not Allowed</title></head>\r\n<body>\r\n<center><h1>405 Not "
    "Allowed</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
NGINX_400 = (
    "<html><head><title>400 The plain HTTP request was sent to HTTPS port</title></head>"
    "<body><center><h1>400 Bad Request</h1></center><center>The plain HTTP request was sent "
    "to HTTPS port</center><hr><center>nginx</center></body></html>"
)
HTML = {"Content-Type": "text/html"}


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        pytest.param(Answer(405, NGINX_405, HTML), 405, id="405-proxy-page"),
        pytest.param(Answer(415, '{"message":"unsupported media type"}'), 415, id="415"),
        pytest.param(Answer(400, NGINX_400, HTML), 400, id="400-html"),
        pytest.param(
            Answer(400, '{"code":"invalid","message":"writing requires points"}'),
            400,
            id="400-json-naming-no-line",
        ),
        pytest.param(Answer(407, "", {"Proxy-Authenticate": "Basic"}), 407, id="407"),
    ],
)
async def test_request_refused_blocks_the_sink_instead_of_bisecting(
    fake_influx: FakeInfluxServer, tmp_path: Path, answer: Answer, code: int
) -> None:
    """A 4xx that names no line says nothing about the data: one bisect would turn 1,000
    readings into ~2,000 requests and 1,000 dead letters. Blocked instead, then resumed."""
    fixed = False

    def script(batch: list[str]) -> Answer:
        return Answer(204) if fixed else answer

    fake_influx.default = script
    lines = _lines(1000)
    with structlog.testing.capture_logs() as logs:
        async with running(fake_influx, tmp_path) as rig:
            rig.spool.add_many(lines)
            await rig.spool.commit()
            await asyncio.to_thread(fake_influx.wait_for_requests, 3)
            assert rig.loop.stats.state == "blocked"
            assert f"InfluxDB at {fake_influx.url}: {code} " in rig.loop.stats.last_error
            assert await rig.dead() == []
            assert rig.spool.behind(SINK) == len(lines), "all still spooled"
            fixed = True  # the operator fixes the URL / the proxy
            await rig.drained()
            assert rig.loop.stats.state == "ok"
            assert rig.loop.stats.dead_lettered == 0
    requests = fake_influx.write_requests()
    assert all(r.lines == lines for r in requests), "the whole batch each time: no bisecting"
    assert len(requests) <= 6
    _assert_exactly_once(fake_influx.accepted_lines(), lines)
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1, "said once, not once per re-check"
    assert errors[0]["event"] == "sink cannot write; readings stay spooled until fixed"
    assert f"InfluxDB at {fake_influx.url}: {code} " in errors[0]["reason"]
    assert "check sinks.influxdb.url" in errors[0]["reason"]
    assert any(e["event"] == "sink writing again" for e in logs)


async def test_proxy_error_during_a_bisect_loses_no_good_line(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    """A real parse error starts a bisect; a proxy's 405 in the middle only pauses it."""
    lines = _lines(64)
    bad = "m,dev=x v=oops 1700000000000000000"
    lines.insert(21, bad)
    hiccups = 2

    def script(batch: list[str]) -> Answer:
        nonlocal hiccups
        if len(batch) < len(lines) and hiccups:
            hiccups -= 1
            return Answer(405, NGINX_405, HTML)
        if bad in batch:
            body = {"code": "invalid", "message": f"unable to parse '{bad}': invalid number"}
            return Answer(400, json.dumps(body))
        return Answer(204)

    fake_influx.default = script
    async with running(fake_influx, tmp_path) as rig:
        await rig.deliver(lines)
        assert await rig.dead() == [bad]
        assert rig.loop.stats.batches_failed["config"] == 2
    _assert_exactly_once(fake_influx.accepted_lines(), [ln for ln in lines if ln != bad])


async def test_v1_credentials_stay_out_of_urls_and_logs(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    fake_influx.script([Answer(401, '{"error":"authorization failed"}')])
    lines = _lines(5)
    with structlog.testing.capture_logs() as logs:
        async with running(
            fake_influx,
            tmp_path,
            api="v1",
            token=None,
            database="db1",
            retention_policy="autogen",
            username="writer",
            password=PASSWORD,
        ) as rig:
            await rig.deliver(lines)
            representation = repr(rig.sink)
    (error,) = [e for e in logs if e["log_level"] == "error"]
    reason = error["reason"]
    assert "check sinks.influxdb.username / password / password_file" in reason
    for request in fake_influx.write_requests():
        assert request.path == "/write"
        assert request.query == {"db": "db1", "rp": "autogen", "precision": "ns"}
        assert request.headers["Authorization"].startswith("Basic ")
        assert request.headers["Content-Encoding"] == "gzip"
        assert request.lines == lines
    _no_secret(reason, representation, *logs)


async def test_token_file_fixed_on_disk_is_picked_up(
    fake_influx: FakeInfluxServer, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    good = "new-token-1234"

    def script(batch: list[str]) -> Answer:
        auth = fake_influx.write_requests()[-1].headers.get("Authorization")
        return Answer(204) if auth == f"Token {good}" else Answer(401)

    fake_influx.default = script
    lines = _lines(5)
    async with running(fake_influx, tmp_path, token=None, token_file=str(token_file)) as rig:
        rig.spool.add_many(lines)
        await rig.spool.commit()
        await asyncio.to_thread(fake_influx.wait_for_requests, 2)
        token_file.write_text(good + "\n")
        await rig.drained()
    _assert_exactly_once(fake_influx.accepted_lines(), lines)


async def test_unreachable_server_is_retried(tmp_path: Path) -> None:
    """Nothing listening: RETRY with the server named, data kept, no secret anywhere."""
    fake = FakeInfluxServer()
    url = fake.url
    fake.close()
    section = InfluxSection(url=url, org="o", bucket="b", token=SecretStr(TOKEN), timeout=1.0)
    sink = InfluxSink(section)
    await sink.start()  # must not fail with the server down
    try:
        outcome = await sink.write(_lines(3))
    finally:
        await sink.close()
    assert outcome.verdict.value == "retry"
    assert outcome.reason.startswith("connect: InfluxDB at http://127.0.0.1:")
    _no_secret(outcome)
