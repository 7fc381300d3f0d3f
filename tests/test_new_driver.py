"""``sensor-gateway new-driver NAME`` makes a package that installs, is listed by
``sensor-gateway drivers``, passes ``check-config`` with its sample, and passes its own
tests. Installed with pip into a directory of its own (``--target``), so the project's
environment is left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli.newdriver import NewDriverError, create

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


@pytest.mark.integration
def test_a_new_driver_installs_lists_and_passes_its_tests(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    made = run("-m", "gateway", "new-driver", "thermo", "--dir", str(tmp_path), cwd=ROOT, env=env)
    assert made.returncode == 0, made.stderr
    package = tmp_path / "sensor-gateway-thermo-driver"
    assert f"created {package}" in made.stdout

    target = tmp_path / "site"
    installed = run(
        "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
        "--target", str(target), str(package),
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    with_it = {**env, "PYTHONPATH": f"{target}{os.pathsep}{ROOT}"}

    listed = run("-m", "gateway", "drivers", cwd=tmp_path, env=with_it)
    assert "\nthermo  " in listed.stdout, listed.stdout + listed.stderr
    detail = run("-m", "gateway", "drivers", "thermo", cwd=tmp_path, env=with_it)
    assert detail.stdout.startswith("thermo (serial, from sensor-gateway-thermo-driver)")

    config = tmp_path / "gateway.toml"
    sample = (package / "sg_thermo" / "sample.toml").read_text()
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n\n{sample}')
    checked = run("-m", "gateway", "check-config", "-c", str(config), cwd=tmp_path, env=with_it)
    assert checked.returncode == 0, checked.stderr
    assert "thermo_1: thermo" in checked.stdout

    tested = run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=package, env=env)
    assert tested.returncode == 0, tested.stdout[-3000:] + tested.stderr[-2000:]
    assert " passed" in tested.stdout


def test_names_that_cannot_be_a_driver(tmp_path: Path) -> None:
    for name in ("Thermo", "2x", "my-driver", "class", ""):
        with pytest.raises(NewDriverError, match="not a usable driver name"):
            create(name, tmp_path)
    create("thermo", tmp_path)
    with pytest.raises(NewDriverError, match="exists already"):
        create("thermo", tmp_path)
