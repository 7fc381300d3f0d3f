"""``sensor-gateway new-driver NAME``: a driver package to start from.

It writes ``sensor-gateway-<name>-driver/`` with a working serial stream driver for
lines of ``key=value`` pairs, its ``sample.toml`` (embedded in the README), and tests
that use the gateway's driver test kit (``gateway.testing``): ``pip install`` it and
``sensor-gateway drivers`` lists it; ``pytest`` in the folder passes. Then change the
protocol part. The layout and rules are those of docs/writing-a-driver.md.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class NewDriverError(ValueError):
    """The name is not usable, or the folder exists."""


def create(name: str, parent: Path) -> Path:
    """Write the package for driver ``name`` under ``parent``; return its folder."""
    if not NAME_RE.match(name) or keyword.iskeyword(name):
        raise NewDriverError(
            f"{name!r} is not a usable driver name: lowercase letters, digits and _, "
            "starting with a letter (it is what configs write as driver = ...)"
        )
    folder = parent / f"sensor-gateway-{name.replace('_', '-')}-driver"
    if folder.exists():
        raise NewDriverError(f"{folder} exists already; choose another name or folder")
    module = f"sg_{name}"
    camel = "".join(part.capitalize() for part in name.split("_"))
    values = {
        "name": name,
        "module": module,
        "cls": f"{camel}Driver",
        "opts": f"{camel}Options",
        "dist": folder.name,
    }
    sample = _fill(SAMPLE, values)
    files = {
        "pyproject.toml": _fill(PYPROJECT, values),
        "README.md": _fill(README, values).replace("@SAMPLE@", sample.rstrip("\n")),
        f"{module}/__init__.py": _fill(INIT, values),
        f"{module}/_driver.py": _fill(DRIVER, values),
        f"{module}/sample.toml": sample,
        f"{module}/py.typed": "",
        "tests/conftest.py": CONFTEST,
        f"tests/test_{name}.py": _fill(TESTS, values),
    }
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def _fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key.upper()}@", value)
    return template


PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "@DIST@"
version = "0.1.0"
description = "sensor-gateway driver @NAME@"
readme = "README.md"
requires-python = ">=3.11"
dependencies = ["sensor-gateway"]

[project.optional-dependencies]
test = ["pytest>=8", "pytest-asyncio>=0.23"]

# What makes the gateway find the driver: configs say driver = "@NAME@".
[project.entry-points."sensor_gateway.devices"]
@NAME@ = "@MODULE@:@CLS@"

[tool.setuptools.packages.find]
include = ["@MODULE@*"]

[tool.setuptools.package-data]
@MODULE@ = ["sample.toml", "py.typed"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
"""

README = """\
# @DIST@

A [sensor-gateway](https://example.invalid/sensor-gateway) driver: `driver = "@NAME@"`.
It reads lines of `key=value` pairs from a serial port (`t=21.5 h=40`); change
`@MODULE@/_driver.py` for your device's protocol (see the gateway's
docs/writing-a-driver.md).

```sh
pip install .                 # then: sensor-gateway drivers @NAME@
pip install '.[test]' && pytest
```

## Configuration

<!-- sample.toml -->
```toml
@SAMPLE@
```
<!-- /sample.toml -->
"""

INIT = '''\
"""sensor-gateway driver ``@NAME@``."""

from @MODULE@._driver import @CLS@, @OPTS@

__all__ = ["@CLS@", "@OPTS@"]
'''

DRIVER = '''\
"""The ``@NAME@`` driver: lines of ``key=value`` pairs on a serial port."""

from __future__ import annotations

import math
from typing import ClassVar

from gateway.driver import RawSample, RejectedInput, SerialDriver, SerialOptions
from pydantic import Field


class @OPTS@(SerialOptions):
    """Options of the ``@NAME@`` driver (see ``sample.toml``)."""

    separator: str = Field(default=" ", min_length=1, description="Between the pairs.")


class @CLS@(SerialDriver[@OPTS@]):
    """Each line carries ``key=value`` pairs; numbers become fields."""

    Options: ClassVar[type[@OPTS@]] = @OPTS@
    description: ClassVar[str] = "@NAME@: key=value lines on a serial port"

    def parse(self, frame: bytes) -> list[RawSample]:
        """One line → one sample; an empty line carries no reading."""
        try:
            text = frame.decode("ascii").strip()
        except UnicodeDecodeError:
            raise RejectedInput(f"not ASCII text: {frame[:40]!r}", reason="encoding") from None
        if not text:
            return []
        fields: dict[str, float] = {}
        for pair in text.split(self.options.separator):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise RejectedInput(f"expected key=value, got {pair[:40]!r}", reason="malformed")
            try:
                number = float(value)
            except ValueError:
                raise RejectedInput(
                    f"{key}: not a number: {value[:40]!r}", reason="malformed"
                ) from None
            if math.isfinite(number):
                fields[key] = number
        return [RawSample(fields)]
'''

SAMPLE = """\
# A device printing lines of key=value pairs, e.g. "t=21.5 h=40".
[devices.@NAME@_1]
driver = "@NAME@"

## The serial port; prefer a /dev/serial/by-id/... path (`sensor-gateway ports`).
port = "/dev/ttyUSB0"

## Line settings (9600 baud 8N1 unless the device says otherwise).
# baudrate = 9600

## What separates the pairs.
# separator = " "

measurement = "@NAME@"
"""

CONFTEST = '''\
"""The gateway's driver test kit: virtual ports, scripted devices."""

pytest_plugins = ["gateway.testing.fixtures"]
'''

TESTS = '''\
"""The ``@NAME@`` driver: its protocol without I/O, then through the gateway's serial
runner on a virtual port."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from gateway.config import config_from_dict
from gateway.driver import RejectedInput
from gateway.testing import ScriptedDevice, SerialPty, run_serial_driver

from @MODULE@ import @CLS@, @OPTS@

SAMPLE = Path(__file__).resolve().parents[1] / "@MODULE@" / "sample.toml"


def driver(port: str = "/dev/null") -> @CLS@:
    return @CLS@("d", @OPTS@.model_validate({"port": port}))


def test_a_line_becomes_a_sample() -> None:
    (sample,) = driver().parse(b"t=21.5 h=40")
    assert sample.fields == {"t": 21.5, "h": 40.0}


def test_an_empty_line_is_no_reading() -> None:
    assert driver().parse(b"  ") == []


@pytest.mark.parametrize("line", [b"t21.5", b"t=warm", b"\\xff"])
def test_bad_lines_are_rejected(line: bytes) -> None:
    with pytest.raises(RejectedInput):
        driver().parse(line)


def test_the_sample_is_a_valid_configuration() -> None:
    data = tomllib.loads(SAMPLE.read_text())
    config = config_from_dict(
        {"gateway": {"state_dir": "/tmp"}, **data},
        drivers={"@NAME@": @CLS@},
        check_access=False,
    )
    assert list(config.devices) == ["@NAME@_1"]


async def test_readings_through_a_virtual_port(
    virtual_port: Callable[[], SerialPty], scripted_device: Callable[..., ScriptedDevice]
) -> None:
    pty = virtual_port()
    scripted_device(pty).stream(lambda i: f"seq={i} t=21.5\\n".encode(), rate_hz=50)
    run = await run_serial_driver(driver(pty.path), readings=5)
    seq = run.fields("seq")
    assert seq == list(range(int(seq[0]), int(seq[0]) + 5))  # none lost, none twice
'''
