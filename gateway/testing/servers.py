"""Real servers for tests: mosquitto and VictoriaMetrics as subprocesses, and helpers.

:class:`Mosquitto` and :class:`VictoriaMetrics` start the *real* Debian-packaged servers
(``mosquitto``, ``victoria-metrics``) on free ``127.0.0.1`` ports with generated configs
and temp data dirs; they can be stopped, killed (``kill -9``) and restarted on the same
port and data. Everything here is plain, blocking Python driven from the test thread;
from an async test, wrap a blocking helper (``await asyncio.to_thread(vm.wait_for_points,
sel, 10)``) so an in-process gateway keeps running. No server outlives the test process.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self, TypeVar

__all__ = [
    "HOST",
    "READY_TIMEOUT",
    "Mosquitto",
    "SeriesKey",
    "ServerProcess",
    "ServerStartError",
    "VictoriaMetrics",
    "free_port",
    "http_request",
    "port_accepts",
    "wait_until",
]

HOST = "127.0.0.1"
_T = TypeVar("_T")
READY_TIMEOUT = 15.0
_POLL = 0.02


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

    Point the gateway's InfluxDB sink at :attr:`url` (any token/org/bucket is accepted); it
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
