"""A proxy's answer is not the data's fault: the real gateway blocks its sink, never bisects.

The gateway runs as a subprocess and writes to the FAKE InfluxDB (``FakeInfluxServer``, a
scripted stand-in, not a real server), which answers like an nginx in front of InfluxDB
with a misrouted location: ``405 Not Allowed`` as an HTML page. Taking that for bad data
used to bisect every batch down to single lines — ~2 requests and one dead letter per
reading. Expected instead: the sink is ``blocked`` with one clear error naming the code
and the URL, the readings stay spooled, and once the path is fixed (the fake answers 204)
every reading arrives exactly once and nothing is dead-lettered.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from contextlib import closing

import pytest
from gateway_proc import GatewayProcess
from servers import Answer, FakeInfluxServer, SerialPtyFactory
from test_delivery import HTML, NGINX_405
from test_faults import SEQ_RE, influx_sink, start_serial_gateway, wait_status

from devices.line.simulator import LineSimulator

pytestmark = pytest.mark.integration

READINGS = 1000


def test_proxy_405_blocks_the_sink_and_loses_nothing(
    fake_influx: FakeInfluxServer,
    serial_pty: SerialPtyFactory,
    gateway_process: Callable[..., GatewayProcess],
    unique_name: str,
) -> None:
    fake_influx.default = Answer(405, NGINX_405, HTML)
    pty = serial_pty()
    sim = LineSimulator(pty.master_fd, "kv", seed=7)
    device = {
        "driver": "line",
        **sim.options(pty.path),
        "measurement": unique_name,
        "fields": {"seq": {"type": "int"}},
    }
    # Batches of 100: a bisect of each would be ~200 requests per batch.
    sink = influx_sink(fake_influx.url, batch_size=100)
    gw = gateway_process({"sinks": {"influxdb": sink}, "devices": {"dev": device}})
    start_serial_gateway(gw)
    sim.write_lines(READINGS)

    blocked = wait_status(
        gw,
        lambda st: (
            st["devices"]["dev"]["readings"] == READINGS
            and st["sinks"]["influxdb"]["state"] == "blocked"
        ),
        "sink blocked with every reading received",
    )["sinks"]["influxdb"]
    assert blocked["last_error"].startswith(f"InfluxDB at {fake_influx.url}: 405 ")
    assert blocked["dead_lettered"] == 0
    assert blocked["points_written"] == 0
    assert len(fake_influx.write_requests()) <= 3, "re-checks with a long backoff, no storm"

    fake_influx.default = Answer(204)  # the proxy's location is fixed
    wait_status(
        gw,
        lambda st: (
            st["sinks"]["influxdb"]["state"] == "ok" and st["sinks"]["influxdb"]["behind"] == 0
        ),
        "sink writing again with nothing left",
        timeout=40.0,
    )
    assert gw.stop() == 0

    seqs = Counter(
        int(m.group(1))
        for line in fake_influx.accepted_lines()
        if line.startswith(f"{unique_name},") and (m := SEQ_RE.search(line))
    )
    assert set(seqs) == set(range(READINGS)), "every reading delivered"
    assert set(seqs.values()) == {1}, "each exactly once"
    # Each refused request was a whole batch, tried again later, never split.
    assert len(fake_influx.write_requests()) < READINGS // 100 + 10
    with closing(sqlite3.connect(gw.state_dir / "spool.db")) as db:
        assert db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0] == 0

    events = gw.log_events()
    assert not [e for e in events if e.get("event") == "splitting batch"]
    (error,) = [e for e in events if e.get("level") == "error"]
    assert error["event"] == "sink cannot write; readings stay spooled until fixed"
    assert f"InfluxDB at {fake_influx.url}: 405 Method Not Allowed" in error["reason"]
    assert "(405 Not Allowed 405 Not Allowed nginx)" in error["reason"], "the page as text"
    assert any(e.get("event") == "sink writing again" for e in events)
