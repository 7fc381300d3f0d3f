"""FAKE InfluxDB 2.x and 3 query endpoints, for the Flux and ``/api/v3/query_influxql``
paths of ``sensor-gateway query``.

No InfluxDB 2.x or 3 server can run on this machine (neither is packaged for it), so
these are stand-ins that answer *recorded* responses: each query text the test expects
is mapped to the answer the real server gives for it (Flux annotated CSV as InfluxDB 2.x
writes it; the JSON rows InfluxDB 3 Core writes). A query with no recording gets a 400,
so a test also checks the exact text the gateway sent. Everything is recorded in
:attr:`requests`. Only ``127.0.0.1``.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"

__all__ = ["FakeInfluxDB2", "FakeInfluxDB3", "Recorded", "Sent"]


@dataclass(frozen=True)
class Recorded:
    """One recorded answer: status, content type, body."""

    status: int = 200
    body: str = ""
    content_type: str = "application/json"


@dataclass
class Sent:
    """One request the fake received."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes
    query: str = ""
    """The query text: Flux (``query`` of the JSON body) or InfluxQL (``q``)."""


@dataclass
class _Fake:
    answers: dict[str, Recorded] = field(default_factory=dict)
    """Query text → the recorded answer to it."""
    script: list[Recorded] = field(default_factory=list)
    """Answers given first, in order, whatever the query (errors)."""
    requests: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Server:
    """The HTTP plumbing shared by both fakes: a thread serving on a free port."""

    query_path = ""

    def __init__(self) -> None:
        self.state = _Fake()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                sent = Sent(
                    self.command,
                    url.path,
                    dict(urllib.parse.parse_qsl(url.query)),
                    dict(self.headers.items()),
                    self.rfile.read(length),
                )
                answer = fake.answer(sent)
                with fake.state.lock:
                    fake.state.requests.append(sent)
                body = answer.body.encode()
                self.send_response(answer.status)
                if answer.status != 204:
                    self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def requests(self) -> list[Sent]:
        with self.state.lock:
            return list(self.state.requests)

    def queries(self) -> list[Sent]:
        """The requests to the query endpoint, in order."""
        return [r for r in self.requests if r.path == self.query_path]

    def record(self, answers: Mapping[str, Recorded]) -> None:
        """Add recorded answers, keyed by the exact query text."""
        with self.state.lock:
            self.state.answers.update(answers)

    def script(self, *answers: Recorded) -> None:
        """Answer the next queries with these, in order, whatever they ask."""
        with self.state.lock:
            self.state.script = list(answers)

    def answer(self, sent: Sent) -> Recorded:
        if sent.path == "/ping":
            return Recorded(204)
        if sent.path != self.query_path:
            return Recorded(404, json.dumps({"code": "not found", "message": "fake: no such path"}))
        sent.query = self.query_text(sent)
        with self.state.lock:
            if self.state.script:
                return self.state.script.pop(0)
            found = self.state.answers.get(sent.query)
        return found if found is not None else self.unknown(sent.query)

    def query_text(self, sent: Sent) -> str:
        raise NotImplementedError

    def unknown(self, query: str) -> Recorded:
        raise NotImplementedError

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
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


class FakeInfluxDB2(_Server):
    """A stand-in for InfluxDB 2.x's Flux endpoint ``POST /api/v2/query`` answering
    recorded responses, because no real 2.x server can run on this machine.

    The Flux text is the ``query`` of the JSON body influxdb-client sends; a recorded
    answer is annotated CSV (``#datatype``, ``#group``, ``#default`` rows, then a header
    and the records; tables of another shape after a blank line), as InfluxDB 2.x writes
    it. An unrecorded query gets the 400 InfluxDB gives a Flux it cannot compile.
    """

    query_path = "/api/v2/query"

    def query_text(self, sent: Sent) -> str:
        return str(json.loads(sent.body)["query"])

    def unknown(self, query: str) -> Recorded:
        message = "compilation failed: fake: no recorded answer for this query"
        return Recorded(400, json.dumps({"code": "invalid", "message": message}))


def flux_csv(*tables: str) -> Recorded:
    """A Flux answer: annotated CSV tables, as InfluxDB 2.x separates them (``\\r\\n``
    line ends, a blank line between tables of different columns)."""
    text = "\r\n\r\n".join(t.strip("\n").replace("\n", "\r\n") for t in tables)
    return Recorded(200, text + "\r\n\r\n", "text/csv; charset=utf-8")


class FakeInfluxDB3(_Server):
    """A stand-in for InfluxDB 3 Core's ``GET /api/v3/query_influxql`` answering recorded
    responses, because no real InfluxDB 3 server can run on this machine.

    The InfluxQL text is the ``q`` parameter (one statement per request, as Core
    requires); a recorded answer with ``format=json`` is what Core writes: a JSON array
    of row objects with ``iox::measurement``, ``time`` (RFC 3339 without a zone, UTC, a
    fraction only when not zero) and one key per non-null tag or field. An unrecorded
    query gets a 400.
    """

    query_path = "/api/v3/query_influxql"

    def query_text(self, sent: Sent) -> str:
        return sent.params.get("q", "")

    def unknown(self, query: str) -> Recorded:
        return Recorded(400, f"error in InfluxQL statement: fake: no recorded answer for {query!r}")


def v3_rows(rows: list[dict[str, Any]]) -> Recorded:
    """An InfluxDB 3 ``format=json`` answer: the rows as a JSON array."""
    return Recorded(200, json.dumps(rows, separators=(",", ":")))
