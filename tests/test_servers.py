"""Proof that the test-suite helpers in ``servers.py`` and the conftest fixtures work."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import http.client
import os
import queue
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import serial
import serial_asyncio_fast
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.client.write.point import Point
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from servers import (
    Answer,
    FakeInfluxServer,
    Influx1,
    Influx1Factory,
    InfluxQueryError,
    Mosquitto,
    MosquittoFactory,
    SerialPtyFactory,
    ServerProcess,
    ServerStartError,
    TcpProxyFactory,
    VictoriaFactory,
    VictoriaMetrics,
    free_port,
    http_request,
    port_accepts,
)

pytestmark = pytest.mark.integration

T0_NS = 1_700_000_000_000_000_000
T0_MS = T0_NS // 1_000_000


# -- small MQTT client for the broker tests ------------------------------------------------------


class MqttClient:
    """Blocking paho client that records its CONNACK and received messages."""

    def __init__(
        self,
        broker: Mosquitto,
        client_id: str,
        clean_session: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.connected = threading.Event()
        self.session_present: bool | None = None
        self.reason: ReasonCode | None = None
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect(broker.host, broker.port, keepalive=30)
        self.client.loop_start()
        assert self.connected.wait(5), "no CONNACK"

    def _on_connect(
        self,
        _client: mqtt.Client,
        _userdata: object,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: object,
    ) -> None:
        self.session_present = flags.session_present
        self.reason = reason
        if reason.is_failure:
            _client.disconnect()  # no automatic reconnect attempts (they slow down loop_stop)
        self.connected.set()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda *_a: done.set()
        self.client.subscribe(topic, qos)
        assert done.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos).wait_for_publish(5)

    def get(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def mqtt_client(
    broker: Mosquitto, client_id: str, clean_session: bool = True, **kw: str
) -> Iterator[MqttClient]:
    c = MqttClient(broker, client_id, clean_session, **kw)
    try:
        yield c
    finally:
        c.close()


# -- generic --------------------------------------------------------------------------------------


def test_free_port_is_bindable_and_not_repeated() -> None:
    ports = {free_port() for _ in range(20)}
    assert len(ports) == 20
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports.pop()))


def test_unique_name_is_sanitised(unique_name: str) -> None:
    assert unique_name.startswith("test_unique_name_is_sanitised_")
    assert all(c.isdigit() or c == "_" or "a" <= c <= "z" for c in unique_name)


@pytest.mark.parametrize("param", ["A-b", "A b"])
def test_unique_name_differs_per_parameter(unique_name: str, param: str) -> None:
    assert unique_name.startswith("test_unique_name_differs_per_parameter_a_b_")


class _NeverListens(ServerProcess):
    name = "never-listens"
    ready_timeout = 0.5

    def command(self) -> list[str]:
        return ["sh", "-c", "echo 'starting but never listening'; exec sleep 30"]


def test_start_timeout_reports_log_tail_and_leaves_no_process(tmp_path: Path) -> None:
    server = _NeverListens(tmp_path)
    with pytest.raises(ServerStartError, match="starting but never listening"):
        server.start()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_early_exit_reports_log_tail(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path, extra_conf="no_such_option 1\n")
    with pytest.raises(ServerStartError, match=r"(?s)exited with code.*no_such_option"):
        broker.start()


# -- mosquitto ------------------------------------------------------------------------------------


def test_mosquitto_shared_broker_pub_sub(mosquitto: Mosquitto, unique_name: str) -> None:
    topic = f"t/{unique_name}"
    with mqtt_client(mosquitto, f"{unique_name}-sub") as sub:
        sub.subscribe(topic)
        with mqtt_client(mosquitto, f"{unique_name}-pub") as pub:
            pub.publish(topic, b"\x00hello\xff")
        msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos) == (topic, b"\x00hello\xff", 1)


async def test_mosquitto_with_aiomqtt(mosquitto: Mosquitto, unique_name: str) -> None:
    import aiomqtt

    topic = f"t/{unique_name}"
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier=unique_name) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b"42", qos=1)
        async with asyncio.timeout(5):
            async for msg in client.messages:
                assert msg.payload == b"42"
                break


def test_mosquitto_restart_with_persistence_keeps_session_and_queue(
    mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory(persistence=True)
    topic = f"t/{unique_name}"
    with mqtt_client(broker, "sub", clean_session=False) as sub:
        assert sub.session_present is False
        sub.subscribe(topic)
    with mqtt_client(broker, "pub") as pub:
        pub.publish(topic, b"queued while offline")
    port, pid = broker.port, broker.pid
    broker.restart()  # graceful: mosquitto saves its database on exit
    assert (broker.port, broker.running) == (port, True)
    assert broker.pid != pid
    assert broker.db_path.exists()
    with mqtt_client(broker, "sub", clean_session=False) as sub:
        assert sub.session_present is True
        assert sub.get().payload == b"queued while offline"


def test_mosquitto_kill_without_persistence_loses_session(
    mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory()
    with mqtt_client(broker, "sub", clean_session=False) as sub:
        sub.subscribe(f"t/{unique_name}")
    assert broker.kill() == -9
    assert not broker.running
    assert not port_accepts(broker.port)
    broker.start()
    with mqtt_client(broker, "sub", clean_session=False) as sub:
        assert sub.session_present is False


def test_mosquitto_kill_after_autosave_keeps_session(
    mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    broker = mosquitto_factory(persistence=True)
    with mqtt_client(broker, "sub", clean_session=False) as sub:
        sub.subscribe(f"t/{unique_name}")
    broker.wait_for_autosave()
    broker.kill()
    broker.start()
    with mqtt_client(broker, "sub", clean_session=False) as sub:
        assert sub.session_present is True


def test_mosquitto_password_auth(mosquitto_factory: MosquittoFactory) -> None:
    broker = mosquitto_factory(username="gw", password="s3cret")
    with mqtt_client(broker, "good", username="gw", password="s3cret") as c:
        assert c.reason is not None
        assert not c.reason.is_failure
    with mqtt_client(broker, "bad", username="gw", password="wrong") as c:
        assert c.reason is not None
        assert c.reason.is_failure
    with mqtt_client(broker, "anon") as c:
        assert c.reason is not None
        assert c.reason.is_failure


def test_context_manager_stops_by_pid(tmp_path: Path) -> None:
    with Mosquitto(tmp_path) as broker:
        pid = broker.pid
        assert port_accepts(broker.port)
    # mosquitto opens its listeners before it installs its signal handlers: stopped at
    # once on a loaded machine, SIGTERM may still end it the default way.
    assert broker.returncode in (0, -signal.SIGTERM)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- VictoriaMetrics ------------------------------------------------------------------------------


def test_victoria_naming_of_influx_points(victoria: VictoriaMetrics, unique_name: str) -> None:
    m = unique_name
    victoria.write_lines(f"{m},device=a x=1,y=2 {T0_NS}")
    victoria.wait_for_points(victoria.measurement_selector(m), 2)
    assert victoria.series_points(f"{m}_.+") == {
        (f"{m}_x", frozenset({("device", "a")})): [(T0_MS, 1)],
        (f"{m}_y", frozenset({("device", "a")})): [(T0_MS, 2)],
    }


async def test_victoria_accepts_influxdb_client_async(
    victoria: VictoriaMetrics, unique_name: str
) -> None:
    async with InfluxDBClientAsync(url=victoria.url, token="any", org="any") as client:
        points = [
            Point(unique_name).tag("device", "d1").field("seq", i).time(T0_NS + i * 1_000_000)
            for i in range(100)
        ]
        assert await client.write_api().write(bucket="any", record=points)
    # blocking helpers are called off the loop in async tests
    rows = await asyncio.to_thread(victoria.wait_for_points, f"{unique_name}_seq", 100)
    assert len(rows) == 1
    assert rows[0]["metric"] == {"__name__": f"{unique_name}_seq", "device": "d1"}
    assert rows[0]["values"] == list(range(100))
    assert rows[0]["timestamps"] == [T0_MS + i for i in range(100)]


def test_victoria_collapses_replayed_points(victoria: VictoriaMetrics, unique_name: str) -> None:
    lines = [f"{unique_name},device=a v={i} {T0_NS + i * 1_000_000_000}" for i in range(5)]
    victoria.write_lines(lines)
    victoria.wait_for_points(f"{unique_name}_v", 5)
    victoria.write_lines(lines)  # replay of the same batch
    victoria.write_lines(lines[:2])
    victoria.force_flush()
    assert victoria.count_points(f"{unique_name}_v") == 5


def test_victoria_wait_for_points_times_out(victoria: VictoriaMetrics, unique_name: str) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="0 of 1 points"):
        victoria.wait_for_points(f"{unique_name}_nothing", 1, timeout=0.3)
    assert time.monotonic() - start < 2


def test_victoria_data_survives_restart_and_kill(victoria_factory: VictoriaFactory) -> None:
    vm = victoria_factory()
    vm.write_lines(f"m,device=a v=1 {T0_NS}")
    vm.wait_for_points("m_v", 1)
    port = vm.port
    vm.restart()
    assert vm.port == port
    assert vm.count_points("m_v") == 1
    vm.kill()
    vm.start()
    assert vm.count_points("m_v") == 1


# -- InfluxDB 1.x ---------------------------------------------------------------------------------


def test_influx1_write_and_query(influx1: Influx1, unique_name: str) -> None:
    db = unique_name
    influx1.create_database(db)
    influx1.write_lines(db, [f'm,t=a x=1,s="x y" {T0_NS}', f"m,t=a x=2 {T0_NS}"])
    # same series and timestamp: the later write wins, as with our idempotent replays
    assert influx1.points(db, "m") == [{"time": T0_NS, "t": "a", "x": 2, "s": "x y"}]
    with pytest.raises(InfluxQueryError, match="not found"):
        influx1.query("SELECT * FROM m", db="no_such_db")


def test_influx1_auth_and_restart(influx1_factory: Influx1Factory) -> None:
    server = influx1_factory(auth=True)
    status, body = http_request("GET", server.url + "/query?q=SHOW+DATABASES")
    assert status == 401, body
    server.create_database("db")
    server.write_lines("db", f"m v=1 {T0_NS}")
    status, _ = http_request("POST", server.url + "/write?db=db", f"m v=2 {T0_NS}".encode())
    assert status == 401
    server.restart()
    assert server.points("db", "m") == [{"time": T0_NS, "v": 1}]
    server.kill()
    server.start()
    assert server.points("db", "m") == [{"time": T0_NS, "v": 1}]


# -- TCP proxy --------------------------------------------------------------------------------------


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        while data := sock.recv(65536):
            sock.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.settimeout(2)
    return s


def test_proxy_pass_through_and_delay(
    tcp_proxy: TcpProxyFactory, echo_server: tuple[str, int]
) -> None:
    proxy = tcp_proxy(*echo_server)
    with _connect(proxy.port) as s:
        s.sendall(b"ping")
        assert s.recv(100) == b"ping"
        proxy.delay(0.2)
        start = time.monotonic()
        s.sendall(b"slow")
        assert s.recv(100) == b"slow"
        assert 0.4 <= time.monotonic() - start < 1.5  # delayed both ways
        proxy.pass_through()
    assert proxy.connections_seen == 1


def test_proxy_blackhole_keeps_connection_silent(
    tcp_proxy: TcpProxyFactory, echo_server: tuple[str, int]
) -> None:
    proxy = tcp_proxy(*echo_server)
    proxy.blackhole()
    with _connect(proxy.port) as s:
        s.sendall(b"lost")
        s.settimeout(0.3)
        with pytest.raises(TimeoutError):
            s.recv(100)  # neither data nor FIN nor RST
        proxy.pass_through()
        s.settimeout(2)
        s.sendall(b"heal")
        assert s.recv(100) == b"heal"


def test_proxy_cut_resets_connections_and_keeps_accepting(
    tcp_proxy: TcpProxyFactory, echo_server: tuple[str, int]
) -> None:
    proxy = tcp_proxy(*echo_server)
    with _connect(proxy.port) as s1, _connect(proxy.port) as s2:
        s1.sendall(b"a")
        assert s1.recv(10) == b"a"
        proxy.wait_for_connections(2)
        proxy.cut()
        for s in (s1, s2):
            with pytest.raises(ConnectionResetError):
                s.recv(10)
    assert proxy.active_connections == 0
    with _connect(proxy.port) as s:
        s.sendall(b"again")
        assert s.recv(10) == b"again"
    assert proxy.connections_seen == 3


def test_proxy_refuse(tcp_proxy: TcpProxyFactory, echo_server: tuple[str, int]) -> None:
    proxy = tcp_proxy(*echo_server)
    proxy.refuse()
    with pytest.raises(ConnectionResetError), _connect(proxy.port) as s:  # at connect or recv
        s.recv(10)
    proxy.pass_through()
    with _connect(proxy.port) as s:
        s.sendall(b"ok")
        assert s.recv(10) == b"ok"


def test_proxy_drop_responses_after_the_request_was_processed(
    tcp_proxy: TcpProxyFactory, fake_influx: FakeInfluxServer
) -> None:
    proxy = tcp_proxy("127.0.0.1", fake_influx.port)
    proxy.drop_responses()
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=5)
    conn.request("POST", "/api/v2/write?bucket=b", body=b"m v=1 1")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
        conn.getresponse()
    conn.close()
    assert fake_influx.accepted_lines() == ["m v=1 1"]  # the server did write it
    assert proxy.responses_dropped == 1


def test_proxy_resets_clients_when_upstream_is_down(tcp_proxy: TcpProxyFactory) -> None:
    proxy = tcp_proxy("127.0.0.1", free_port())  # nothing listens there
    with pytest.raises(ConnectionResetError), _connect(proxy.port) as s:
        s.recv(10)


async def test_proxy_with_in_process_influxdb_client(
    tcp_proxy: TcpProxyFactory, victoria: VictoriaMetrics, unique_name: str
) -> None:
    proxy = tcp_proxy(victoria.host, victoria.port)
    async with InfluxDBClientAsync(url=proxy.url, token="t", org="o", timeout=300) as client:
        write = client.write_api()
        proxy.blackhole()
        with pytest.raises(asyncio.TimeoutError):
            await write.write(bucket="b", record=f"{unique_name} v=1 {T0_NS}")
        proxy.pass_through()
        assert await write.write(bucket="b", record=f"{unique_name} v=2 {T0_NS}")
    rows = await asyncio.to_thread(victoria.wait_for_points, f"{unique_name}_v", 1)
    assert rows[0]["values"] == [2]


def test_proxy_in_front_of_mosquitto_cut_and_close(
    tcp_proxy: TcpProxyFactory, mosquitto: Mosquitto, unique_name: str
) -> None:
    proxy = tcp_proxy(mosquitto.host, mosquitto.port)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique_name)
    disconnected = threading.Event()

    def on_disconnect(c: mqtt.Client, *_a: object) -> None:
        disconnected.set()
        c.disconnect()  # no automatic reconnect attempts

    client.on_disconnect = on_disconnect
    client.connect("127.0.0.1", proxy.port)
    client.loop_start()
    try:
        proxy.wait_for_connections(1)
        wait = time.monotonic()
        while not client.is_connected():
            assert time.monotonic() - wait < 5
            time.sleep(0.01)
        proxy.cut()
        assert disconnected.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()
    proxy.close()
    assert not port_accepts(proxy.port)


# -- serial pty -------------------------------------------------------------------------------------


def test_serial_pty_passes_bytes_unchanged(serial_pty: SerialPtyFactory) -> None:
    pty = serial_pty()
    raw = bytes(range(256)) + b"\r\n\x03\x04\x11\x13"
    with serial.Serial(pty.path, 9600, timeout=2) as port:
        pty.write(raw)
        assert port.read(len(raw)) == raw
        port.write(b"CMD\r\n\x00")
        assert pty.read_until(b"\x00") == b"CMD\r\n\x00"
    assert pty.read_available(0.05) == b""


async def test_serial_pty_with_pyserial_asyncio_and_unplug(serial_pty: SerialPtyFactory) -> None:
    pty = serial_pty()
    reader, writer = await serial_asyncio_fast.open_serial_connection(url=pty.path, baudrate=9600)
    try:
        await asyncio.to_thread(pty.write, b"T=21.5\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"T=21.5\n"
        writer.write(b"READ?\n")
        assert await asyncio.to_thread(pty.read_until, b"\n") == b"READ?\n"
        pty.close()  # unplug: the transport's connection_lost carries pyserial's error
        async with asyncio.timeout(5):
            with pytest.raises(serial.SerialException, match="returned no data"):
                await reader.read()
    finally:
        writer.close()


def test_serial_pty_write_times_out_when_nobody_reads(serial_pty: SerialPtyFactory) -> None:
    pty = serial_pty()
    with pytest.raises(TimeoutError):
        pty.write(b"x" * 10_000_000, timeout=0.2)


# -- FAKE InfluxDB ----------------------------------------------------------------------------------


async def test_fake_influx_scripted_answers_via_influxdb_client(
    fake_influx: FakeInfluxServer,
) -> None:
    fake_influx.script(
        [
            Answer(429, '{"code":"too many requests"}', {"Retry-After": "7"}),
            Answer(503, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}),
            Answer(401, '{"code":"unauthorized","message":"unauthorized access"}'),
            Answer(404, '{"code":"not found","message":"bucket \\"b\\" not found"}'),
            Answer(413, '{"code":"request too large"}'),
        ]
    )
    async with InfluxDBClientAsync(url=fake_influx.url, token="tok", org="o") as client:
        write = client.write_api()
        seen: list[tuple[int, str | None]] = []
        for i in range(5):
            with pytest.raises(InfluxDBError) as err:
                await write.write(bucket="b", record=f"m v={i} {T0_NS}")
            seen.append((err.value.response.status, err.value.retry_after))
        assert await write.write(bucket="b", record=f"m v=5 {T0_NS}")  # default answer 204
        assert await client.ping()
    assert seen == [
        (429, "7"),
        (503, "Wed, 21 Oct 2015 07:28:00 GMT"),
        (401, None),
        (404, None),
        (413, None),
    ]
    assert fake_influx.accepted_lines() == [f"m v=5 {T0_NS}"]
    req = fake_influx.write_requests()[0]
    assert (req.path, req.query["bucket"], req.query["org"]) == ("/api/v2/write", "b", "o")
    assert req.headers["Authorization"] == "Token tok"
    assert [r.status for r in fake_influx.write_requests()] == [429, 503, 401, 404, 413, 204]


def test_fake_influx_callable_answer_gzip_and_partial_write(
    fake_influx: FakeInfluxServer,
) -> None:
    def reject_bad(lines: list[str]) -> Answer:
        if any("bad" in ln for ln in lines):
            return Answer(400, '{"code":"invalid","message":"unable to parse \'bad\'"}')
        return Answer(204)

    fake_influx.default = reject_bad
    fake_influx.script([Answer(422, '{"code":"unprocessable entity"}', written=["m v=1 1"])])
    gz = {"Content-Encoding": "gzip"}
    post = fake_influx.url + "/api/v2/write?bucket=b&org=o"
    assert http_request("POST", post, gzip.compress(b"m v=1 1\nm v=2 2"), gz)[0] == 422
    assert http_request("POST", post, gzip.compress(b"m v=3 3\nbad\n"), gz)[0] == 400
    assert http_request("POST", fake_influx.url + "/write?db=x", b"m v=4 4\n")[0] == 204
    assert fake_influx.accepted_lines() == ["m v=1 1", "m v=4 4"]
    assert [r.lines for r in fake_influx.write_requests()] == [
        ["m v=1 1", "m v=2 2"],
        ["m v=3 3", "bad"],
        ["m v=4 4"],
    ]
    assert fake_influx.requests[2].query == {"db": "x"}
    assert http_request("GET", fake_influx.url + "/ping")[0] == 204
    assert http_request("GET", fake_influx.url + "/health")[0] == 200
    assert http_request("GET", fake_influx.url + "/api/v2/buckets")[0] == 404
    assert len(fake_influx.wait_for_requests(3, timeout=1)) == 3


def test_fake_influx_delayed_answer(fake_influx: FakeInfluxServer) -> None:
    fake_influx.script([Answer(204, delay=0.3)])
    start = time.monotonic()
    assert http_request("POST", fake_influx.url + "/write?db=x", b"m v=1 1")[0] == 204
    assert 0.3 <= time.monotonic() - start < 2
