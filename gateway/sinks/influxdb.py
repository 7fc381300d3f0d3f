"""The InfluxDB sink: writes spooled line protocol and classifies the server's answer.

Three wire APIs, all one aiohttp POST per batch:

* ``api = "v2"`` — ``POST /api/v2/write?org=…&bucket=…&precision=ns`` with ``Authorization:
  Token …`` (InfluxDB 2.x, 3.x, Cloud and compatible servers). Not through influxdb-client:
  importing any of it loads every service and model it has (~14 MB of RSS, see
  docs/architecture.md) for a request this module builds in a few lines.
* ``api = "v1"`` — ``POST /write?db=…`` (InfluxDB 1.x, which has no ``/api/v2/write``
  before 1.8).
* ``api = "v3"`` — ``POST /api/v3/write_lp?db=…&accept_partial=true`` (InfluxDB 3
  Core/Enterprise). Never ``no_sync``: it acknowledges before the server's WAL
  is persisted, and the spool forgets a batch once it is acknowledged. A 400 there is a
  partial write: the lines it lists are dead-lettered, the rest were stored.

This module only sends a batch and says what the answer means (:class:`Outcome`); the
policy (retry, backoff, Retry-After, bisecting, dead-lettering) is the delivery loop's.
Secrets (token, password) never appear in a log line, a reason, a URL or a repr.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import gzip
import html
import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
from pydantic import SecretStr

from gateway.config import InfluxSection
from gateway.sinks.base import Outcome, Sink, Verdict

log = structlog.get_logger("gateway.sink.influxdb")

# The server's message is cut to this many characters in reasons and logs.
MAX_MESSAGE_CHARS = 300
# gzip level for request bodies: zlib's default balance of speed and size. (gzip.compress()'s
# default, level 9, which influxdb-client uses, is ~6x slower for ~the same size.)
GZIP_LEVEL = 6
# Bodies above this size are compressed on a worker thread, not on the event loop.
GZIP_OFFLOAD_BYTES = 256 * 1024
# Secrets shorter than this are not scrubbed from server messages (it would mangle text).
MIN_SCRUB_LEN = 4

# Answers to 400/500 that are about the request, not about any line: bisecting them
# would dead-letter every point, so they are configuration errors instead.
_CONFIG_MESSAGES = (
    "retention policy not found",
    "database is required",
    "database name required",
    "please provide either orgid or org",
    "invalid precision",
)
# Texts by which InfluxDB's 400/422 answers name the data. Only these answers make the
# delivery loop bisect (and dead-letter what it isolates); any other 4xx is taken as "the
# request or the path is wrong" (a proxy's 405/415, an HTML 400…), which no line can fix.
_DATA_MESSAGES = (
    "unable to parse",  # 2.x (whole batch refused) and 1.x: "unable to parse '<line>': …"
    "partial write",  # 1.x 400 / 2.x 422 "partial write: … dropped=N"; 3.x (below)
    "field type conflict",  # 1.x answers from before the "partial write:" prefix
    "parsing failed for write_lp",  # 3.x with accept_partial=false
    "line protocol parsing error",  # 3.x (3.11+) with accept_partial=false
)
# InfluxDB 3's answer when the valid lines were written (accept_partial, the default).
_V3_PARTIAL = "partial write of line protocol occurred"
# InfluxDB 3 lists at most this many rejected lines; a batch may have had more.
V3_MAX_LISTED = 100
# What to fix when a 4xx refuses the request itself (not the data), by status.
_REFUSED_HINTS = {
    405: "that URL takes no POST: a proxy or another service answers there",
    407: "a proxy in between asks for its own credentials: let the gateway through or "
    "point the URL past it",
    411: "a proxy in between wants a Content-Length",
    414: "the URL is too long for the server or a proxy in between",
    415: "the server or a proxy in between does not take the body as sent",
    431: "the request headers are too large for the server or a proxy in between",
}
_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.IGNORECASE | re.DOTALL)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date form).

    Returns None when the header is absent, unparseable, or asks for no wait at all (the
    delivery loop then falls back to its own backoff rather than retrying at once).
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds) or seconds <= 0:
        return None
    return seconds


def safe_url(url: str) -> str:
    """``url`` without user info or query string, fit for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _server_message(body: bytes | str | None) -> tuple[str, Any]:
    """The server's error text and its decoded JSON document (None if not JSON)."""
    if body is None:
        return "", None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(doc, dict):
        # 2.x: {"code", "message"}; 1.x and 3.x: {"error"} (3.x adds "data").
        parts = [str(doc[key]) for key in ("message", "error") if doc.get(key)]
        if parts:
            return "; ".join(parts), doc
    return text, doc


def _is_html(text: str, headers: Mapping[str, str] | None) -> bool:
    """Whether an answer is an HTML page (a proxy's or web server's, never InfluxDB's)."""
    kind = next((v for k, v in (headers or {}).items() if k.lower() == "content-type"), "")
    return "html" in kind.lower() or text.startswith("<")


def _html_text(text: str) -> str:
    """The readable text of an HTML error page, on one line."""
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())


def _names_data(status: int, lowered: str, doc: Any) -> bool:
    """Whether a 400/422 answer is about the lines sent, so bisecting can isolate them."""
    if status == 422:
        return True  # 2.x: semantic rejects (type conflict, retention…); the rest written
    if any(text in lowered for text in _DATA_MESSAGES):
        return True
    # 3.x names the lines in "data": a list, or one object with accept_partial=false.
    data = doc.get("data") if isinstance(doc, dict) else None
    items = data if isinstance(data, list) else [data]
    return any(isinstance(i, dict) and ("line_number" in i or "original_line" in i) for i in items)


def _v3_rejected(doc: Any, n_lines: int) -> list[tuple[int, str]] | None:
    """The lines an InfluxDB 3 partial write refused, as (index, reason); None if unsure."""
    if not isinstance(doc, dict) or _V3_PARTIAL not in str(doc.get("error", "")).lower():
        return None
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        return None
    rejected: dict[int, str] = {}
    for item in data:
        if not isinstance(item, dict):
            return None
        number = item.get("line_number")
        # line_number is 1-based; anything we cannot map makes the loop bisect instead.
        if not isinstance(number, int) or isinstance(number, bool) or not 1 <= number <= n_lines:
            return None
        message = str(item.get("error_message", "rejected"))[:MAX_MESSAGE_CHARS]
        rejected.setdefault(number - 1, message)
    return sorted(rejected.items())


def _describe_error(err: BaseException, timeout: float) -> str:
    """A short ``category: detail`` text for a network-level failure."""
    if isinstance(err, TimeoutError):
        return f"timeout: no answer within {timeout:g} s"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return "disconnected: connection closed before the answer (reset or response lost)"
    if isinstance(err, aiohttp.ClientConnectorError):
        return f"connect: {err.os_error.strerror or err.os_error}"
    detail = str(err) or type(err).__name__
    if isinstance(err, aiohttp.ClientError | OSError):
        return f"connection: {type(err).__name__}: {detail}"
    return f"error: {type(err).__name__}: {detail}"


class InfluxSink(Sink):
    """Writes batches to InfluxDB through its v2, v1 or v3 write API (aiohttp)."""

    name = "influxdb"

    def __init__(self, section: InfluxSection) -> None:
        """Validate and keep settings; no I/O (the token file is read in :meth:`start`)."""
        self.section = section
        self.batch_size = section.batch_size
        self.flush_interval = section.flush_interval
        self.retry_max_interval = section.retry_max_interval
        self.retry_after_max = section.retry_after_max
        self._url = section.url.rstrip("/")
        self._where = safe_url(self._url)
        self._secret = SecretStr("")
        self._secret_error: str | None = None
        self._reload_secret = False
        self._started = False
        self._session: aiohttp.ClientSession | None = None
        self._auth: SecretStr | None = None
        self._log = log.bind(sink=self.name, server=self._where)

    def __repr__(self) -> str:
        return f"<InfluxSink {self.describe()}>"

    # --- lifecycle ------------------------------------------------------------------

    def describe(self) -> str:
        """Where and how this sink writes, for logs (never includes a secret)."""
        s = self.section
        if s.api == "v2":
            target = f'org "{s.org}", bucket "{s.bucket}"'
        elif s.api == "v3":
            target = f'database "{s.database}"'
        else:
            target = f'database "{s.database}"'
            if s.retention_policy:
                target += f', retention policy "{s.retention_policy}"'
        return f"InfluxDB {s.api} at {self._where} ({target}, {self._auth_kind()})"

    async def start(self) -> None:
        """Read the credentials and build the HTTP client; never contacts the server."""
        await self._load_secret()
        self._open_http()
        self._started = True
        self._log.info("influxdb sink ready", target=self.describe())

    async def close(self) -> None:
        """Close the HTTP client and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self._started = False

    def _open_http(self) -> None:
        """The HTTP session (kept across credential reloads) and the Authorization value."""
        s = self.section
        if self._session is None:
            # total= bounds the whole request, connect to last byte, as influxdb-client's
            # timeout did; ssl=False skips certificate and host-name checks (verify_tls).
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=s.timeout),
                connector=aiohttp.TCPConnector(ssl=s.verify_tls),
            )
        secret = self._secret.get_secret_value()
        if self._uses_password():
            # Basic auth in a header, not u=/p= in the URL: URLs end up in error texts.
            pair = base64.b64encode(f"{s.username}:{secret}".encode()).decode("ascii")
            self._auth = SecretStr(f"Basic {pair}")
        elif secret:
            # InfluxDB 3 takes "Token" too, but documents "Bearer" for /api/v3.
            scheme = "Bearer" if s.api == "v3" else "Token"
            self._auth = SecretStr(f"{scheme} {secret}")
        else:
            self._auth = None

    def _auth_kind(self) -> str:
        s = self.section
        if s.api == "v1" and s.username:
            source = "password_file" if s.password_file else "password"
            return f'user "{s.username}" with {source}'
        if s.token_file:
            return "token from token_file"
        return "token" if s.token is not None else "no credentials"

    def _uses_password(self) -> bool:
        return self.section.api == "v1" and bool(self.section.username)

    async def _load_secret(self) -> bool:
        """(Re)read the token or password; True if it changed."""
        s = self.section
        try:
            if self._uses_password():
                value = await asyncio.to_thread(s.resolved_password)
            else:
                value = await asyncio.to_thread(s.resolved_token)
        except OSError as err:
            key = "password_file" if self._uses_password() else "token_file"
            self._secret_error = (
                f"cannot read sinks.influxdb.{key} {getattr(s, key)}: {err.strerror or err}"
            )
            self._log.error("influxdb credentials unreadable", reason=self._secret_error)
            return False
        self._secret_error = None
        changed = value != self._secret.get_secret_value()
        self._secret = SecretStr(value)
        return changed

    async def _refresh_credentials(self) -> None:
        """After a 401/403, pick up a token/password file that was fixed meanwhile."""
        self._reload_secret = False
        if not (self.section.token_file or self.section.password_file):
            return
        if await self._load_secret():
            self._log.info("influxdb credentials changed on disk; reloaded")
            self._open_http()

    # --- writing --------------------------------------------------------------------

    async def write(self, lines: list[str]) -> Outcome:
        """Write one batch and classify the answer; never raises but for cancellation."""
        if not lines:
            return Outcome(Verdict.OK)
        try:
            if not self._started:
                await self.start()
            elif self._reload_secret or self._secret_error is not None:
                await self._refresh_credentials()
            if self._secret_error is not None:
                return Outcome(Verdict.CONFIG, self._secret_error)
            body = "\n".join(lines)
            if self.section.api == "v2":
                return await self._write_v2(body, len(lines))
            if self.section.api == "v3":
                return await self._write_v3(body, len(lines))
            return await self._write_v1(body, len(lines))
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            return self._transient(err)
        except Exception as err:  # a bug here must not stop delivery for good
            self._log.error("unexpected error writing to influxdb", error_type=type(err).__name__)
            return self._transient(err)

    async def _write_v2(self, body: str, n_lines: int) -> Outcome:
        s = self.section
        # org is sent even when empty, as influxdb-client did: a 2.x server then answers
        # "please provide either orgID or org", which _classify turns into a config error.
        params = {"org": s.org, "bucket": s.bucket, "precision": "ns"}
        return await self._post("/api/v2/write", params, body, n_lines)

    async def _encode(self, body: str) -> tuple[bytes, str | None]:
        """The request body, gzipped when configured (off the loop when large)."""
        data = body.encode("utf-8")
        if not self.section.gzip:
            return data, None
        if len(data) > GZIP_OFFLOAD_BYTES:
            return await asyncio.to_thread(gzip.compress, data, GZIP_LEVEL), "gzip"
        return gzip.compress(data, GZIP_LEVEL), "gzip"

    async def _write_v1(self, body: str, n_lines: int) -> Outcome:
        s = self.section
        params = {"db": s.database, "precision": "ns"}
        if s.retention_policy:
            params["rp"] = s.retention_policy
        return await self._post("/write", params, body, n_lines)

    async def _write_v3(self, body: str, n_lines: int) -> Outcome:
        # accept_partial=true is the server's default, said anyway: our PARTIAL handling
        # depends on it. no_sync is never sent (see the module docstring).
        params = {
            "db": self.section.database,
            "precision": "nanosecond",
            "accept_partial": "true",
        }
        return await self._post("/api/v3/write_lp", params, body, n_lines)

    async def _post(self, path: str, params: dict[str, str], body: str, n_lines: int) -> Outcome:
        """POST ``body`` and classify the answer."""
        assert self._session is not None
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if self._auth is not None:
            headers["Authorization"] = self._auth.get_secret_value()
        data, encoding = await self._encode(body)
        if encoding:
            headers["Content-Encoding"] = encoding
        async with self._session.post(
            f"{self._url}{path}", params=params, data=data, headers=headers
        ) as resp:
            answer = await resp.read()
            if 200 <= resp.status < 300:
                return Outcome(Verdict.OK)
            return self._classify(resp.status, answer, resp.headers, n_lines, len(body))

    # --- classification -------------------------------------------------------------

    def _classify(
        self,
        status: int,
        body: bytes | str | None,
        headers: Mapping[str, str] | None,
        n_lines: int,
        n_bytes: int,
    ) -> Outcome:
        """Map a non-2xx answer to what the delivery loop should do about it."""
        if 200 <= status < 300:
            return Outcome(Verdict.OK)
        message, doc = _server_message(body)
        # A proxy's error page says nothing about the data, whatever words it contains.
        page = _is_html(message, headers)
        if page:
            message = _html_text(message)
        message = self._scrub(message)[:MAX_MESSAGE_CHARS]
        said = f" ({message})" if message else ""
        at = f"InfluxDB at {self._where}"
        lowered = message.lower()
        s = self.section

        if status in (401, 403):
            self._reload_secret = True
            if self._uses_password():
                fix = "check sinks.influxdb.username / password / password_file"
            else:
                fix = "check sinks.influxdb.token / token_file"
            if status == 401:
                return Outcome(Verdict.CONFIG, f"{at}: 401 unauthorized — {fix}{said}")
            target = f'bucket "{s.bucket}"' if s.api == "v2" else f'database "{s.database}"'
            return Outcome(
                Verdict.CONFIG,
                f"{at}: 403 forbidden — the credentials may not write to {target}; grant "
                f"write permission or {fix}{said}",
            )
        if any(text in lowered for text in _CONFIG_MESSAGES) and status in (400, 404, 500):
            return Outcome(Verdict.CONFIG, f"{at}: {status} — {self._request_fix(lowered)}{said}")
        if status == 404:
            return Outcome(Verdict.CONFIG, f"{at}: 404 — {self._not_found_fix(lowered)}{said}")
        if status == 413:
            return Outcome(
                Verdict.TOO_LARGE,
                f"{at}: 413 request too large ({n_lines} lines, {n_bytes} bytes){said}",
            )
        if status in (429, 503):
            retry_after = parse_retry_after(headers.get("Retry-After") if headers else None)
            kind = "429 too many requests" if status == 429 else "503 unavailable"
            wait = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
            return Outcome(Verdict.RETRY, f"HTTP {kind}: {at}{wait}{said}", retry_after)
        if s.api == "v3" and status in (400, 422) and not page:
            return self._classify_v3(status, doc, n_lines, said)
        if status in (400, 422) and not page and _names_data(status, lowered, doc):
            rejected = _v3_rejected(doc, n_lines) if status == 400 else None
            if rejected is not None:
                return Outcome(
                    Verdict.PARTIAL,
                    f"{at}: 400 partial write, {len(rejected)} of {n_lines} lines rejected{said}",
                    rejected=[(i, self._scrub(r)) for i, r in rejected],
                )
            kind = "rejected" if status == 400 else "partial write"
            return Outcome(Verdict.REJECTS_SOME, f"{at}: {status} {kind}{said}")
        if status == 408 or status >= 500:
            # 408 is the server's read timeout: transient, never the data's fault.
            return Outcome(Verdict.RETRY, f"HTTP {status}: {at}{said}")
        if 400 <= status < 500:
            # Names no line: bisecting would dead-letter every reading one by one.
            return Outcome(Verdict.CONFIG, f"{at}: {self._refused(status)}{said}")
        # 1xx/3xx left over after redirects: the URL points somewhere odd; keep retrying.
        return Outcome(Verdict.RETRY, f"HTTP {status}: {at} answered unexpectedly{said}")

    def _classify_v3(self, status: int, doc: Any, n_lines: int, said: str) -> Outcome:
        """InfluxDB 3 with accept_partial: a 400 is a partial write naming its rejects.

        Never bisected: the lines not listed were stored. A 400/422 that names no line we
        can map blocks the sink like any other 4xx that is not about the data.
        """
        at = f"InfluxDB at {self._where}"
        rejected = _v3_rejected(doc, n_lines)
        if rejected is None:
            return Outcome(
                Verdict.CONFIG,
                f"{at}: {status} {HTTPStatus(status).phrase} — POST {self._where}"
                f"/api/v3/write_lp: the answer names no line of the {n_lines} sent (expected "
                "a partial-write list); readings stay spooled: check sinks.influxdb.url and "
                f"database{said}",
            )
        # The server lists at most V3_MAX_LISTED lines: with that many, more may have been
        # refused unlisted, so the lines not listed are sent again (stored ones merge).
        unsure = len(rejected) >= V3_MAX_LISTED and n_lines > len(rejected)
        return Outcome(
            Verdict.PARTIAL,
            f"{at}: {status} partial write, {len(rejected)} of {n_lines} lines rejected{said}",
            rejected=[(i, self._scrub(r)) for i, r in rejected],
            resend_rest=unsure,
        )

    def _refused(self, status: int) -> str:
        """A 4xx that refuses the request itself: what it means and what to check."""
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "client error"
        path = {"v2": "/api/v2/write", "v3": "/api/v3/write_lp"}.get(self.section.api, "/write")
        hint = _REFUSED_HINTS.get(status, "the answer names no line")
        if status == 415 and self.section.gzip:
            hint += "; if it cannot take gzip, set sinks.influxdb.gzip = false"
        return (
            f"{status} {phrase} — POST {self._where}{path} refused the request itself, not "
            f"the data ({hint}); readings stay spooled: check sinks.influxdb.url and any "
            "proxy in between"
        )

    def _request_fix(self, lowered: str) -> str:
        s = self.section
        if "retention policy" in lowered:
            return (
                f'retention policy "{s.retention_policy}" not found in database '
                f'"{s.database}" — create it or fix sinks.influxdb.retention_policy'
            )
        if "org" in lowered:
            return "the server needs an organization — set sinks.influxdb.org"
        return "the server refused the request itself — check sinks.influxdb settings"

    def _not_found_fix(self, lowered: str) -> str:
        s = self.section
        if s.api == "v3":
            if "database" in lowered:
                return (
                    f'database "{s.database}" not found — create it (influxdb3 create '
                    "database) or fix sinks.influxdb.database"
                )
            return (
                f"no /api/v3/write_lp at {self._where} — for InfluxDB 2.x set "
                'sinks.influxdb.api = "v2", for 1.x "v1", else check sinks.influxdb.url'
            )
        if s.api == "v1":
            if "database" in lowered:
                return f'database "{s.database}" not found — CREATE DATABASE {s.database}'
            return f"no InfluxDB 1.x write API at {self._where}/write — check sinks.influxdb.url"
        if "bucket" in lowered or "org" in lowered:
            return (
                f'bucket "{s.bucket}" or org "{s.org}" not found — create it or fix '
                "sinks.influxdb.bucket / org"
            )
        return (
            f"no /api/v2/write at {self._where} — for InfluxDB 1.x before 1.8 set "
            'sinks.influxdb.api = "v1", else check sinks.influxdb.url'
        )

    def _transient(self, err: BaseException) -> Outcome:
        detail = self._scrub(_describe_error(err, self.section.timeout))
        category, _, rest = detail.partition(": ")
        return Outcome(Verdict.RETRY, f"{category}: InfluxDB at {self._where}: {rest}"[:500])

    def _scrub(self, text: str) -> str:
        """Remove the secret from text that came from elsewhere (belt and braces)."""
        secret = self._secret.get_secret_value()
        if len(secret) >= MIN_SCRUB_LEN and secret in text:
            text = text.replace(secret, "***")
        return text
