"""Loading and checking the data-driven driver cases (see ``__init__.py`` for the layout)."""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.driver import Driver, MqttDriver, RawSample, RejectedInput, SerialDriver

CASES_DIR = Path(__file__).parent
# Real MQTT payload shapes (tests/data/README.md says where they come from).
RECORDED_MQTT = CASES_DIR.parent / "data" / "mqtt" / "payloads.jsonl"
# A serial case needs no real port: the driver never opens it.
_DUMMY_PORT = "/dev/null"


@dataclass(frozen=True, slots=True)
class Case:
    """One case folder, loaded."""

    name: str
    path: Path
    options: dict[str, Any]
    inputs: list[Any]
    expected: Any
    stream: bytes | None = None


def cases(driver: str) -> list[Any]:
    """``pytest.param`` per case folder of ``driver``, with the folder name as id."""
    root = CASES_DIR / driver
    params = []
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        params.append(pytest.param(_load(path), id=path.name))
    return params


def _load(path: Path) -> Case:
    with (path / "config.toml").open("rb") as fh:
        options = tomllib.load(fh)
    expected = json.loads((path / "expected.json").read_text(encoding="utf-8"))
    inputs: list[Any] = []
    stream = None
    if (path / "input.stream").exists():
        stream = (path / "input.stream").read_bytes()
    elif (path / "input.txt").exists():
        data = (path / "input.txt").read_bytes()
        inputs = data.split(b"\n")
        if inputs and inputs[-1] == b"":
            inputs.pop()
    elif (path / "input.jsonl").exists():
        for line in (path / "input.jsonl").read_text(encoding="utf-8").splitlines():
            if line.strip():
                msg = json.loads(line)
                payload = (
                    bytes.fromhex(msg["payload_hex"])
                    if "payload_hex" in msg
                    else msg["payload"].encode()
                )
                inputs.append((msg["topic"], payload))
    return Case(path.name, path, options, inputs, expected, stream)


def run(case: Case, driver_cls: type[Driver[Any]]) -> None:
    """Build the driver from the case's options and check every input's outcome."""
    options = dict(case.options)
    if issubclass(driver_cls, SerialDriver):
        options.setdefault("port", _DUMMY_PORT)
    if isinstance(case.expected, dict):
        wanted = case.expected["init_error"]
        with pytest.raises((ValidationError, ValueError)) as info:
            driver_cls(case.name, driver_cls.Options.model_validate(options))
        assert wanted in str(info.value)
        return
    driver = driver_cls(case.name, driver_cls.Options.model_validate(options))
    inputs = case.inputs
    if case.stream is not None:
        assert isinstance(driver, SerialDriver)
        inputs = driver.framer().feed(case.stream)
    assert len(inputs) == len(case.expected), "expected.json needs one entry per input"
    for i, (item, want) in enumerate(zip(inputs, case.expected, strict=True)):
        where = f"{case.path.name} input #{i + 1} {item!r:.80}"
        got: list[RawSample] | RejectedInput
        try:
            got = list(_decode(driver, item))
        except RejectedInput as err:
            got = err
        if isinstance(got, RejectedInput):
            assert isinstance(want, dict), f"{where}: rejected ({got.reason}: {got}), not {want}"
            assert got.reason == want["error"]["reason"], f"{where}: {got.reason}: {got}"
            assert want["error"].get("message_contains", "") in str(got), f"{where}: {got}"
            continue
        assert isinstance(want, list), f"{where}: decoded {got}, expected {want}"
        actual = [_as_dict(s) for s in got]
        assert _same(actual, [_normal(w) for w in want]), f"{where}: got {actual}"


def _decode(driver: Driver[Any], item: Any) -> Iterable[RawSample]:
    if isinstance(driver, SerialDriver):
        return driver.parse(item)
    assert isinstance(driver, MqttDriver)
    topic, payload = item
    return driver.decode(topic, payload)


def _as_dict(sample: RawSample) -> dict[str, Any]:
    return {"fields": dict(sample.fields), "tags": dict(sample.tags), "time_ns": sample.time_ns}


def _normal(want: dict[str, Any]) -> dict[str, Any]:
    return {"fields": want["fields"], "tags": want.get("tags", {}), "time_ns": want.get("time_ns")}


def _same(got: Any, want: Any) -> bool:
    """Equal, with types (1 is not 1.0 nor True) and NaN equal to NaN."""
    if type(got) is not type(want):
        return False
    if isinstance(got, dict):
        return got.keys() == want.keys() and all(_same(got[k], want[k]) for k in got)
    if isinstance(got, list):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want, strict=True))
    if isinstance(got, float) and math.isnan(got):
        return math.isnan(want)
    return bool(got == want)


def decode_stream(
    driver: SerialDriver[Any], data: bytes
) -> tuple[list[RawSample], list[str], int]:
    """Cut ``data`` with the driver's own framer and parse every frame: the samples, the
    reasons of the frames it rejected, and how many frames the framer discarded."""
    framer = driver.framer()
    samples: list[RawSample] = []
    reasons: list[str] = []
    for frame in framer.feed(data):
        try:
            samples += driver.parse(frame)
        except RejectedInput as err:
            reasons.append(err.reason)
    return samples, reasons, framer.overflows


def recorded_payloads(
    driver: str, is_source: Callable[[str], bool]
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (topic, payload) of every recorded message whose ``source`` passes
    ``is_source``, and as many first inputs of the driver's ``recorded`` case."""
    recorded = [json.loads(line) for line in RECORDED_MQTT.read_text().splitlines() if line]
    case = CASES_DIR / driver / "recorded" / "input.jsonl"
    inputs = [json.loads(line) for line in case.read_text().splitlines() if line]
    want = [(m["topic"], m["payload"]) for m in recorded if is_source(m["source"])]
    return want, [(m["topic"], m["payload"]) for m in inputs[: len(want)]]
