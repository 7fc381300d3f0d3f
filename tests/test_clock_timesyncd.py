"""Clock sync where adjtimex is refused (the unit's ProtectClock=): systemd-timesyncd's flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.pipeline import clock


def test_timesyncd_flag(tmp_path: Path) -> None:
    run_dir = tmp_path / "timesync"
    assert clock.timesyncd_synchronized(run_dir) is None  # timesyncd not running: unknown
    run_dir.mkdir()
    assert clock.timesyncd_synchronized(run_dir) is False  # running, not synchronized yet
    (run_dir / "synchronized").touch()
    assert clock.timesyncd_synchronized(run_dir) is True


class RefusingLibc:
    """A fake libc whose adjtimex fails as under the unit's seccomp filter (-1, EPERM);
    the real refusal is checked under systemd in tests/test_systemd_e2e.py."""

    def adjtimex(self, buf: object) -> int:
        return -1


def test_refused_adjtimex_falls_back_to_timesyncd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clock, "_libc", RefusingLibc)
    monkeypatch.setattr(clock, "TIMESYNCD_RUN_DIR", tmp_path / "timesync")
    assert clock.clock_synchronized() is None
    (tmp_path / "timesync").mkdir()
    assert clock.clock_synchronized() is False
    (tmp_path / "timesync" / "synchronized").touch()
    assert clock.clock_synchronized() is True
