"""Real servers and network/serial fault tools for the test suite.

Everything here is plain, blocking Python that tests drive from the test thread:

* :class:`Mosquitto` and :class:`VictoriaMetrics` (the real Debian packaged servers),
  :class:`SerialPty` and :class:`PluggableSerialPty` (pseudo-terminals, one behind a stable
  symlink that can be unplugged) live in the public driver test kit :mod:`gateway.testing`
  and are re-exported here.
* :class:`Influx1` starts a real InfluxDB 1.x as a subprocess on free ``127.0.0.1`` ports with
  a generated config and temp data dir; it can be stopped, killed (``kill -9``) and restarted.
* :class:`TcpProxy` sits between the gateway and a server and can delay, black-hole, cut,
  refuse, or drop responses; it runs in its own thread with its own event loop, so it serves an
  in-process gateway and a gateway subprocess alike.
* :class:`FakeInfluxServer` is a FAKE InfluxDB write endpoint, for answers that real servers
  will not give on demand (429/503 with Retry-After, 400, 401, 404, 413, 422 ...).

Async tests that run the gateway *in-process* must not call the blocking helpers directly from
the event loop (the gateway would stall while the helper polls); wrap them, e.g.
``await asyncio.to_thread(victoria.wait_for_points, sel, 10)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import shutil
import socket
import struct
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from aiohttp import web

# The real-server fixtures and virtual serial ports live in the public test kit
# (gateway.testing), so third-party driver packages can use them; re-exported here.
from gateway.testing.pty import PluggableSerialPty, SerialPty
from gateway.testing.servers import (
    HOST,
    Mosquitto,
    SeriesKey,
    ServerProcess,
    ServerStartError,
    VictoriaMetrics,
    free_port,
    http_request,
    port_accepts,
    wait_until,
)

__all__ = [
    "HOST",
    "Answer",
    "AnswerFn",
    "FakeInfluxServer",
    "Influx1",
    "Influx1Factory",
    "InfluxQueryError",
    "Mosquitto",
    "MosquittoFactory",
    "PluggableSerialPty",
    "RecordedRequest",
    "SerialPty",
    "SerialPtyFactory",
    "SeriesKey",
    "ServerProcess",
    "ServerStartError",
    "TcpProxy",
    "TcpProxyFactory",
    "VictoriaFactory",
    "VictoriaMetrics",
    "free_port",
    "http_request",
    "iter_lines",
    "port_accepts",
    "wait_until",
]



# --------------------------------------------------------------------------------------------
# InfluxDB 1.x
# --------------------------------------------------------------------------------------------


class InfluxQueryError(RuntimeError):
    """An InfluxQL query failed (HTTP error or an ``error`` in the answer)."""


class Influx1(ServerProcess):
    """A real InfluxDB 1.x (Debian ``influxdb`` 1.6.7) with a generated config.

    Write API: ``url + /write?db=...``; InfluxQL: :meth:`query`. With ``auth=True`` the HTTP
    API requires credentials; the admin user :attr:`admin_user` / :attr:`admin_password` is
    created right after the first start (InfluxDB allows creating the first admin without
    credentials) and every helper here authenticates as that user.
    """

    name = "influxd"
    admin_user = "admin"
    admin_password = "admin-secret"

    def __init__(
        self,
        tmp_dir: str | os.PathLike[str],
        port: int | None = None,
        auth: bool = False,
        *,
        max_body_size: int = 25_000_000,
    ) -> None:
        super().__init__(tmp_dir, port)
        self.auth = auth
        self.max_body_size = max_body_size
        self.rpc_port = free_port()
        self.conf_path = self.tmp_dir / "influxdb.conf"
        self._admin_created = False

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def prepare(self) -> None:
        d = self.tmp_dir
        self.conf_path.write_text(
            f"""\
reporting-disabled = true
bind-address = "{HOST}:{self.rpc_port}"

[meta]
  dir = "{d / "meta"}"
  logging-enabled = true

[data]
  dir = "{d / "data"}"
  wal-dir = "{d / "wal"}"
  wal-fsync-delay = "0s"
  index-version = "inmem"
  query-log-enabled = true

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{self.port}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = true
  pprof-enabled = false
  max-body-size = {self.max_body_size}

[logging]
  format = "auto"
  level = "info"
  suppress-logo = true
"""
        )

    def command(self) -> list[str]:
        return [
            shutil.which("influxd") or "/usr/bin/influxd",
            "run",
            "-config",
            str(self.conf_path),
        ]

    def is_ready(self) -> bool:
        try:
            status, _ = http_request("GET", self.url + "/ping", timeout=1.0)
        except OSError:
            return False
        return status == 204

    def after_ready(self) -> None:
        if self.auth and not self._admin_created:
            pw = self.admin_password.replace("'", "\\'")
            self._query(f"CREATE USER {self.admin_user} WITH PASSWORD '{pw}' WITH ALL PRIVILEGES")
            self._admin_created = True

    def _auth_params(self) -> dict[str, str]:
        if self.auth and self._admin_created:
            return {"u": self.admin_user, "p": self.admin_password}
        return {}

    def _query(self, q: str, db: str | None = None, epoch: str | None = "ns") -> dict[str, Any]:
        params: dict[str, str] = {"q": q, **self._auth_params()}
        if db is not None:
            params["db"] = db
        if epoch is not None:
            params["epoch"] = epoch
        # 1.x wants POST for everything that changes state (CREATE, DROP, ...).
        method = "GET" if q.lstrip().upper().startswith(("SELECT", "SHOW")) else "POST"
        url = f"{self.url}/query?{urllib.parse.urlencode(params)}"
        status, body = http_request(method, url)
        try:
            answer: dict[str, Any] = json.loads(body or b"{}")
        except ValueError:
            answer = {"error": body.decode(errors="replace")}
        errors = [answer["error"]] if "error" in answer else []
        errors += [r["error"] for r in answer.get("results", []) if "error" in r]
        if status != 200 or errors:
            raise InfluxQueryError(f"InfluxQL {q!r} -> HTTP {status}: {errors or body!r}")
        return answer

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """Run InfluxQL (GET /query for SELECT/SHOW, POST otherwise), timestamps in ns.

        Returns the decoded JSON answer; raises :class:`InfluxQueryError` on any error.
        """
        return self._query(q, db)

    def create_database(self, name: str) -> None:
        self._query(f'CREATE DATABASE "{name}"')

    def write_lines(self, db: str, lines: str | Sequence[str], precision: str = "ns") -> None:
        """POST line protocol to /write; raise unless 204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        params = {"db": db, "precision": precision, **self._auth_params()}
        status, text = http_request(
            "POST", f"{self.url}/write?{urllib.parse.urlencode(params)}", body.encode()
        )
        if status != 204:
            raise RuntimeError(f"InfluxDB write answered {status}: {text!r}")

    def points(self, db: str, measurement: str) -> list[dict[str, Any]]:
        """All points of a measurement as dicts (``time`` in ns, tags and fields as keys)."""
        name = measurement.replace("\\", "\\\\").replace('"', '\\"')
        answer = self._query(f'SELECT * FROM "{name}"', db)
        out: list[dict[str, Any]] = []
        for result in answer.get("results", []):
            for series in result.get("series", []):
                cols = series["columns"]
                out.extend(dict(zip(cols, row, strict=True)) for row in series.get("values", []))
        return out


# --------------------------------------------------------------------------------------------
# TCP fault proxy
# --------------------------------------------------------------------------------------------


def _set_linger0(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _abort(writer: asyncio.StreamWriter | None, rst: bool = True) -> None:
    if writer is None:
        return
    if rst:
        _set_linger0(writer)
        writer.transport.abort()
    else:
        writer.close()


class _ProxyConn:
    def __init__(
        self,
        proxy: TcpProxy,
        c_reader: asyncio.StreamReader,
        c_writer: asyncio.StreamWriter,
    ) -> None:
        self.proxy = proxy
        self.c_reader = c_reader
        self.c_writer = c_writer
        self.u_reader: asyncio.StreamReader | None = None
        self.u_writer: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self._connect_lock = asyncio.Lock()
        self.closed = False

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def ensure_upstream(self) -> bool:
        async with self._connect_lock:
            if self.u_writer is not None:
                return True
            try:
                r, w = await asyncio.open_connection(
                    self.proxy.upstream_host, self.proxy.upstream_port
                )
            except OSError:
                # Upstream down: the client sees a reset, like a router would pass on.
                self.close(rst=True)
                return False
            self.u_reader, self.u_writer = r, w
            self._spawn(self.pump_down())
            return True

    async def run(self) -> None:
        if self.proxy.mode == "refuse":
            self.close(rst=True)
            return
        if self.proxy.mode != "blackhole" and not await self.ensure_upstream():
            return
        await self.pump_up()

    async def pump_up(self) -> None:
        """client -> upstream."""
        try:
            while not self.closed:
                data = await self.c_reader.read(65536)
                if not data:
                    break
                mode, delay = self.proxy.mode, self.proxy.delay_s
                if mode == "blackhole":
                    continue
                if mode == "delay":
                    await asyncio.sleep(delay)
                if not await self.ensure_upstream():
                    return
                assert self.u_writer is not None
                self.proxy.bytes_up += len(data)
                self.u_writer.write(data)
                await self.u_writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            self.close(rst=True)
            return
        # Client closed its side.
        if self.proxy.mode == "blackhole" or self.u_writer is None:
            self.close(rst=False)
        else:
            with contextlib.suppress(OSError, RuntimeError):
                self.u_writer.write_eof()

    async def pump_down(self) -> None:
        """upstream -> client."""
        assert self.u_reader is not None
        try:
            while not self.closed:
                data = await self.u_reader.read(65536)
                if not data:
                    break
                mode, delay = self.proxy.mode, self.proxy.delay_s
                if mode == "blackhole":
                    continue
                if mode == "drop_responses":
                    self.proxy.responses_dropped += 1
                    self.close(rst=self.proxy.drop_rst)
                    return
                if mode == "delay":
                    await asyncio.sleep(delay)
                self.proxy.bytes_down += len(data)
                self.c_writer.write(data)
                await self.c_writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            self.close(rst=True)
            return
        if self.proxy.mode == "blackhole":
            # Upstream gave up (e.g. keepalive timeout) while we swallow everything: the client
            # must not notice; forget the upstream, a later forward connects afresh.
            _abort(self.u_writer, rst=False)
            self.u_reader = self.u_writer = None
            return
        self.close(rst=False)  # upstream closed: pass the close on

    def close(self, rst: bool) -> None:
        if self.closed:
            return
        self.closed = True
        _abort(self.c_writer, rst)
        _abort(self.u_writer, rst)
        for t in list(self.tasks):
            if t is not asyncio.current_task():
                t.cancel()
        self.proxy._conns.discard(self)


class TcpProxy:
    """A fault-injecting TCP proxy on a free 127.0.0.1 port in front of ``upstream``.

    Runs in a daemon thread with its own asyncio loop, so it serves an in-process gateway (even
    while the test thread blocks) and gateway subprocesses alike. Modes switch at any time
    from the test thread and apply to every chunk read from then on, on existing and new
    connections:

    * :meth:`pass_through` - forward both ways (default).
    * :meth:`delay` - forward each chunk after ``seconds`` (order kept).
    * :meth:`blackhole` - accept and read, forward nothing, never close (no RST, no FIN): the
      peer only notices through its own timeouts / keepalives. Connections accepted in this
      mode connect upstream only when something is forwarded later.
    * :meth:`cut` - abort all current connections with RST (SO_LINGER 0), both sides; the mode
      stays as it was for new connections.
    * :meth:`refuse` - new connections are accepted and closed at once with RST (the client
      sees ECONNRESET, at connect or at its first read/write).
    * :meth:`drop_responses` - forward client->server, discard server->client and close the
      client connection as soon as the upstream answers: "response lost after the request
      was forwarded" (the server *did* process the request).
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = HOST
        self.mode = "pass"
        self.delay_s = 0.0
        self.drop_rst = False
        self.connections_seen = 0
        self.responses_dropped = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._conns: set[_ProxyConn] = set()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"TcpProxy:{self.port}", daemon=True
        )
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("TcpProxy thread did not start")
        self._closed = False

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server = await asyncio.start_server(self._handle, sock=self._sock)

        self._loop.run_until_complete(boot())
        started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_seen += 1
        conn = _ProxyConn(self, reader, writer)
        self._conns.add(conn)
        try:
            await conn.run()
        except asyncio.CancelledError:
            conn.close(rst=True)
            raise

    def _call(self, fn: Callable[[], None]) -> None:
        async def wrapper() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(10)

    # -- modes ---------------------------------------------------------------------------------
    def pass_through(self) -> None:
        self.mode = "pass"

    def delay(self, seconds: float) -> None:
        self.delay_s = seconds
        self.mode = "delay"

    def blackhole(self) -> None:
        self.mode = "blackhole"

    def refuse(self) -> None:
        self.mode = "refuse"

    def drop_responses(self, rst: bool = False) -> None:
        """See class doc; ``rst=True`` closes the client side with RST instead of FIN."""
        self.drop_rst = rst
        self.mode = "drop_responses"

    def cut(self) -> None:
        """RST every current connection (client and upstream side); returns when done."""

        def do() -> None:
            for conn in list(self._conns):
                conn.close(rst=True)

        self._call(do)

    # -- info ----------------------------------------------------------------------------------
    @property
    def active_connections(self) -> int:
        return len(self._conns)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` - handy when the upstream is an HTTP server."""
        return f"http://{HOST}:{self.port}"

    def wait_for_connections(self, n: int, timeout: float = 10.0) -> None:
        """Block until at least ``n`` connections were accepted in total."""
        wait_until(lambda: self.connections_seen >= n, timeout, what=f"{n} proxy connections")

    def close(self) -> None:
        """Stop listening, RST all connections, stop the thread."""
        if self._closed:
            return
        self._closed = True

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.close(rst=True)
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in others:
                t.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<TcpProxy 127.0.0.1:{self.port} -> {self.upstream_host}:{self.upstream_port}"
            f" mode={self.mode}>"
        )


# --------------------------------------------------------------------------------------------
# FAKE InfluxDB write endpoint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One scripted answer of :class:`FakeInfluxServer`.

    ``written``: the lines the fake counts as stored by this request. None means "all lines if
    status is 2xx, none otherwise"; give it for partial writes (422, v1 400 partial write),
    where a real server stores the valid points and rejects the rest.
    """

    status: int = 204
    body: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    written: Sequence[str] | None = None


AnswerFn = Callable[[list[str]], Answer]


@dataclass
class RecordedRequest:
    """A request the fake received; ``status`` is what it answered (None: not answered yet)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    lines: list[str]
    status: int | None = None
    written: list[str] = field(default_factory=list)


class FakeInfluxServer:
    """A FAKE InfluxDB HTTP write endpoint - not a real server.

    Used only for answers that real servers won't produce on demand: 429/503 with
    Retry-After, 400 parse rejects, 401/403/404, 413, 422 partial writes, slow answers.
    POSTs to ``/api/v2/write`` (v2), ``/write`` (v1) and ``/api/v3/write_lp`` (v3, which
    answers 204 like InfluxDB 3) get the scripted :class:`Answer` (or the result of a
    scripted callable ``(lines) -> Answer``) in order; after the script is used up they get
    :attr:`default` (204). ``GET /ping`` answers 204, ``GET /health``
    200; anything else 404. Every request is recorded in :attr:`requests` with its body
    gunzipped (``Content-Encoding: gzip``) and split into lines.
    """

    def __init__(self) -> None:
        self.default: Answer | AnswerFn = Answer()
        self.requests: list[RecordedRequest] = []
        self._script: list[Answer | AnswerFn] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, 0))
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._closed = False
        started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"FakeInflux:{self.port}", daemon=True
        )
        self._thread.start()
        if not started.wait(10) or self._error is not None:
            raise RuntimeError(f"FakeInfluxServer did not start: {self._error!r}")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            app = web.Application(client_max_size=1 << 30)
            app.router.add_post("/api/v2/write", self._write)
            app.router.add_post("/write", self._write)
            app.router.add_post("/api/v3/write_lp", self._write)
            app.router.add_get("/ping", self._ping)
            app.router.add_get("/health", self._health)
            app.router.add_route("*", "/{tail:.*}", self._other)
            runner = web.AppRunner(app, auto_decompress=False, access_log=None)
            await runner.setup()
            await web.SockSite(runner, self._sock).start()
            self._runner = runner

        try:
            self._loop.run_until_complete(boot())
        except BaseException as exc:
            self._error = exc
            started.set()
            return
        started.set()
        self._loop.run_forever()
        if self._runner is not None:
            self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    # -- scripting -----------------------------------------------------------------------------
    def script(self, answers: Sequence[Answer | AnswerFn]) -> None:
        """Replace the queue of answers for the next write requests."""
        with self._lock:
            self._script = list(answers)

    def _next_answer(self, lines: list[str]) -> Answer:
        with self._lock:
            item = self._script.pop(0) if self._script else self.default
        return item(lines) if callable(item) else item

    # -- handlers ------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body = raw
        if request.headers.get("Content-Encoding", "").lower() == "gzip" and raw:
            body = gzip.decompress(raw)
        lines = [ln for ln in body.decode("utf-8", errors="replace").split("\n") if ln.strip()]
        rec = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=dict(request.headers),
            body=body,
            lines=lines,
        )
        with self._lock:
            self.requests.append(rec)
        return rec

    async def _write(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        answer = self._next_answer(rec.lines)
        # Decided now, as a real server would have stored the data even if the answer is lost.
        if answer.written is not None:
            rec.written = list(answer.written)
        elif 200 <= answer.status < 300:
            rec.written = list(rec.lines)
        rec.status = answer.status
        if answer.delay:
            await asyncio.sleep(answer.delay)
        headers = dict(answer.headers)
        if answer.body and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json; charset=utf-8"
        return web.Response(status=answer.status, body=answer.body.encode(), headers=headers)

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.Response(status=204, headers={"X-Influxdb-Version": "fake"})

    async def _health(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        return web.json_response({"name": "influxdb", "status": "pass", "message": "fake"})

    async def _other(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        rec.status = 404
        return web.json_response({"code": "not found", "message": "fake: no such path"}, status=404)

    # -- results -------------------------------------------------------------------------------
    def write_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [
                r
                for r in self.requests
                if r.method == "POST" and r.path.endswith(("write", "/write_lp"))
            ]

    def accepted_lines(self) -> list[str]:
        """Lines the fake counts as stored: all lines of 2xx answers plus ``Answer.written``."""
        with self._lock:
            return [ln for r in self.requests for ln in r.written]

    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least ``n`` write requests were answered; return them."""

        def done() -> bool:
            return sum(r.status is not None for r in self.write_requests()) >= n

        wait_until(done, timeout, what=f"{n} write requests at the fake InfluxDB")
        return self.write_requests()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# factory protocols (for typing the conftest fixtures)
# --------------------------------------------------------------------------------------------


class MosquittoFactory(Protocol):
    def __call__(
        self,
        persistence: bool = False,
        extra_conf: str = "",
        *,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        start: bool = True,
    ) -> Mosquitto: ...


class VictoriaFactory(Protocol):
    def __call__(self, *, port: int | None = None, start: bool = True) -> VictoriaMetrics: ...


class Influx1Factory(Protocol):
    def __call__(
        self, auth: bool = False, *, port: int | None = None, start: bool = True
    ) -> Influx1: ...


class TcpProxyFactory(Protocol):
    def __call__(self, upstream_host: str, upstream_port: int) -> TcpProxy: ...


class SerialPtyFactory(Protocol):
    def __call__(self) -> SerialPty: ...


def iter_lines(requests: Sequence[RecordedRequest]) -> Iterator[str]:
    """All body lines of the given recorded requests, in order."""
    for r in requests:
        yield from r.lines
