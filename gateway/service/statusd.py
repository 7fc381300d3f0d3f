"""The status socket: ``sensor-gateway status`` asks the running gateway, without sudo.

A Unix stream socket beside ``status.json`` in the runtime directory
(:func:`gateway.service.rundir.socket_path`), mode 0660, its group
``gateway.status_group`` (default: the gateway's own group, ``sensor-gateway`` under the
systemd unit). Members of that group can ask; nobody else can.

The protocol is the smallest that works: a client connects, the gateway writes the
status document (:func:`gateway.telemetry.report.live_document`, built on the event loop
at that moment) as one line of JSON and closes. It never reads from a client, so a client
can only make it write one document: one that never reads is cut off after
:data:`WRITE_TIMEOUT_S`, and at most :data:`MAX_CLIENTS` answers are in flight (a
connection beyond that is closed at once), so no client can stall the loop or grow the
gateway's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import GatewayError
from gateway.service.connections import Connections
from gateway.telemetry.stats import RateLimit

log = structlog.get_logger("gateway.status")

SOCKET_MODE = 0o660
# A document is a few kB per device; the kernel's socket buffer takes most at once. A
# client that has not taken it within this long is cut off.
WRITE_TIMEOUT_S = 5.0
MAX_CLIENTS = 16
CLIENT_TIMEOUT_S = 10.0
# Far above any real document (about 250 B per device); a peer sending more is not ours.
MAX_DOCUMENT_BYTES = 64 * 1024**2
# One document serves every request within this long: a client asking in a tight loop
# costs at most 10 builds a second (about 0.75 ms each with 200 devices).
REUSE_S = 0.1


class StatusServer:
    """Serves ``document()`` on a Unix socket at ``path`` (a supervisor service)."""

    def __init__(
        self, path: Path, document: Callable[[], dict[str, Any]], group: str | None = None
    ) -> None:
        self.path = path
        self.group = group
        self._document = document
        self._inode: int | None = None
        self._connections = Connections()
        self._listening = asyncio.Event()
        self._last: tuple[float, bytes] = (-REUSE_S, b"")
        self._limit = RateLimit(burst=3, interval=600.0)
        self.served = 0
        """Documents delivered."""
        self.turned_away = 0
        """Connections closed at once: :data:`MAX_CLIENTS` answers were in flight."""
        self.cut_off = 0
        """Clients that did not take the document within :data:`WRITE_TIMEOUT_S`."""

    async def run(self) -> None:
        """Serve until cancelled; the socket file is removed on the way out."""
        sock, group, notes = await asyncio.to_thread(self._bind)
        for event, fields in notes:
            log.warning(event, socket=str(self.path), **fields)
        try:
            server = await asyncio.start_unix_server(self._handle, sock=sock)
        except BaseException:
            sock.close()
            self._remove()
            raise
        log.info(
            "status socket listening", socket=str(self.path), group=group, mode=f"{SOCKET_MODE:04o}"
        )
        self._listening.set()
        try:
            async with server:
                await server.serve_forever()
        finally:
            self._listening.clear()
            self._remove()
            # Answers still being written end now (their handlers return on the reset).
            await self._connections.end_all(WRITE_TIMEOUT_S)

    async def wait_listening(self) -> None:
        """Return once the socket accepts connections: the gateway tells systemd it is
        ready only once ``status`` can ask it (bound the wait with ``asyncio.timeout``)."""
        await self._listening.wait()

    @property
    def active(self) -> int:
        """Answers being written now."""
        return len(self._connections)

    def _bind(self) -> tuple[socket.socket, str, list[tuple[str, dict[str, Any]]]]:
        """Create the socket file with its mode and group (in a thread: file system calls);
        return it, the group it has, and warnings to log.

        It is bound, then given its mode and group, and only then listens: a connect
        before that is refused, so no moment exists where others could talk to it.
        """
        try:
            return self._bind_at(self.path)
        except OSError as err:
            msg = f"cannot create the status socket {self.path}: {err.strerror or err}"
            raise GatewayError(msg) from err

    def _bind_at(self, path: Path) -> tuple[socket.socket, str, list[tuple[str, dict[str, Any]]]]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                # Left by a gateway that was killed; the state-dir lock makes it ours.
                path.unlink()
        notes: list[tuple[str, dict[str, Any]]] = []
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(path, SOCKET_MODE)
            if self.group is not None:
                gid = grp.getgrnam(self.group).gr_gid
                try:
                    os.chown(path, -1, gid)
                except OSError as err:
                    notes.append(
                        (
                            "status socket keeps the gateway's own group: it cannot be "
                            "given to gateway.status_group",
                            {
                                "status_group": self.group,
                                "error": err.strerror or str(err),
                                "hint": "the gateway must be a member of that group (under "
                                "the systemd unit: SupplementaryGroups= and PrivateUsers=no "
                                "in a drop-in), or leave status_group unset",
                            },
                        )
                    )
            st = os.stat(path)
            self._inode = st.st_ino
            problem = _unreachable(path.parent, st.st_gid) if st.st_gid else None
            if problem:
                notes.append(
                    (
                        "members of the status group cannot reach the status socket",
                        {"group": _group_name(st.st_gid), "reason": problem},
                    )
                )
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock, _group_name(st.st_gid), notes

    def _remove(self) -> None:
        """Unlink the socket file if it is still the one this server made."""
        try:
            if self._inode is not None and os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass
        self._inode = None

    async def _handle(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= MAX_CLIENTS:
            self.turned_away += 1
            writer.transport.abort()
            return
        with self._connections.serving(writer):
            await self._answer_client(writer)

    async def _answer_client(self, writer: asyncio.StreamWriter) -> None:
        try:
            data = self._answer()
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                writer.write(data)
                await writer.drain()
                writer.close()
                await writer.wait_closed()
            self.served += 1
        except TimeoutError:
            self.cut_off += 1
            writer.transport.abort()
        except OSError:  # the client went away first
            writer.transport.abort()

    def _answer(self) -> bytes:
        now = time.monotonic()
        if now - self._last[0] < REUSE_S:
            return self._last[1]
        try:
            data = json.dumps(self._document(), separators=(",", ":")).encode() + b"\n"
        except Exception as err:  # a bug here must not take the socket (or more) down
            if self._limit.allow("document"):
                log.exception("status document could not be built")
            return json.dumps({"error": f"{type(err).__name__}: {err}"}).encode() + b"\n"
        self._last = (now, data)
        return data


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _unreachable(directory: Path, gid: int) -> str | None:
    """Why members of ``gid`` cannot pass ``directory`` to the socket (None: they can)."""
    try:
        st = os.stat(directory)
    except OSError as err:
        return f"{directory}: {err.strerror}"
    if st.st_mode & 0o001 or (st.st_gid == gid and st.st_mode & 0o010):
        return None
    return (
        f"its directory {directory} is mode {stat.S_IMODE(st.st_mode):04o}, group "
        f"{_group_name(st.st_gid)}: make it group {_group_name(gid)} with g+x (the systemd "
        "unit does: RuntimeDirectoryMode=0750 and Group=)"
    )


# --- the client ---------------------------------------------------------------------------


class StatusUnavailable(GatewayError):
    """The running gateway could not be asked; the message says why."""


class NotRunning(StatusUnavailable):
    """Nothing listens on the socket: no gateway runs with this state directory."""


class NoPermission(StatusUnavailable):
    """The socket (or its directory) is closed to this user; ``group`` opens it."""

    def __init__(self, path: Path, group: str | None) -> None:
        self.path = path
        self.group = group
        super().__init__(f"permission denied on {path}")


class NoAnswer(StatusUnavailable):
    """Something listens but gave no status document in time."""


def request_status(path: Path, timeout: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """Ask the gateway listening on ``path`` for its status document.

    Raises:
        NotRunning: no socket file, or nobody listening on it.
        NoPermission: this user may not connect; ``.group`` names who may.
        NoAnswer: no complete document within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(str(path))
        while chunk := sock.recv(256 * 1024):
            size += len(chunk)
            if size > MAX_DOCUMENT_BYTES:
                msg = f"{path} sent more than {MAX_DOCUMENT_BYTES >> 20} MiB: not a gateway"
                raise NoAnswer(msg)
            chunks.append(chunk)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        raise NotRunning(f"nothing listens on {path}") from None
    except PermissionError:
        raise NoPermission(path, group_of(path, 0o020)) from None
    except TimeoutError:
        msg = f"the gateway did not answer on {path} within {timeout:g} s"
        raise NoAnswer(msg) from None
    except OSError as err:
        raise NoAnswer(f"{path}: {err.strerror or err}") from None
    finally:
        sock.close()
    data = b"".join(chunks)
    if not data:
        msg = f"the gateway on {path} closed the connection without an answer (busy?)"
        raise NoAnswer(msg)
    try:
        doc = json.loads(data)
    except ValueError:
        raise NoAnswer(f"{path} answered something that is not a status document") from None
    if not isinstance(doc, dict):
        raise NoAnswer(f"{path} answered something that is not a status document")
    if "error" in doc and "devices" not in doc:
        raise NoAnswer(f"the gateway could not build its status: {doc['error']}")
    return doc


def group_of(path: Path, need: int) -> str | None:
    """The group whose members may use ``path`` (``need``: the group's permission bits it
    takes, 0o020 to connect to a socket, 0o040 to read a file), judged at the first place
    this user is stopped: ``path`` itself, or the directory above it that keeps them out
    (which needs 0o010, search). None: no group can, only the owner."""
    for candidate in (path, *path.parents):
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        want = need if candidate == path else 0o010
        return _group_name(st.st_gid) if st.st_mode & want else None
    return None
