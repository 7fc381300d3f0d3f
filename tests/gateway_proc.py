"""Runs the real gateway as a subprocess (``python -m gateway run -c FILE``) for tests.

The process is the product as a user runs it: real config file, real signals, real
crashes (SIGKILL). Its output goes to a log file whose tail is shown when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from servers import wait_until

from gateway.service.rundir import find_status


def toml_value(value: Any) -> str:
    """A TOML literal for a Python value (enough for test configs)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items())
            + " }"
        )
    raise TypeError(f"no TOML for {value!r}")


def to_toml(config: dict[str, Any]) -> str:
    """Render a nested dict as TOML tables (two levels of tables, inline below that)."""
    out: list[str] = []

    def table(path: str, body: dict[str, Any]) -> None:
        scalars = {
            k: v for k, v in body.items() if not isinstance(v, dict) or k in ("tags", "fields")
        }
        subtables = {k: v for k, v in body.items() if k not in scalars}
        out.append(f"[{path}]")
        for k, v in scalars.items():
            out.append(f"{json.dumps(k)} = {toml_value(v)}")
        out.append("")
        for k, v in subtables.items():
            table(f"{path}.{json.dumps(k)}", v)

    for section, body in config.items():
        table(json.dumps(section), body)
    return "\n".join(out)


class GatewayProcess:
    """One gateway subprocess with its own state dir and config file."""

    def __init__(
        self, tmp_dir: Path, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.dir = tmp_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        config.setdefault("gateway", {})
        config["gateway"].setdefault("state_dir", str(self.dir / "state"))
        config["gateway"].setdefault("clock_sync_check", False)
        config["gateway"].setdefault("log_format", "json")
        self.config = config
        self.config_path = self.dir / "gateway.toml"
        self.config_path.write_text(to_toml(config))
        self.log_path = self.dir / "gateway.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def state_dir(self) -> Path:
        return Path(self.config["gateway"]["state_dir"])

    def start(self, wait_ready: bool = True) -> GatewayProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.dir,
        )
        log.close()
        self.starts += 1
        if wait_ready:
            self.wait_for_log("gateway started", occurrence=self.starts)
        return self

    def wait_for_log(self, text: str, timeout: float = 15.0, occurrence: int = 1) -> None:
        def seen() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"gateway exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            return self.log_text().count(text) >= occurrence

        try:
            wait_until(seen, timeout=timeout, what=f"gateway log line {text!r}")
        except Exception as err:
            raise AssertionError(f"{err}\n--- gateway log ---\n{self.log_tail()}") from None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def status(self) -> dict[str, Any]:
        return json.loads(find_status(self.state_dir).read_text())

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"gateway did not stop within {timeout}s:\n{self.log_tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL: a crash."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run another sensor-gateway command against this gateway's config."""
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=self.dir,
        )

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_stopped(proc: GatewayProcess, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while proc.proc is not None and proc.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
