"""The documentation names every option, and the front door matches CI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import (
    BrokerSection,
    GatewaySection,
    InfluxSection,
    LocalSection,
    SpoolSection,
)
from gateway.pipeline.normalize import FieldRule, NormalizeConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = (ROOT / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize(
    "model",
    [GatewaySection, SpoolSection, InfluxSection, LocalSection, BrokerSection, NormalizeConfig, FieldRule],
)
def test_every_option_is_documented(model: type) -> None:
    missing = [name for name in model.model_fields if f"`{name}`" not in CONFIG_DOC]
    assert not missing, f"{model.__name__} options missing from docs/configuration.md: {missing}"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in readme
    assert re.search(r"^scripts/test\b", ci, re.MULTILINE)


def test_readme_demo_command_exists() -> None:
    assert (ROOT / "scripts" / "demo").stat().st_mode & 0o111
    assert "scripts/demo" in (ROOT / "README.md").read_text()
