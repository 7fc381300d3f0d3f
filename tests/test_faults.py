"""Fault injection against the real gateway process: "never lose a reading".

Every reading carries a ``seq`` (counting up from 0 per test) and a timestamp, so "nothing
lost" is checked in the database as: every ``seq`` stored exactly once, with the values
the device sent, in time order. The gateway runs as a subprocess (``python -m gateway
run``); VictoriaMetrics is the database (v2 write API, dedup on, ms precision: a point's
identity is series + ms, and the gateway spaces arrival times of one device >= 1 ms).

Inputs are real: a pseudo-terminal fed by the ``line`` simulator, or MQTT QoS 1 through
mosquitto. Serial input cannot survive a gateway restart (pyserial flushes the port's
input queue when it opens it, and a real UART has no memory either), so the kill -9 test
feeds its readings over MQTT, where the broker keeps QoS 1 messages for the gateway's
persistent session (stable client id, clean_session = false) while it is down.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import shutil
import sqlite3
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from gateway_proc import GatewayProcess
from paho.mqtt.enums import CallbackAPIVersion
from servers import (
    Mosquitto,
    SerialPty,
    SerialPtyFactory,
    TcpProxyFactory,
    VictoriaFactory,
    VictoriaMetrics,
    http_request,
    wait_until,
)

from devices.line.simulator import LineSimulator

pytestmark = pytest.mark.integration

GatewayFactory = Callable[..., GatewayProcess]
Fields = dict[str, float]

# The gateway writes status.json every 2 s; conditions on it need a few rounds.
STATUS_TIMEOUT = 10.0
# VictoriaMetrics stores floats as decimal mantissa/exponent; the simulators' values
# have few digits, so this only absorbs the last bit.
REL = 1e-12


# --- inputs ------------------------------------------------------------------------------


class _Feeder(threading.Thread):
    """Produces readings at ``rate_hz`` from a background thread until stopped.

    ``expected`` maps every seq produced to the values it carried. An exception in the
    thread (e.g. the pty stayed full because the gateway stopped reading) is re-raised
    by :meth:`stop` and :meth:`check`.
    """

    def __init__(self, rate_hz: float, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.rate_hz = rate_hz
        self.expected: dict[int, Fields] = {}
        self.error: BaseException | None = None
        self._stop_event = threading.Event()
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many readings were produced so far (seqs 0 .. count-1)."""
        with self._lock:
            return len(self.expected)

    def produce(self, n: int) -> None:
        raise NotImplementedError

    def run(self) -> None:
        begin = time.monotonic()
        try:
            while not self._stop_event.is_set():
                due = int((time.monotonic() - begin) * self.rate_hz) - self.count
                if due > 0:
                    self.produce(min(due, 200))
                else:
                    self._stop_event.wait(0.005)
        except BaseException as err:
            self.error = err

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"{self.name} failed: {self.error!r}") from self.error

    def stop(self) -> int:
        """Stop producing; return how many readings were produced."""
        self._stop_event.set()
        self.join(10)
        self.check()
        return self.count


class LineFeeder(_Feeder):
    """Writes ``kv`` lines of the line simulator into a pty."""

    def __init__(self, pty: SerialPty, rate_hz: float) -> None:
        super().__init__(rate_hz, "line-feeder")
        self.sim = LineSimulator(pty.master_fd, "kv", seed=7)

    def produce(self, n: int) -> None:
        lines = list(self.sim.lines(n))
        parsed = [
            {k: float(v) for k, v in (kv.split("=") for kv in line.decode().split())}
            for line in lines
        ]
        self.sim.write(b"".join(lines))
        with self._lock:
            for values in parsed:
                self.expected[int(values["seq"])] = values

    def driver_options(self, pty: SerialPty) -> dict[str, Any]:
        return self.sim.options(pty.path)


class MqttFeeder(_Feeder):
    """Publishes ``{"seq": n, "temperature": x}`` with QoS 1.

    ``topic`` may hold ``{n}``: the readings then rotate over ``devices`` topics (one
    device each). ``device_time`` adds ``"time": start_ms + seq`` (for ``time_field``): a
    message the broker redelivers then lands on the same point.
    """

    def __init__(
        self,
        broker: Mosquitto,
        topic: str,
        rate_hz: float,
        devices: int = 1,
        device_time: bool = False,
    ) -> None:
        super().__init__(rate_hz, "mqtt-feeder")
        self.topics = [topic.format(n=n) for n in range(devices)]
        self.start_ms = int(time.time() * 1000) if device_time else None
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        self._last: mqtt.MQTTMessageInfo | None = None

    def produce(self, n: int) -> None:
        for _ in range(n):
            seq = self.count
            values = {"seq": float(seq), "temperature": round(20 + (seq % 997) / 100, 2)}
            doc: dict[str, float] = {"seq": seq, "temperature": values["temperature"]}
            if self.start_ms is not None:
                doc["time"] = self.start_ms + seq
            payload = json.dumps(doc)
            topic = self.topics[seq % len(self.topics)]
            self._last = self.client.publish(topic, payload, qos=1)
            with self._lock:
                self.expected[seq] = values

    def stop(self) -> int:
        count = super().stop()
        if self._last is not None:
            self._last.wait_for_publish(10)
        self.client.loop_stop()
        self.client.disconnect()
        return count


# --- the gateway -------------------------------------------------------------------------


def influx_sink(url: str, **overrides: Any) -> dict[str, Any]:
    """A v2 sink section for VictoriaMetrics with fast flushes and retries."""
    return {
        "url": url,
        "org": "test",
        "bucket": "test",
        "token": "test-token",
        "flush_interval": 0.2,
        "retry_max_interval": 1.0,
        "timeout": 1.0,
        **overrides,
    }


def line_device(feeder: LineFeeder, pty: SerialPty, measurement: str) -> dict[str, Any]:
    return {
        "driver": "line",
        **feeder.driver_options(pty),
        "measurement": measurement,
        "fields": {"seq": {"type": "int"}},
    }


def status(gw: GatewayProcess) -> dict[str, Any] | None:
    try:
        return gw.status()
    except (FileNotFoundError, ValueError):
        return None


def wait_status(
    gw: GatewayProcess,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = STATUS_TIMEOUT,
) -> dict[str, Any]:
    """Poll status.json until ``predicate`` holds; return that status."""
    found: list[dict[str, Any]] = []

    def check() -> bool:
        st = status(gw)
        if st is not None and predicate(st):
            found.append(st)
            return True
        return False

    try:
        wait_until(check, timeout=timeout, what=what)
    except TimeoutError as err:
        raise AssertionError(f"{err}\nlast status: {status(gw)}\n{gw.log_tail()}") from None
    return found[0]


def start_serial_gateway(gw: GatewayProcess) -> GatewayProcess:
    """Start and wait until the port is open (bytes written before are flushed by the open)."""
    gw.start()
    gw.wait_for_log("serial port opened", occurrence=gw.starts)
    return gw


# --- reading back --------------------------------------------------------------------------


def export(vm: VictoriaMetrics, match: str) -> list[dict[str, Any]]:
    """VictoriaMetrics' export of ``match``, including points stamped in the future.

    ``VictoriaMetrics.export`` (like VM's API) ends at *now*; arrival times spaced by
    ``time_resolution`` run ahead of the wall clock for a moment after a burst (e.g. the
    broker's backlog after a restart), and such points would look missing.
    """
    vm.force_flush()
    query = urllib.parse.urlencode({"match[]": match, "end": f"{time.time() + 86400:.3f}"})
    code, body = http_request("GET", f"{vm.url}/api/v1/export?{query}")
    assert code == 200, f"export {match!r}: HTTP {code} {body[:200]!r}"
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


def stored(vm: VictoriaMetrics, measurement: str) -> dict[int, list[dict[str, float]]]:
    """seq -> every reading VictoriaMetrics holds with that seq (``time_ms`` + fields)."""
    rows: dict[int, Fields] = {}
    labels: set[frozenset[tuple[str, str]]] = set()
    for series in export(vm, f'{{__name__=~"{measurement}_.+"}}'):
        tags = dict(series["metric"])
        field = str(tags.pop("__name__")).removeprefix(f"{measurement}_")
        labels.add(frozenset(tags.items()))
        for ts, value in zip(series["timestamps"], series["values"], strict=True):
            rows.setdefault(ts, {})[field] = value
    assert len(labels) <= 1, f"one device, one tag set expected; got {labels}"
    out: dict[int, list[dict[str, float]]] = {}
    for ts, fields in sorted(rows.items()):
        assert "seq" in fields, f"a point at {ts} ms without seq: {fields}"
        out.setdefault(int(fields["seq"]), []).append({"time_ms": float(ts), **fields})
    return out


def assert_once_and_exact(
    got: Mapping[int, list[dict[str, float]]], expected: Mapping[int, Fields]
) -> None:
    """No seq twice, only seqs that were sent, each with its values, in time order."""
    dups = {seq: rows for seq, rows in got.items() if len(rows) > 1}
    assert not dups, f"{len(dups)} seqs stored more than once, e.g. {list(dups.items())[:3]}"
    unknown = sorted(got.keys() - expected.keys())
    assert not unknown, f"seqs stored that were never sent: {unknown[:10]}"
    for seq, (row,) in got.items():
        want = expected[seq]
        values = {k: v for k, v in row.items() if k != "time_ms"}
        assert values.keys() == want.keys(), f"seq {seq}: fields {values} != {want}"
        for key, value in want.items():
            assert values[key] == pytest.approx(value, rel=REL), f"seq {seq} {key}: {values}"
    times = [got[seq][0]["time_ms"] for seq in sorted(got)]
    assert times == sorted(times), "readings not stored in seq order"
    assert len(set(times)) == len(times), "two readings share a timestamp"


def wait_for_seqs(
    vm: VictoriaMetrics, measurement: str, seqs: set[int], timeout: float = 20.0
) -> dict[int, list[dict[str, float]]]:
    """Poll until every seq in ``seqs`` is stored; return what is stored."""
    last: dict[int, list[dict[str, float]]] = {}

    def arrived() -> bool:
        nonlocal last
        last = stored(vm, measurement)
        return seqs <= last.keys()

    try:
        wait_until(arrived, timeout=timeout, interval=0.2, what=f"{len(seqs)} seqs")
    except TimeoutError as err:
        missing = sorted(seqs - last.keys())
        raise AssertionError(f"{err}: {len(missing)} missing, e.g. {missing[:20]}") from None
    return last


def runs(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) of each run of consecutive numbers."""
    out: list[tuple[int, int]] = []
    for _, group in itertools.groupby(enumerate(seqs), key=lambda pair: pair[1] - pair[0]):
        members = [seq for _, seq in group]
        out.append((members[0], members[-1]))
    return out


SEQ_RE = re.compile(r"[ ,]seq=(\d+)i?(?:,| |$)")


def spooled_seqs(spool: Path, work: Path) -> set[int]:
    """Every seq in the chunks of a (crashed) gateway's spool file, read from a copy."""
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "spool.db"
    for suffix in ("", "-wal"):
        src = Path(f"{spool}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{copy}{suffix}")
    seqs: set[int] = set()
    with closing(sqlite3.connect(copy)) as db:
        for (data,) in db.execute("SELECT data FROM chunk"):
            for line in zlib.decompress(data).decode().split("\n"):
                m = SEQ_RE.search(line)
                if m:
                    seqs.add(int(m.group(1)))
    return seqs


# --- 1. kill -9, again and again -----------------------------------------------------------


def test_kill9_repeatedly_loses_nothing(
    victoria: VictoriaMetrics,
    mosquitto_factory: Callable[..., Mosquitto],
    tcp_proxy: TcpProxyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
    tmp_path: Path,
) -> None:
    """kill -9 six times at random moments while 10 devices send 200 readings/s over
    MQTT QoS 1 (broker persistence on, persistent session).

    A message is acknowledged to the broker only once the spool commit holding it is
    done, so the broker resends whatever a kill caught before that. Asserted: after the
    last restart and the drain every seq is in the database exactly once, with the values
    sent, in order; the spool files after the kills held readings (replay was exercised);
    a clean stop leaves nothing behind. Two of the kills hit while writes stall in a
    black-holed proxy (a flush in flight). Before acknowledging after the commit, each
    kill lost the readings received since the last commit (1.5-2.6 %).
    """
    rng = random.Random(unique_name)
    broker = mosquitto_factory(persistence=True, extra_conf="max_queued_messages 0\n")
    proxy = tcp_proxy(victoria.host, victoria.port)
    gw = gateway_process(
        {
            "gateway": {"shutdown_grace": 5.0},
            "spool": {"commit_interval": 0.2},
            "sinks": {"influxdb": influx_sink(proxy.url, timeout=3.0)},
            "brokers": {
                "default": {
                    "host": broker.host,
                    "port": broker.port,
                    "client_id": unique_name,
                    "reconnect_initial": 0.2,
                    "reconnect_max": 1.0,
                }
            },
            "devices": {
                "mq": {
                    "driver": "json",
                    # One series: the seqs of all ten devices are checked as one stream.
                    "topics": [f"{unique_name}/+/state"],
                    "qos": 1,
                    "time_field": "time",
                    "measurement": unique_name,
                    "fields": {"seq": {"type": "int"}},
                }
            },
        }
    )
    gw.start()
    gw.wait_for_log("connected to MQTT broker")  # the persistent session now exists
    feeder = MqttFeeder(broker, f"{unique_name}/d{{n}}/state", rate_hz=200, devices=10, device_time=True)
    feeder.start()
    committed: set[int] = set()
    try:
        for kill in range(6):
            stall = kill in (1, 3)
            time.sleep(rng.uniform(0.4, 1.5))
            if stall:
                proxy.blackhole()
                time.sleep(rng.uniform(0.3, 0.8))
            gw.kill()
            committed |= spooled_seqs(gw.state_dir / "spool.db", tmp_path / f"kill{kill}")
            proxy.pass_through()
            feeder.check()
            gw.start()
        time.sleep(1.0)  # the stream goes on for a while after the last restart
    finally:
        total = feeder.stop()
    wait_for_seqs(victoria, unique_name, set(range(total)), timeout=30.0)
    assert gw.stop() == 0
    assert '"left_in_spool": {"influxdb": 0}' in gw.log_text()
    got = stored(victoria, unique_name)

    assert_once_and_exact(got, feeder.expected)
    assert got.keys() == set(range(total))
    assert committed, "no kill left readings in the spool: nothing was replayed"
    print(f"published {total} over 6 kills, all stored once")


# --- 2. the database goes away for a while ---------------------------------------------------


def sink_state(st: dict[str, Any]) -> dict[str, Any]:
    sink: dict[str, Any] = st["sinks"]["influxdb"]
    return sink


def test_database_down_then_back_delivers_everything_once(
    victoria_factory: VictoriaFactory,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """VictoriaMetrics stopped for a while with 100 readings/s flowing, then restarted.

    Asserted: during the outage status.json shows the sink ``retrying`` with ``behind`` > 0
    and the device's readings counter still growing; afterwards every seq sent is stored
    exactly once with its values, in time order, and a clean stop leaves nothing behind.
    """
    vm = victoria_factory()
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=100)
    gw = gateway_process(
        {
            "sinks": {"influxdb": influx_sink(vm.url)},
            "devices": {"dev": line_device(feeder, pty, unique_name)},
        }
    )
    start_serial_gateway(gw)
    feeder.start()
    try:
        wait_for_seqs(vm, unique_name, set(range(50)))
        vm.stop()
        down = wait_status(
            gw,
            lambda st: sink_state(st)["state"] == "retrying" and sink_state(st)["behind"] > 0,
            "sink retrying with a backlog",
        )
        assert sink_state(down)["last_error"].startswith("connect"), sink_state(down)
        readings = down["devices"]["dev"]["readings"]
        wait_status(
            gw,
            lambda st: (
                st["devices"]["dev"]["readings"] > readings
                and sink_state(st)["state"] == "retrying"
            ),
            "readings going on during the outage",
        )
        vm.restart()
        wait_status(gw, lambda st: sink_state(st)["state"] == "ok", "sink ok again")
    finally:
        total = feeder.stop()
    got = wait_for_seqs(vm, unique_name, set(range(total)))
    assert gw.stop() == 0
    assert_once_and_exact(got, feeder.expected)
    assert got.keys() == set(range(total))
    assert '"left_in_spool": {"influxdb": 0}' in gw.log_text()


# --- 3. the network between gateway and database misbehaves ----------------------------------


def test_network_faults_retry_and_resends_are_idempotent(
    victoria: VictoriaMetrics,
    tcp_proxy: TcpProxyFactory,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """A proxy between gateway and VictoriaMetrics: black hole, cut, delay, lost responses.

    Asserted: a black-holed write times out (sink ``retrying``, last error ``timeout``)
    while the device's readings counter keeps growing; connections cut with RST are
    retried; a delayed link still delivers (write latency >= the delay); writes whose
    answer was lost are resent and each point is stored once. At the end every seq sent
    is stored exactly once with its values, in time order.
    """
    proxy = tcp_proxy(victoria.host, victoria.port)
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=100)
    gw = gateway_process(
        {
            "sinks": {"influxdb": influx_sink(proxy.url, timeout=1.0)},
            "devices": {"dev": line_device(feeder, pty, unique_name)},
        }
    )
    start_serial_gateway(gw)
    feeder.start()

    def failed(st: dict[str, Any], *kinds: str) -> bool:
        return any(kind in sink_state(st)["batches_failed"] for kind in kinds)

    def caught_up() -> None:
        feeder.check()
        wait_for_seqs(victoria, unique_name, set(range(feeder.count)))

    try:
        wait_for_seqs(victoria, unique_name, set(range(20)))

        proxy.blackhole()
        st = wait_status(
            gw,
            lambda st: (
                sink_state(st)["state"] == "retrying"
                and sink_state(st)["last_error"].startswith("timeout")
            ),
            "a write timing out",
        )
        readings = st["devices"]["dev"]["readings"]
        wait_status(
            gw,
            lambda st: (
                st["devices"]["dev"]["readings"] > readings
                and sink_state(st)["state"] == "retrying"
            ),
            "readers going on while the database does not answer",
        )

        # Still black-holed, so a write is always waiting: each cut resets one in flight.
        def cut() -> bool:
            proxy.cut()
            st = status(gw)
            return st is not None and failed(st, "connection", "disconnected")

        wait_until(cut, timeout=STATUS_TIMEOUT, interval=0.2, what="a write reset by a cut")
        proxy.pass_through()
        caught_up()

        proxy.delay(0.2)
        wait_status(
            gw,
            lambda st: sink_state(st)["write_latency_s"] >= 0.2 and sink_state(st)["state"] == "ok",
            "a slow write that succeeded",
        )
        caught_up()
        proxy.pass_through()

        proxy.drop_responses()
        wait_until(lambda: proxy.responses_dropped >= 2, timeout=10, what="lost responses")
        proxy.pass_through()
        caught_up()
    finally:
        total = feeder.stop()
    got = wait_for_seqs(victoria, unique_name, set(range(total)))
    assert gw.stop() == 0
    final = sink_state(gw.status())
    assert final["batches_failed"].get("timeout", 0) >= 1, final
    assert failed(gw.status(), "disconnected"), final
    assert_once_and_exact(got, feeder.expected)
    assert got.keys() == set(range(total))


# --- 5. the spool reaches its cap during an outage ---------------------------------------------


def test_spool_cap_drops_the_oldest_and_delivers_the_newest(
    victoria_factory: VictoriaFactory,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """``spool.max_bytes = "32KiB"``, the database down from the start, 1000 readings/s.

    Asserted: the gateway keeps running and reading; the drops are counted in
    status.json (``spool.dropped["influxdb:spool_full"]`` = D > 0) and logged ("spool
    dropped readings"); after the database comes up, exactly the seqs D .. total-1 are
    stored (the newest), each once with its values: what was dropped is the oldest.
    """
    vm = victoria_factory(start=False)
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=1000)
    gw = gateway_process(
        {
            "spool": {"max_bytes": "32KiB", "commit_interval": 0.1},
            "sinks": {"influxdb": influx_sink(vm.url)},
            "devices": {"dev": line_device(feeder, pty, unique_name)},
        }
    )
    start_serial_gateway(gw)
    feeder.start()
    try:
        st = wait_status(gw, lambda st: bool(st["spool"]["dropped"]), "spool drops")
        readings = st["devices"]["dev"]["readings"]
        wait_status(
            gw, lambda st: st["devices"]["dev"]["readings"] > readings + 500, "readings going on"
        )
    finally:
        total = feeder.stop()
    wait_status(gw, lambda st: st["spool"]["committed"] == total, "everything read committed")
    gw.wait_for_log("spool dropped readings")
    assert gw.proc is not None
    assert gw.proc.poll() is None, "the gateway must keep running"
    vm.start()
    wait_for_seqs(vm, unique_name, {total - 1})
    assert gw.stop() == 0
    final = gw.status()
    dropped = final["spool"]["dropped"]
    assert set(dropped) == {"influxdb:spool_full"}, dropped
    first_kept = dropped["influxdb:spool_full"]
    assert 0 < first_kept < total
    assert '"left_in_spool": {"influxdb": 0}' in gw.log_text()
    got = stored(vm, unique_name)
    assert_once_and_exact(got, feeder.expected)
    assert got.keys() == set(range(first_kept, total)), (
        f"kept {min(got)}..{max(got)} ({len(got)}), dropped {first_kept} of {total}"
    )


# --- 6. SIGTERM while the database is slow -------------------------------------------------------

GRACE_S = 1.0
# Stopping readers, cancelling the write in flight, closing the spool, interpreter exit.
STOP_MARGIN_S = 1.5


@pytest.mark.parametrize("fault", ["blackhole", "delay"])
def test_sigterm_with_slow_database_exits_in_grace_and_replays(
    fault: str,
    victoria: VictoriaMetrics,
    tcp_proxy: TcpProxyFactory,
    serial_pty: SerialPtyFactory,
    gateway_process: GatewayFactory,
    unique_name: str,
) -> None:
    """SIGTERM while writes hang (black hole, or a 3 s delay: longer than the 1 s grace).

    Asserted: the process exits 0 within ``shutdown_grace`` + 1.5 s, logs that the grace
    time ran out with readings left in the spool; restarted with the database reachable
    it delivers the rest: every seq sent is stored exactly once with its values.
    """
    proxy = tcp_proxy(victoria.host, victoria.port)
    pty = serial_pty()
    feeder = LineFeeder(pty, rate_hz=200)
    gw = gateway_process(
        {
            "gateway": {"shutdown_grace": GRACE_S},
            "sinks": {"influxdb": influx_sink(proxy.url, timeout=5.0)},
            "devices": {"dev": line_device(feeder, pty, unique_name)},
        }
    )
    start_serial_gateway(gw)
    feeder.start()
    try:
        wait_for_seqs(victoria, unique_name, set(range(20)))
        if fault == "blackhole":
            proxy.blackhole()
        else:
            proxy.delay(3.0)
        wait_status(gw, lambda st: sink_state(st)["behind"] > 100, "a backlog")
    finally:
        total = feeder.stop()
    wait_status(gw, lambda st: st["devices"]["dev"]["readings"] == total, "everything read")
    began = time.monotonic()
    assert gw.stop() == 0
    took = time.monotonic() - began
    assert took <= GRACE_S + STOP_MARGIN_S, f"stop took {took:.2f} s"
    stopped = [e for e in gw.log_events() if e.get("event") == "gateway stopped"]
    assert stopped[-1]["left_in_spool"]["influxdb"] > 0, stopped
    assert "grace time over" in gw.log_text()

    proxy.pass_through()
    gw.start()
    got = wait_for_seqs(victoria, unique_name, set(range(total)))
    assert gw.stop() == 0
    assert_once_and_exact(got, feeder.expected)
    assert got.keys() == set(range(total))
    print(f"{fault}: stop took {took:.2f} s, left {stopped[-1]['left_in_spool']}")
