"""The spool against real SQLite files: cursors, replay, caps, damage and a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sqlite3
import string
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

import gateway.delivery.spool as spool_mod
from gateway.delivery.spool import Spool
from gateway.pipeline.timesource import TimeSource


def _lines(prefix: str, n: int, width: int = 0) -> list[str]:
    """``n`` distinct lines; ``width`` adds random (incompressible) padding."""
    rng = random.Random(prefix)
    pad = ""
    out = []
    for i in range(n):
        if width:
            pad = "".join(rng.choices(string.ascii_letters + string.digits, k=width))
        out.append(f'{prefix},seq={i} v={i}i,p="{pad}" {1_700_000_000_000_000_000 + i}')
    return out


@contextlib.asynccontextmanager
async def opened(path: Path, sinks: Sequence[str] = ("a",), **kw: Any) -> AsyncIterator[Spool]:
    spool = Spool(path, sinks, **kw)
    await spool.open()
    try:
        yield spool
    finally:
        await spool.close()


async def _commit(spool: Spool, lines: list[str]) -> int:
    spool.add_many(lines)
    return await spool.commit()


async def _drain(spool: Spool, sink: str, max_lines: int = 1000) -> list[str]:
    """Read and ack everything ``sink`` has (what a healthy delivery loop does)."""
    got: list[str] = []
    while (batch := await spool.read(sink, max_lines)) is not None:
        got += batch.lines
        await spool.ack(sink, batch)
    return got


def _chunk_ids(path: Path) -> list[int]:
    db = sqlite3.connect(path)
    try:
        return [r[0] for r in db.execute("SELECT id FROM chunk ORDER BY id")]
    finally:
        db.close()


def _cursors(path: Path) -> dict[str, tuple[int, int]]:
    db = sqlite3.connect(path)
    try:
        return {s: (c, ln) for s, c, ln in db.execute("SELECT sink, chunk_id, line FROM cursor")}
    finally:
        db.close()


async def test_add_commit_read_ack(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with opened(path) as spool:
        lines = _lines("m", 25)
        spool.add_many(lines[:10])
        assert spool.pending == 10
        assert spool.behind("a") == 0, "not received before the commit"
        assert await spool.commit() == 10
        assert await _commit(spool, lines[10:]) == 15
        assert spool.pending == 0
        assert spool.behind("a") == 25
        await spool.wait_for_data("a")

        first = await spool.read("a", 12)
        assert first is not None
        assert first.lines == lines[:12]
        # Not acked yet: reading again gives the same lines.
        again = await spool.read("a", 12)
        assert again is not None
        assert again.lines == lines[:12]
        await spool.ack("a", first)
        assert spool.behind("a") == 13
        rest = await spool.read("a", 100)
        assert rest is not None
        assert rest.lines == lines[12:]
        await spool.ack("a", rest)
        assert spool.behind("a") == 0
        assert await spool.read("a", 100) is None
        assert spool.stats.committed == 25
        assert spool.stats.commits == 2
    assert _chunk_ids(path) == [], "chunks every sink passed are deleted"


async def test_two_sinks_keep_their_own_cursor_and_gc_waits_for_both(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with opened(path, ("a", "b")) as spool:
        c1, c2 = _lines("one", 5), _lines("two", 5)
        await _commit(spool, c1)
        await _commit(spool, c2)
        assert await _drain(spool, "a") == c1 + c2
        assert spool.behind("a") == 0
        assert spool.behind("b") == 10
        assert len(_chunk_ids(path)) == 2, "b has not passed them: nothing collected"

        batch = await spool.read("b", 5)
        assert batch is not None
        assert batch.lines == c1
        await spool.ack("b", batch)
        assert len(_chunk_ids(path)) == 1, "both passed the first chunk: collected"
        assert await _drain(spool, "b") == c2
        assert _chunk_ids(path) == []
        size = spool.size_bytes
    assert size == 0


async def test_reopen_replays_from_the_cursor(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    lines = _lines("m", 30)
    async with opened(path, ("a", "b")) as spool:
        await _commit(spool, lines[:20])
        batch = await spool.read("a", 8)
        assert batch is not None
        await spool.ack("a", batch)
        unacked = await spool.read("a", 5)  # in flight when the gateway stops
        assert unacked is not None
        spool.add_many(lines[20:])  # pending: close() commits it
    async with opened(path, ("a", "b")) as spool:
        assert spool.behind("a") == 22
        assert spool.behind("b") == 30
        assert await _drain(spool, "a") == lines[8:], "replay starts at the acked cursor"
        assert await _drain(spool, "b") == lines


async def test_cursor_of_a_removed_sink_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with opened(path, ("a", "gone")) as spool:
        await _commit(spool, _lines("m", 5))
        await _drain(spool, "a")
    assert set(_cursors(path)) == {"a", "gone"}
    assert len(_chunk_ids(path)) == 1
    async with opened(path, ("a",)) as spool:
        assert spool.behind("a") == 0
    assert set(_cursors(path)) == {"a"}
    assert _chunk_ids(path) == [], "the removed sink no longer pins the chunk"


async def test_backlog_of_a_removed_sink_is_counted_and_logged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with opened(path, ("a", "gone")) as spool:
        await _commit(spool, _lines("m", 7))
        await _drain(spool, "a")
    with structlog.testing.capture_logs() as logs:
        async with opened(path, ("a",)) as spool:
            assert spool.stats.dropped == {"gone:sink_removed": 7}
            assert spool.size_bytes == 0, "the chunk it pinned is collected and not counted"
    (event,) = [e for e in logs if e["event"].startswith("spool cursor of a sink")]
    assert event["sink"] == "gone"
    assert event["dropped"] == 7
    assert "enabled = false" in event["hint"]


async def test_disabled_sink_keeps_its_backlog_until_enabled_again(tmp_path: Path) -> None:
    """enabled = false, restart, enabled = true, restart: nothing of the window is lost."""
    path = tmp_path / "spool.db"
    before, during, after = _lines("before", 5), _lines("during", 6), _lines("after", 4)
    async with opened(path, ("a", "b")) as spool:
        await _commit(spool, before)
        assert await _drain(spool, "a") == before
        # "b" is turned off with part of its backlog not delivered yet.
        batch = await spool.read("b", 3)
        assert batch is not None
        await spool.ack("b", batch)
    with structlog.testing.capture_logs() as logs:
        async with opened(path, ("a",), inactive_sinks=("b",)) as spool:
            assert spool.stats.dropped == {}
            await _commit(spool, during)
            assert await _drain(spool, "a") == during
    (kept,) = [e for e in logs if e["event"] == "backlog kept for a sink that is not enabled"]
    assert kept["sink"] == "b"
    assert kept["backlog"] == 2
    assert set(_cursors(path)) == {"a", "b"}
    assert len(_chunk_ids(path)) == 2, "the chunks b has not had are kept"
    async with opened(path, ("a", "b")) as spool:
        await _commit(spool, after)
        assert spool.behind("b") == 2 + len(during) + len(after)
        assert await _drain(spool, "b") == before[3:] + during + after
        assert await _drain(spool, "a") == after
        assert spool.stats.dropped == {}
    assert _chunk_ids(path) == []


async def test_caps_count_what_a_disabled_sink_never_gets(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    chunks = [_lines(f"c{i}", 10, width=200) for i in range(8)]
    async with opened(path, ("a", "b")) as spool:
        pass
    async with opened(path, ("a",), inactive_sinks=("b",), max_bytes=8_000) as spool:
        for chunk in chunks:
            await _commit(spool, chunk)
            await _drain(spool, "a")
        lost = spool.stats.dropped.get("b:spool_full", 0)
        assert lost > 0
        assert spool.stats.dropped == {"b:spool_full": lost}, "a had them all already"
    async with opened(path, ("a", "b")) as spool:
        everything = [ln for c in chunks for ln in c]
        assert await _drain(spool, "b") == everything[lost:], "what was not counted arrives"


async def test_new_sink_starts_at_the_oldest_chunk(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    lines = _lines("m", 6)
    async with opened(path, ("a",)) as spool:
        await _commit(spool, lines)
    async with opened(path, ("a", "new")) as spool:
        assert await _drain(spool, "new") == lines


async def test_byte_cap_drops_oldest_and_counts_per_sink(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    chunks = [_lines(f"c{i}", 10, width=200) for i in range(8)]
    async with opened(path, ("a", "b"), max_bytes=8_000) as spool:
        await _commit(spool, chunks[0])
        await _commit(spool, chunks[1])
        # "a" delivered the first chunk: its loss must not be counted for "a".
        batch = await spool.read("a", 10)
        assert batch is not None
        await spool.ack("a", batch)
        for chunk in chunks[2:]:
            await _commit(spool, chunk)
        assert spool.size_bytes <= 8_000
        dropped = spool.stats.dropped
        lost_b = dropped.get("b:spool_full", 0)
        lost_a = dropped.get("a:spool_full", 0)
        assert lost_b > 0
        assert lost_b % 10 == 0, "whole chunks are dropped"
        assert lost_a == lost_b - 10, "a had already delivered one dropped chunk"
        got_a = await _drain(spool, "a")
        got_b = await _drain(spool, "b")
        everything = [ln for c in chunks for ln in c]
        assert got_b == everything[lost_b:], "the oldest went, the newest stayed, in order"
        assert got_a == everything[10 + lost_a :]
        assert chunks[-1] == got_b[-10:]


async def test_batch_in_flight_while_its_chunk_is_dropped(tmp_path: Path) -> None:
    """A drop under a batch being delivered: the ack must not rewind or lose lines."""
    path = tmp_path / "spool.db"
    chunks = [_lines(f"c{i}", 10, width=200) for i in range(6)]
    async with opened(path, ("a",), max_bytes=6_000) as spool:
        await _commit(spool, chunks[0])
        await _commit(spool, chunks[1])
        batch = await spool.read("a", 15)  # all of chunk 0, half of chunk 1
        assert batch is not None
        for chunk in chunks[2:]:
            await _commit(spool, chunk)
        lost = spool.stats.dropped["a:spool_full"]
        assert lost >= 20
        await spool.ack("a", batch)  # delivered after the drop
        everything = [ln for c in chunks for ln in c]
        rest = everything[lost:]
        assert spool.behind("a") == len(rest)
        assert await _drain(spool, "a") == rest


async def test_max_age_drops_old_chunks(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    old, new = _lines("old", 5), _lines("new", 5)
    async with opened(path, ("a",), max_age=0.2) as spool:
        await _commit(spool, old)
        age = await spool.oldest_age()
        assert age is not None
        assert age < 0.2
        await asyncio.sleep(0.3)
        await _commit(spool, new)
        assert spool.stats.dropped == {"a:max_age": 5}
        assert spool.behind("a") == 5
        assert await _drain(spool, "a") == new


async def test_dead_letters_are_kept(tmp_path: Path) -> None:
    async with opened(tmp_path / "spool.db", ("a",)) as spool:
        await spool.dead_letter("a", [("bad line", "400: unable to parse")])
        rows = await spool.dead_letters("a")
        assert [(r["line"], r["reason"]) for r in rows] == [("bad line", "400: unable to parse")]
        assert spool.stats.dead_lettered == 1


# --- damage ------------------------------------------------------------------------


def _page_size(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA page_size").fetchone()[0])
    finally:
        db.close()


async def _write_chunks(path: Path, n: int) -> list[list[str]]:
    """A closed, checkpointed spool of ``n`` chunks, each spanning several pages."""
    chunks = [_lines(f"c{i}", 40, width=300) for i in range(n)]
    async with opened(path, ("a",)) as spool:
        for chunk in chunks:
            await _commit(spool, chunk)
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return chunks


def _check_salvaged(got: list[str], chunks: list[list[str]], lost: int, tmp_path: Path) -> None:
    # Every chunk came back whole or not at all, in order; the loss matches the count.
    remaining = [c for c in chunks if c[0] in got]
    assert got == [ln for c in remaining for ln in c]
    assert len(chunks) - len(remaining) == lost
    assert list(tmp_path.glob("spool.db.damaged-*")), "the damaged file is kept aside"


async def test_corrupted_spool_is_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    chunks = await _write_chunks(path, 12)
    size = path.stat().st_size
    page = _page_size(path)
    # Overwrite a few pages in the middle of the main database file with garbage.
    with path.open("r+b") as fh:
        fh.seek((size // page // 2) * page)
        fh.write(os.urandom(3 * page))
    async with opened(path, ("a",)) as spool:
        lost = spool.stats.recovered_lost_chunks
        got = await _drain(spool, "a")
    assert 0 < lost < len(chunks)
    _check_salvaged(got, chunks, lost, tmp_path)


async def test_truncated_spool_is_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    chunks = await _write_chunks(path, 12)
    page = _page_size(path)
    size = path.stat().st_size
    # Power loss mid-write on a filesystem without journaling: the tail is gone.
    with path.open("r+b") as fh:
        fh.truncate((size // page - 3) * page + page // 2)
    async with opened(path, ("a",)) as spool:
        lost = spool.stats.recovered_lost_chunks
        got = await _drain(spool, "a")
    assert 0 < lost < len(chunks)
    _check_salvaged(got, chunks, lost, tmp_path)


async def test_unreadable_chunk_is_skipped_and_counted(tmp_path: Path) -> None:
    """Damage SQLite cannot see (a chunk's bytes flipped) must not wedge delivery."""
    path = tmp_path / "spool.db"
    good1, good2 = _lines("g1", 5), _lines("g2", 5)
    async with opened(path, ("a",)) as spool:
        await _commit(spool, good1)
        await _commit(spool, _lines("bad", 5))
        await _commit(spool, good2)
    db = sqlite3.connect(path)
    db.execute("UPDATE chunk SET data = ? WHERE id = 2", (b"\x78\x01garbage",))
    db.commit()
    db.close()
    async with opened(path, ("a",)) as spool:
        assert await _drain(spool, "a") == good1 + good2
        assert spool.stats.dropped == {"a:corrupt": 5}


# --- full disk -----------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A 2 MiB tmpfs (None if mounting is not permitted here)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        yield None
        return
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True, timeout=10)


def _fill(directory: Path) -> Path:
    """Take every free byte of ``directory``'s filesystem; return the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        os.close(fd)
    return filler


CHUNK_LINES = 20


def _chunk(i: int) -> list[str]:
    return _lines(f"c{i}", CHUNK_LINES, width=400)  # ~8 KiB, incompressible


async def test_spool_keeps_headroom_on_a_small_disk(
    tmp_path: Path, small_disk: Path | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spool filling the disk itself: oldest chunks go (disk_full), commits go on."""
    monkeypatch.setattr(spool_mod, "DISK_HEADROOM_BYTES", 640 * 1024)
    monkeypatch.setattr(spool_mod, "WAL_AUTOCHECKPOINT_PAGES", 32)
    if small_disk is None:  # no mount here: pretend the disk is 2 MiB
        directory = tmp_path

        def free(self: Spool) -> int:
            used = sum(p.stat().st_size for p in directory.glob("spool.db*"))
            return 2 * 1024**2 - used

        monkeypatch.setattr(Spool, "_free_bytes", free)
    else:
        directory = small_disk
    path = directory / "spool.db"
    chunks = [_chunk(i) for i in range(300)]  # ~2.4 MiB: more than the disk holds
    async with opened(path, ("a",), max_bytes=1 << 30) as spool:
        for chunk in chunks:
            assert await _commit(spool, chunk) == CHUNK_LINES, "every commit succeeds"
        assert spool.stats.write_errors == 0
        dropped = spool.stats.dropped["a:disk_full"]
        assert dropped % CHUNK_LINES == 0
        assert 0 < dropped < 300 * CHUNK_LINES
        everything = [ln for c in chunks for ln in c]
        assert await _drain(spool, "a") == everything[dropped:], "only the oldest went"
    if small_disk is not None:
        st = os.statvfs(small_disk)
        assert st.f_bavail * st.f_frsize > 256 * 1024, "free space was kept"


async def test_disk_filled_by_others_keeps_lines_in_memory(
    small_disk: Path | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another file takes the last byte: commits fail, lines wait (bounded), then land."""
    # The test suite runs as root (scripts/test installs Debian packages), so it can mount.
    assert small_disk is not None, "needs a small tmpfs: run the suite as root"
    monkeypatch.setattr(spool_mod, "MAX_PENDING_LINES", 3 * CHUNK_LINES)
    monkeypatch.setattr(spool_mod, "DISK_HEADROOM_BYTES", 0)  # this test is not about it
    path = small_disk / "spool.db"
    async with opened(path, ("a",)) as spool:
        first = _chunk(0)
        await _commit(spool, first)
        filler = _fill(small_disk)
        waiting = [_chunk(i) for i in range(1, 6)]
        for chunk in waiting:
            spool.add_many(chunk)
            assert await spool.commit() == 0
            assert spool.pending <= 3 * CHUNK_LINES
        assert spool.stats.write_errors == len(waiting)
        assert spool.stats.dropped == {"spool_unwritable": 2 * CHUNK_LINES}
        filler.unlink()  # the operator frees space
        assert await spool.commit() == 3 * CHUNK_LINES
        kept = [ln for c in waiting[2:] for ln in c]
        assert await _drain(spool, "a") == first + kept, "the newest waited in memory"


async def test_sqlite_full_keeps_lines_in_memory_before_dropping_anything(
    tmp_path: Path,
) -> None:
    """A disk full for a moment while a sink is a batch behind: nothing on disk is dropped
    while memory has room; the lines wait and land once space returns."""
    path = tmp_path / "spool.db"
    async with opened(path, ("a",), max_bytes=1 << 30) as spool:
        assert spool._db is not None
        chunks = [_chunk(i) for i in range(3)]
        for chunk in chunks[:2]:
            assert await _commit(spool, chunk) == CHUNK_LINES
        pages = spool._db.execute("PRAGMA page_count").fetchone()[0]
        spool._db.execute(f"PRAGMA max_page_count = {pages}")
        spool.add_many(chunks[2])
        assert await spool.commit() == 0
        assert spool.pending == CHUNK_LINES
        assert spool.stats.dropped == {}
        spool._db.execute("PRAGMA max_page_count = 1000000")
        assert await spool.commit() == CHUNK_LINES
        assert await _drain(spool, "a") == [ln for c in chunks for ln in c]


async def test_sqlite_full_drops_oldest_so_later_commits_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLITE_FULL (here from a page limit) with memory half full: the oldest chunks make
    room, nothing else goes."""
    monkeypatch.setattr(spool_mod, "MAX_PENDING_LINES", 2 * CHUNK_LINES)
    path = tmp_path / "spool.db"
    async with opened(path, ("a",), max_bytes=1 << 30) as spool:
        assert spool._db is not None
        spool._db.execute("PRAGMA max_page_count = 150")
        chunks: list[list[str]] = []
        failures = 0
        for i in range(200):
            chunks.append(_chunk(i))
            spool.add_many(chunks[-1])
            if await spool.commit() == 0:
                failures += 1
                assert spool.pending > 0, "a failed commit keeps the lines in memory"
                break
        assert failures == 1
        dropped = spool.stats.dropped["a:disk_full"]
        assert dropped > 0
        assert dropped % CHUNK_LINES == 0
        # The policy made room: the retried and later commits succeed.
        assert await spool.commit() == CHUNK_LINES
        more = _chunk(999)
        assert await _commit(spool, more) == CHUNK_LINES
        got = await _drain(spool, "a")
        everything = [ln for c in chunks for ln in c] + more
        assert got == everything[dropped:], "only the oldest were dropped"


async def test_lines_kept_in_memory_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_mod, "MAX_PENDING_LINES", 50)
    async with opened(tmp_path / "spool.db", ("a",)) as spool:
        assert spool._db is not None
        spool._db.execute("PRAGMA query_only = ON")  # every commit fails (not a full disk)
        for i in range(4):
            spool.add_many(_lines(f"c{i}", 20))
            assert await spool.commit() == 0
        assert spool.pending == 50
        assert spool.stats.dropped == {"spool_unwritable": 30}
        spool._db.execute("PRAGMA query_only = OFF")
        assert await spool.commit() == 50
        got = await _drain(spool, "a")
        assert got == _lines("c1", 20)[10:] + _lines("c2", 20) + _lines("c3", 20)


async def test_lines_after_the_spool_emptied_are_delivered(tmp_path: Path) -> None:
    """Chunk ids must keep growing once every chunk was delivered and collected."""
    path = tmp_path / "spool.db"
    first, second, third = _lines("one", 3), _lines("two", 3), _lines("three", 3)
    async with opened(path, ("a",)) as spool:
        await _commit(spool, first)
        assert await _drain(spool, "a") == first
        assert _chunk_ids(path) == []
        await _commit(spool, second)
        assert await _drain(spool, "a") == second
    async with opened(path, ("a",)) as spool:
        await _commit(spool, third)
        assert await _drain(spool, "a") == third


# --- age: judged on the spool clock, never on a wall clock that just jumped ----------

DAY_NS = 86_400 * 1_000_000_000


class _Clock:
    """A wall and a monotonic clock that move only when told (no real clock is changed)."""

    def __init__(self) -> None:
        self.wall = 1_750_000_000_000_000_000
        self.mono = 1_000_000_000_000

    def source(self) -> TimeSource:
        return TimeSource(
            check_sync=False, wall_ns=lambda: self.wall, monotonic_ns=lambda: self.mono
        )


@pytest.fixture
def machine_clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    """The test clock, standing in for the machine's wall clock too."""
    clock = _Clock()
    monkeypatch.setattr(time, "time_ns", lambda: clock.wall)
    return clock


async def test_max_age_ignores_a_wall_clock_step_and_counts_monotonic_time(
    tmp_path: Path, machine_clock: _Clock
) -> None:
    old, new, later = _lines("old", 5), _lines("new", 5), _lines("later", 5)
    async with opened(
        tmp_path / "spool.db", ("a",), max_age=86_400, time_source=machine_clock.source()
    ) as spool:
        await _commit(spool, old)
        machine_clock.wall += 2 * DAY_NS  # NTP sets the clock of a Pi without RTC
        await _commit(spool, new)
        assert spool.stats.dropped == {}
        assert await spool.oldest_age() == 0.0
        machine_clock.wall += DAY_NS
        machine_clock.mono += DAY_NS  # a day really passes
        assert await spool.oldest_age() == 86_400.0
        await _commit(spool, later)
        assert spool.stats.dropped == {}, "exactly max_age old is not older than max_age"
        machine_clock.wall += 1
        machine_clock.mono += 1
        await _commit(spool, later)
        assert spool.stats.dropped == {"a:max_age": 10}
        assert await _drain(spool, "a") == later + later


async def test_chunks_from_an_earlier_run_keep_their_age_across_a_clock_step(
    tmp_path: Path, machine_clock: _Clock
) -> None:
    path = tmp_path / "spool.db"
    async with opened(path, ("a",), max_age=86_400, time_source=machine_clock.source()) as spool:
        await _commit(spool, _lines("first", 3))
        machine_clock.wall += 3_600 * 10**9
        machine_clock.mono += 3_600 * 10**9
        await _commit(spool, _lines("second", 3))
    # Rebooted (the monotonic clock starts again) and the wall clock was set 3 days on.
    machine_clock.wall += 3 * DAY_NS
    machine_clock.mono = 5 * 10**9
    async with opened(path, ("a",), max_age=86_400, time_source=machine_clock.source()) as spool:
        assert await spool.oldest_age() == 3_600.0
        await _commit(spool, _lines("third", 3))
        assert spool.stats.dropped == {}
        assert spool.behind("a") == 9
