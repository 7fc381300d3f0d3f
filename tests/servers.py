"""Real servers and network/serial fault tools for the test suite.

Everything here is plain, blocking Python that tests drive from the test thread:

* :class:`Mosquitto`, :class:`VictoriaMetrics` and :class:`Influx1` start the *real* Debian
  packaged servers as subprocesses on free ``127.0.0.1`` ports with generated configs and temp
  data dirs; they can be stopped, killed (``kill -9``) and restarted on the same port and data.
* :class:`TcpProxy` sits between the gateway and a server and can delay, black-hole, cut,
  refuse, or drop responses; it runs in its own thread with its own event loop, so it serves an
  in-process gateway and a gateway subprocess alike.
* :class:`SerialPty` is a pseudo-terminal pair: the gateway opens :attr:`SerialPty.path` with
  pyserial, the test (or a device simulator) talks on the master side.
* :class:`PluggableSerialPty` is a :class:`SerialPty` behind a stable symlink that can be
  unplugged and plugged in again (a fresh pty each time), like a USB adapter under
  ``/dev/serial/by-id/``.
* :class:`FakeInfluxServer` is a FAKE InfluxDB write endpoint, for answers that real servers
  will not give on demand (429/503 with Retry-After, 400, 401, 404, 413, 422 ...).

Async tests that run the gateway *in-process* must not call the blocking helpers directly from
the event loop (the gateway would stall while the helper polls); wrap them, e.g.
``await asyncio.to_thread(victoria.wait_for_points, sel, 10)``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gzip
import json
import os
import queue
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import tty
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Protocol, Self, TypeVar

from aiohttp import web

HOST = "127.0.0.1"
_T = TypeVar("_T")
READY_TIMEOUT = 15.0
_POLL = 0.02

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
# small helpers
# --------------------------------------------------------------------------------------------

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    Ports handed out earlier by this process are never handed out again, so two servers set up
    one after the other (e.g. InfluxDB's HTTP and RPC ports) can't be given the same port.
    """
    with _handed_out_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port: int = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free port")


def port_accepts(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """True if a TCP connection to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = _POLL, what: str = ""
) -> None:
    """Poll ``predicate`` until it returns true; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what or predicate}")
        time.sleep(interval)


def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """Minimal blocking HTTP client: returns (status, body) and never raises on HTTP errors."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "<no log>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# server subprocesses
# --------------------------------------------------------------------------------------------

_live: dict[int, subprocess.Popen[bytes]] = {}
_live_lock = threading.Lock()


def _kill_leftovers() -> None:
    """atexit safety net: no server outlives the test process (stop by PID, TERM then KILL)."""
    with _live_lock:
        procs = list(_live.values())
        _live.clear()
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 3.0
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


atexit.register(_kill_leftovers)

_SETPRIV = shutil.which("setpriv")


class _Spawner:
    """Starts every server from one long-lived daemon thread, wrapped in
    ``setpriv --pdeathsig KILL`` (util-linux; it execs, so the PID is the server's).

    The kernel sends the parent-death signal when the *thread* that forked exits, so forking
    from a short-lived thread (``asyncio.to_thread(server.restart)``) would kill the server
    when that thread ends; this thread lives as long as the test process. Together with the
    atexit hook this leaves no orphan even when pytest itself is SIGTERMed or SIGKILLed.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while True:
            fn, fut = self._jobs.get()
            try:
                fut.set_result(fn())
            except BaseException as exc:
                fut.set_exception(exc)

    def run(self, fn: Callable[[], _T]) -> _T:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="spawner", daemon=True)
                self._thread.start()
        fut: Future[_T] = Future()
        self._jobs.put((fn, fut))
        return fut.result()


_spawner = _Spawner()


def _spawn(cmd: list[str], log: IO[bytes], cwd: Path) -> subprocess.Popen[bytes]:
    if _SETPRIV is not None:
        cmd = [_SETPRIV, "--pdeathsig", "KILL", "--", *cmd]

    def popen() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # signals aimed at a test's process group don't reach it
        )
        with _live_lock:
            _live[proc.pid] = proc
        return proc

    return _spawner.run(popen)


class ServerStartError(RuntimeError):
    """A server did not become ready in time or exited during start-up (message has log tail)."""


class ServerProcess:
    """Base for a server run as a subprocess on 127.0.0.1:``port`` in ``tmp_dir``.

    Subclasses provide :meth:`command`, optionally :meth:`prepare` (write config files, called
    before every start), :meth:`is_ready` (beyond "the port accepts") and :meth:`after_ready`.
    stdout and stderr go to :attr:`log_path`. The process is always addressed by its PID (it
    gets its own session, so signals aimed at a test's process group never reach it). No
    orphans: every process is registered for an atexit stop, and gets SIGKILL from the kernel
    if the test process dies without running atexit (see ``_Spawner``).
    """

    name: ClassVar[str] = "server"
    ready_timeout: float = READY_TIMEOUT
    stop_timeout: float = 10.0

    def __init__(self, tmp_dir: str | os.PathLike[str], port: int | None = None) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.host: str = HOST
        self.port: int = port if port is not None else free_port()
        self.log_path: Path = self.tmp_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- to override ---------------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write config files etc.; called before each start."""

    def is_ready(self) -> bool:
        """Extra readiness check, called once the TCP port accepts connections."""
        return True

    def after_ready(self) -> None:
        """Called once the server is ready (e.g. create users)."""

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def start(self) -> Self:
        """Start the server and block until it is ready (or raise :class:`ServerStartError`)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.prepare()
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            log.flush()
            proc = _spawn(cmd, log, self.tmp_dir)
        self._proc = proc
        self.starts += 1
        try:
            self._wait_ready(proc)
            self.after_ready()
        except BaseException:
            self._terminate(proc, self.stop_timeout)
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise ServerStartError(
                    f"{self.name} exited with code {code} during start-up on port {self.port};"
                    f" log {self.log_path}:\n{self.log_tail()}"
                )
            if port_accepts(self.port) and self.is_ready() and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.name} not ready on 127.0.0.1:{self.port} after"
                    f" {self.ready_timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(_POLL)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        with _live_lock:
            _live.pop(proc.pid, None)
        return int(proc.returncode)

    def stop(self, timeout: float | None = None) -> int | None:
        """Graceful stop: SIGTERM, wait, SIGKILL if it takes longer than ``timeout``.

        Returns the exit code (None if it was never started). Idempotent.
        """
        if self._proc is None:
            return None
        return self._terminate(self._proc, self.stop_timeout if timeout is None else timeout)

    def kill(self) -> int | None:
        """SIGKILL: simulates a crash / power loss of the server. Returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        with _live_lock:
            _live.pop(proc.pid, None)
        return int(proc.returncode)

    def restart(self) -> Self:
        """Graceful stop (if running) and start again on the same port with the same data."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self._proc.pid}" if self.running and self._proc else "stopped"
        return f"<{type(self).__name__} 127.0.0.1:{self.port} {state} dir={self.tmp_dir}>"


# --------------------------------------------------------------------------------------------
# mosquitto
# --------------------------------------------------------------------------------------------


class Mosquitto(ServerProcess):
    """A real mosquitto broker (Debian ``mosquitto``, 2.0.x) with a generated config.

    ``persistence=True`` stores the in-memory database in ``tmp_dir/`` and autosaves every
    ``autosave_interval`` seconds (mosquitto's default is 1800 s and on exit), so a
    :meth:`restart` keeps sessions/queued messages and a :meth:`kill` loses at most the last
    ``autosave_interval`` seconds. With ``username``/``password`` anonymous access is off and a
    password file is generated with ``mosquitto_passwd``. ``extra_conf`` is appended verbatim
    (e.g. ``"max_queued_messages 10\\n"``).
    """

    name = "mosquitto"

    def __init__(
        self,
        tmp_dir: str | os.PathLike[str],
        port: int | None = None,
        persistence: bool = False,
        extra_conf: str = "",
        *,
        username: str | None = None,
        password: str | None = None,
        autosave_interval: int = 1,
    ) -> None:
        super().__init__(tmp_dir, port)
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.username = username
        self.password = password
        self.autosave_interval = autosave_interval
        self.conf_path = self.tmp_dir / "mosquitto.conf"
        self.passwd_path = self.tmp_dir / "passwd"
        self.db_path = self.tmp_dir / "mosquitto.db"

    def prepare(self) -> None:
        lines = [
            f"listener {self.port} {HOST}",
            f"log_dest file {self.log_path}",
            "log_type all",
            "connection_messages true",
            "log_timestamp true",
        ]
        if os.geteuid() == 0:
            # 2.0 drops root privileges to user "mosquitto", which can't use our 0700 tmp dirs.
            lines.append("user root")
        if self.username is not None and self.password is not None:
            exe = shutil.which("mosquitto_passwd")
            if exe is None:
                raise RuntimeError("mosquitto_passwd not found; it ships with mosquitto")
            subprocess.run(
                [exe, "-b", "-c", str(self.passwd_path), self.username, self.password],
                check=True,
                capture_output=True,
            )
            lines += ["allow_anonymous false", f"password_file {self.passwd_path}"]
        else:
            lines.append("allow_anonymous true")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.tmp_dir}/",
                "persistence_file mosquitto.db",
                f"autosave_interval {self.autosave_interval}",
            ]
        else:
            lines.append("persistence false")
        text = "\n".join(lines) + "\n"
        if self.extra_conf:
            text += self.extra_conf.rstrip("\n") + "\n"
        self.conf_path.write_text(text)

    def command(self) -> list[str]:
        return [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(self.conf_path)]

    def wait_for_autosave(self, timeout: float = 10.0) -> None:
        """Block until mosquitto has written its persistence file again after this call.

        After this, a :meth:`kill` keeps everything the broker knew at the call (sessions,
        subscriptions, queued messages). Mosquitto 2.0 saves when ``last + interval < now``
        in whole seconds, so with ``autosave_interval=1`` this takes up to ~2 s.
        """
        if not self.persistence:
            raise RuntimeError("persistence is off")

        def mtime() -> int:
            try:
                return self.db_path.stat().st_mtime_ns
            except FileNotFoundError:
                return -1

        before = mtime()
        wait_until(lambda: mtime() != before, timeout, what="mosquitto autosave")


# --------------------------------------------------------------------------------------------
# VictoriaMetrics
# --------------------------------------------------------------------------------------------

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


class VictoriaMetrics(ServerProcess):
    """A real VictoriaMetrics (Debian ``victoria-metrics`` 1.79) as the InfluxDB v2 write target.

    Point the gateway's influxdb-client at :attr:`url` (any token/org/bucket is accepted); it
    writes to ``url + /api/v2/write``. Read back with :meth:`export` / :meth:`series_points` /
    :meth:`wait_for_points`.

    How VM stores line protocol (checked against this version by writing
    ``m,device=a x=1,y=2 1700000000000000000`` to ``/api/v2/write``):

    * one series per *field*, named ``<measurement>_<field>``: ``m_x{device="a"}`` = 1 and
      ``m_y{device="a"}`` = 2, both at timestamp 1700000000000 (ms). Tags become labels,
      escaped characters come back unescaped (``sp\\ x,t\\=k=v\\,w f\\ g=1`` gives
      ``__name__="sp x_f g"``, label ``"t=k": "v,w"``). A field named ``value`` is still suffixed
      (``sv_value``).
    * ``/api/v2/write`` adds **no** label for org/bucket; the v1 ``/write?db=mydb`` endpoint
      adds the label ``db="mydb"``.
    * timestamps are kept in ms (``-influxTrimTimestamp=1ms``): points less than 1 ms apart in
      one series collapse into one (dedup, ``-dedup.minScrapeInterval=1ms``), just as InfluxDB
      merges points with the same series and timestamp. A re-sent point with the same value is
      therefore stored once. If the *values* differ, a later write generally wins, but two
      different values for the same ms *in one request* keep an arbitrary one.
    * integers, floats and booleans (true=1) are stored as floats; a string field is stored
      as 0 (``m2_s`` = 0); NaN is not exported.
    * VM answers 204 even to unparseable lines: it skips them and only logs an error. Use
      :class:`FakeInfluxServer` for 400/422 answers.
    """

    name = "victoria-metrics"

    def __init__(self, tmp_dir: str | os.PathLike[str], port: int | None = None) -> None:
        super().__init__(tmp_dir, port)
        self.data_dir = self.tmp_dir / "vmdata"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def command(self) -> list[str]:
        return [
            shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics",
            f"-httpListenAddr={HOST}:{self.port}",
            f"-storageDataPath={self.data_dir}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-dedup.minScrapeInterval=1ms",
            "-influxTrimTimestamp=1ms",
        ]

    def is_ready(self) -> bool:
        try:
            status, body = http_request("GET", self.url + "/health", timeout=1.0)
        except OSError:
            return False
        return status == 200 and body.strip() == b"OK"

    def write_lines(self, lines: str | Sequence[str]) -> None:
        """POST line protocol (ns timestamps) to /api/v2/write; raise unless 204."""
        body = lines if isinstance(lines, str) else "\n".join(lines)
        status, text = http_request(
            "POST", self.url + "/api/v2/write?org=test&bucket=test", body.encode()
        )
        if status != 204:
            raise RuntimeError(f"VictoriaMetrics write answered {status}: {text!r}")

    def force_flush(self) -> None:
        """Make everything written so far visible to queries (GET /internal/force_flush)."""
        status, text = http_request("GET", self.url + "/internal/force_flush")
        if status != 200:
            raise RuntimeError(f"force_flush answered {status}: {text!r}")

    def export(self, match: str) -> list[dict[str, Any]]:
        """GET /api/v1/export?match[]=``match``.

        ``match`` is a series selector, e.g. ``m_x``, ``{__name__=~"m_.+"}`` or
        ``{__name__=~"m_.+",device="a"}``. Each returned dict is one series:
        ``{"metric": {"__name__": ..., <labels>}, "values": [...], "timestamps": [ms...]}``.
        """
        q = urllib.parse.urlencode({"match[]": match})
        status, body = http_request("GET", f"{self.url}/api/v1/export?{q}")
        if status != 200:
            raise RuntimeError(f"export {match!r} answered {status}: {body!r}")
        return [json.loads(line) for line in body.decode().splitlines() if line.strip()]

    @staticmethod
    def measurement_selector(measurement: str) -> str:
        """Selector for all fields of a measurement (assumes [A-Za-z0-9_] names)."""
        return f'{{__name__=~"{measurement}_.+"}}'

    def series_points(self, name_regex: str) -> dict[SeriesKey, list[tuple[int, float]]]:
        """All points of series whose name fully matches ``name_regex`` (flushes first).

        Key: (metric name, frozenset of (label, value) without ``__name__``); value: sorted
        list of (timestamp ms, value).
        """
        self.force_flush()
        out: dict[SeriesKey, list[tuple[int, float]]] = {}
        for row in self.export(f'{{__name__=~"{name_regex}"}}'):
            metric = dict(row["metric"])
            name = str(metric.pop("__name__"))
            key: SeriesKey = (name, frozenset((str(k), str(v)) for k, v in metric.items()))
            pts = out.setdefault(key, [])
            pts.extend(zip(row["timestamps"], row["values"], strict=True))
        for pts in out.values():
            pts.sort()
        return out

    def count_points(self, match: str) -> int:
        return sum(len(row["values"]) for row in self.export(match))

    def wait_for_points(self, match: str, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Force-flush and poll until at least ``n`` points match; return the export."""
        deadline = time.monotonic() + timeout
        while True:
            self.force_flush()
            rows = self.export(match)
            got = sum(len(r["values"]) for r in rows)
            if got >= n:
                return rows
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"VictoriaMetrics: {got} of {n} points for {match!r} after {timeout:.1f}s"
                )
            time.sleep(0.05)


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
# serial pseudo-terminal
# --------------------------------------------------------------------------------------------


class SerialPty:
    """A pseudo-terminal standing in for a serial device.

    The gateway opens :attr:`path` (``/dev/pts/N``) with pyserial / pyserial-asyncio-fast
    exactly like a real port (``serial_asyncio_fast.open_serial_connection(url=path, ...)``);
    the test or a device simulator writes the device's bytes with :meth:`write` and reads what
    the gateway sent with :meth:`read_available`. The slave is put in raw mode (no echo, no
    CR/LF translation), so bytes pass unchanged. A pty ignores the baud rate: "wrong baud" can
    only be simulated by sending garbage. :meth:`close` (hang-up) is the unplug: the gateway's
    next read fails. The helper keeps its own slave fd open until then, so the master never
    sees EIO just because the gateway closed and reopened the port.
    """

    def __init__(self) -> None:
        self.master_fd, self._slave_fd = os.openpty()
        tty.setraw(self._slave_fd)
        os.set_blocking(self.master_fd, False)
        self.path: str = os.ttyname(self._slave_fd)
        self.closed = False

    def fileno(self) -> int:
        return self.master_fd

    def write(self, data: bytes, timeout: float = 5.0) -> None:
        """Write all of ``data`` to the master (the gateway reads it from :attr:`path`).

        Raises TimeoutError if the gateway doesn't read fast enough for ``timeout`` seconds.
        """
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        while view:
            try:
                n = os.write(self.master_fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pty {self.path}: {len(view)} bytes not written in time")
            select.select([], [self.master_fd], [], min(left, 0.05))

    def read_available(self, timeout: float = 0.5) -> bytes:
        """Wait up to ``timeout`` for data from the gateway, then return all there is (b"" if none)."""
        ready, _, _ = select.select([self.master_fd], [], [], timeout)
        if not ready:
            return b""
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(self.master_fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
            # give a writer in the middle of a burst a moment to finish
            if not select.select([self.master_fd], [], [], 0.01)[0]:
                break
        return b"".join(chunks)

    def read_until(self, marker: bytes, timeout: float = 5.0) -> bytes:
        """Read until ``marker`` was seen (returns everything read); TimeoutError otherwise."""
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pty {self.path}: {marker!r} not seen; got {buf[-200:]!r}")
            buf += self.read_available(min(left, 0.1))
        return buf

    def close(self) -> None:
        """Hang up (simulated unplug): close master and our slave fd. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for fd in (self.master_fd, self._slave_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PluggableSerialPty:
    """A serial device behind a stable path that can be unplugged and plugged in again.

    Like ``/dev/serial/by-id/...``: :attr:`path` is a symlink to the slave of the current
    :class:`SerialPty`. :meth:`unplug` removes the link, then hangs the pty up (the
    gateway's next read fails, and opening :attr:`path` fails with ENOENT until the next
    :meth:`plug`); :meth:`plug` makes a fresh pty and points the link at it. :attr:`pty` is
    the current pty, None while unplugged. Bytes written before the gateway has reopened
    the port are flushed by pyserial's open, as with a real device.
    """

    def __init__(self, path: str | os.PathLike[str], plugged: bool = True) -> None:
        self.path: str = os.fspath(path)
        self.pty: SerialPty | None = None
        self.plugs = 0
        if plugged:
            self.plug()

    def plug(self) -> SerialPty:
        """Plug in a new device (a fresh pty) behind :attr:`path`; returns its pty."""
        if self.pty is not None:
            raise RuntimeError(f"{self.path} is plugged in already")
        pty = SerialPty()
        tmp = f"{self.path}.new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(pty.path, tmp)
        os.replace(tmp, self.path)  # the link appears atomically, pointing at a live pty
        self.pty = pty
        self.plugs += 1
        return pty

    def unplug(self) -> None:
        """Pull the device: the path disappears, then the pty hangs up. Idempotent."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if self.pty is not None:
            self.pty.close()
            self.pty = None

    def close(self) -> None:
        self.unplug()

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
    POSTs to ``/api/v2/write`` (v2) and ``/write`` (v1) get the scripted :class:`Answer`
    (or the result of a scripted callable ``(lines) -> Answer``) in order; after the script
    is used up they get :attr:`default` (204). ``GET /ping`` answers 204, ``GET /health``
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
            return [r for r in self.requests if r.method == "POST" and r.path.endswith("write")]

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
