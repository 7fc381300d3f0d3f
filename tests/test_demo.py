"""The demo as a new user meets it: ``scripts/demo`` twice, the second time offline.

Real processes throughout: ``scripts/setup`` building a ``.venv`` in a copy of the
project, the demo with its pseudo-terminals and private mosquitto, then ``query``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.demo import closing_hint, fit

ROOT = Path(__file__).resolve().parents[1]
# What `pip install -e .` needs of the project.
PROJECT_FILES = ("pyproject.toml", "README.md", "gateway", "devices", "scripts")
OFFLINE = {
    "PIP_NO_INDEX": "1",
    "PIP_FIND_LINKS": "",
    "PIP_EXTRA_INDEX_URL": "",
    "PIP_CONFIG_FILE": os.devnull,  # no index or wheel directory from a pip.conf either
}
WIDTH = 80


def copy_project(into: Path) -> Path:
    into.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, into / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, into / name)
    return into


def assert_clean_run(proc: subprocess.CompletedProcess[str]) -> None:
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert proc.returncode == 0, shown
    assert "Traceback" not in proc.stderr, shown
    assert "Future exception was never retrieved" not in proc.stderr, shown
    assert "Demo stopped." in proc.stdout, shown


def stored_rows(gateway_cmd: list[str], config: Path, cwd: Path) -> list[dict[str, object]]:
    out = subprocess.run(
        [*gateway_cmd, "query", "-c", str(config), "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.integration
def test_scripts_demo_twice_the_second_time_offline(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    state = tmp_path / "state"
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    env.pop("VIRTUAL_ENV", None)
    demo = [str(project / "scripts" / "demo"), "--duration", "3", "--state-dir", str(state)]

    first = subprocess.run(demo, capture_output=True, text=True, timeout=900, env=env, cwd=project)
    assert_clean_run(first)
    assert (project / ".venv" / "bin" / "sensor-gateway").exists()

    second = subprocess.run(
        demo, capture_output=True, text=True, timeout=300, env={**env, **OFFLINE}, cwd=project
    )
    assert_clean_run(second)
    # Nothing installed, nothing printed by setup: the demo's own lines come first.
    assert second.stdout.startswith("sensor-gateway demo: "), second.stdout
    assert "==>" not in second.stdout + second.stderr
    # It stored readings, and the hint names the command as typed from here.
    assert "  .venv/bin/sensor-gateway query -c " in second.stdout
    rows = stored_rows([str(project / ".venv/bin/sensor-gateway")], state / "demo.toml", project)
    assert rows


@pytest.mark.integration
def test_each_demo_run_starts_from_an_empty_store(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    gateway_cmd = [sys.executable, "-m", "gateway"]
    env = {**os.environ, "COLUMNS": str(WIDTH)}

    def demo(*extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*gateway_cmd, "demo", "--duration", "2.5", "--state-dir", str(state), *extra],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert_clean_run(proc)
        return proc

    first = demo()
    config = state / "demo.toml"
    assert f"  Config: {config}\n" in first.stdout
    assert "the store starts empty" in first.stdout
    first_rows = stored_rows(gateway_cmd, config, tmp_path)
    assert first_rows

    demo()
    second_rows = stored_rows(gateway_cmd, config, tmp_path)
    assert second_rows
    # Only the second run's readings: every one newer than the first run's newest.
    # (RFC 3339 in UTC with nine fraction digits: text order is time order.)
    assert min(str(r["time"]) for r in second_rows) > max(str(r["time"]) for r in first_rows)

    kept = demo("--keep")
    assert "earlier runs' readings are kept (--keep)" in kept.stdout
    assert len(stored_rows(gateway_cmd, config, tmp_path)) > len(second_rows)

    for proc in (first, kept):
        for line in (proc.stdout + proc.stderr).splitlines():
            if str(tmp_path) not in line:  # a long temporary path may not fit
                assert len(line) <= WIDTH, line

    # The written config is a real one: check-config accepts it (the demo's
    # pseudo-terminals are gone now, which is a warning, not an error).
    check = subprocess.run(
        [*gateway_cmd, "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr


def test_a_live_view_line_is_cut_to_the_width() -> None:
    assert fit("x" * 79, 80) == "x" * 79
    assert fit("x" * 100, 80) == "x" * 79 + "…"


def test_the_closing_hint_names_the_command_as_typed() -> None:
    hint = closing_hint(".venv/bin/sensor-gateway", Path("/s/demo.toml"))
    assert "  .venv/bin/sensor-gateway query --demo\n" in hint
    assert 'export PATH="' in hint
    assert "export PATH" not in closing_hint("sensor-gateway", Path("/s/demo.toml"))
    assert all(len(line) <= WIDTH for line in hint.splitlines())
