"""Bad input gets a clear error and changes nothing else (ARCHITECTURE.md, invariant 3).

Each case runs a real gateway in-process (real spool, real local store, real
pseudo-terminals or the real mosquitto) with a device that receives the bad input and
a healthy device beside it. Both get good readings before and after. Every case checks:

* the warning names the device (and the topic, for MQTT) and the reason;
* the device's counter in ``status.json`` counts it under that reason;
* the healthy device's readings keep flowing and it reports nothing;
* every good reading, before and after, is in the local store, exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from servers import HOST, Mosquitto, SerialPty, SerialPtyFactory
from structlog.testing import capture_logs

from devices._sink import write_all_async
from devices.json.simulator import HOSTILE_PAYLOADS
from devices.line.simulator import LineSimulator
from gateway import query
from gateway.app import Gateway
from gateway.config import config_from_dict
from gateway.service.rundir import find_status

# Rules that make the fields numeric, so a string there is "not_numeric".
FIELD_RULES: dict[str, Any] = {
    "seq": {"type": "int"},
    "temperature": {"min": -40.0, "max": 85.0},
}
WAIT_S = 10.0


@dataclass
class Running:
    """A gateway running in-process, with what it logged."""

    gateway: Gateway
    task: asyncio.Task[None]
    logs: list[MutableMapping[str, Any]]
    state_dir: Path

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Poll ``predicate``; fail with ``what`` (or the gateway's own error) on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while not predicate():
            if self.task.done():
                self.task.result()  # raises the gateway's error, if any
                raise AssertionError(f"the gateway stopped while waiting for {what}")
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
            await asyncio.sleep(0.01)

    def stats(self, device: str) -> Any:
        return self.gateway.pipeline.devices[device].stats

    def points_written(self) -> int:
        return sum(loop.stats.points_written for loop in self.gateway.loops)

    def warnings(self, device: str) -> list[MutableMapping[str, Any]]:
        return [e for e in self.logs if e["log_level"] == "warning" and e.get("device") == device]

    def status_file(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(find_status(self.state_dir).read_text())
        return doc

    def stored_seqs(self, device: str) -> list[int]:
        rows = query.run_query(
            self.state_dir / "readings.db",
            query.QueryRequest(device=device, fields=["seq"], limit=None),
        )
        return sorted(int(r.value) for r in rows)


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, devices: dict[str, Any], **top: Any
) -> AsyncIterator[Running]:
    """Run a gateway for ``devices`` (local store only) until the block ends, then stop it."""
    state_dir = tmp_path / "state"
    config = config_from_dict(
        {
            "gateway": {"state_dir": str(state_dir), "clock_sync_check": False},
            "spool": {"commit_interval": "20ms"},
            "sinks": {"local": {"flush_interval": "20ms"}},
            "devices": devices,
            **top,
        },
        env={},
    )
    with capture_logs() as logs:
        gateway = Gateway(config)
        task = asyncio.create_task(gateway.run(), name="gateway")
        run = Running(gateway, task, logs, state_dir)
        try:
            yield run
        finally:
            gateway.stop()
            async with asyncio.timeout(WAIT_S):
                await task


# --- serial ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SerialCase:
    data: bytes
    """What the misbehaving device sends."""
    rejected: dict[str, int] = field(default_factory=dict)
    """Frames or readings refused, by reason."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Fields dropped from readings that were kept, by reason."""
    stored: tuple[int, ...] = ()
    """seq values the bad input still stores (readings that lost one field)."""
    swallows_next_line: bool = False
    """The framer cannot know where unterminated garbage ends: the next line goes with it."""


SERIAL_CASES = {
    "malformed_line": SerialCase(b"temperature 21.5 humidity\n", {"malformed": 1}),
    "string_for_number": SerialCase(
        b"seq=100 temperature=warm\n", dropped={"not_numeric": 1}, stored=(100,)
    ),
    "only_field_not_numeric": SerialCase(
        b"temperature=warm\n", {"no_valid_fields": 1}, {"not_numeric": 1}
    ),
    "garbage_bytes": SerialCase(bytes(range(32)).replace(b"\n", b"") + b"\n", {"malformed": 1}),
    "invalid_utf8": SerialCase(LineSimulator(format="kv").garbage("invalid_utf8"), {"encoding": 1}),
    "nan_inf_overflow": SerialCase(
        b"seq=101 temperature=nan\nseq=102 temperature=-Infinity\nseq=103 temperature=1e999\n",
        dropped={"nan": 3},
        stored=(101, 102, 103),
    ),
    "megabyte_without_newline": SerialCase(
        b"x" * 1_000_000, {"frame_too_long": 1}, swallows_next_line=True
    ),
    "overlong_line": SerialCase(b"y" * 5000 + b"\n", {"frame_too_long": 1}),
}


async def _write(pty: SerialPty, data: bytes) -> None:
    await write_all_async(pty.master_fd, data)


def _kv(seq: int) -> bytes:
    return f"seq={seq} temperature={20 + seq / 10} humidity=40\n".encode()


@pytest.mark.parametrize("case", SERIAL_CASES.values(), ids=SERIAL_CASES.keys())
async def test_bad_serial_input(
    case: SerialCase, tmp_path: Path, serial_pty: SerialPtyFactory
) -> None:
    bad_pty, good_pty = serial_pty(), serial_pty()
    devices = {
        name: {"driver": "line", "port": pty.path, "measurement": "climate", "fields": FIELD_RULES}
        for name, pty in (("bad", bad_pty), ("good", good_pty))
    }
    async with running_gateway(tmp_path, devices) as gw:
        await gw.until(
            lambda: gw.stats("bad").state == gw.stats("good").state == "running", "ports open"
        )
        for pty in (bad_pty, good_pty):
            await _write(pty, _kv(0) + _kv(1))
        await gw.until(lambda: gw.points_written() == 4, "the first readings stored")
        assert gw.warnings("bad") == []

        await _write(bad_pty, case.data)
        if case.swallows_next_line:
            await _write(bad_pty, b"seq=999 swallowed=true\n")
        for pty in (bad_pty, good_pty):
            await _write(pty, _kv(2) + _kv(3))
        expected_readings = 4 + len(case.stored)
        await gw.until(
            lambda: (
                gw.stats("bad").readings == expected_readings and gw.stats("good").readings == 4
            ),
            "the later readings",
        )
        await gw.until(
            lambda: gw.points_written() == 4 + expected_readings, "the later readings stored"
        )

    status = gw.status_file()
    bad, good = status["devices"]["bad"], status["devices"]["good"]
    assert bad["rejected"] == case.rejected
    assert bad["dropped_fields"] == case.dropped
    assert bad["readings"] == expected_readings
    assert bad["restarts"] == 0, "bad input must not restart the device"
    assert good["rejected"] == good["dropped_fields"] == {}
    assert good["readings"] == 4

    warnings = gw.warnings("bad")
    reasons: dict[str, int] = {}
    for event in warnings:
        reasons[event["reason"]] = reasons.get(event["reason"], 0) + 1
        if event["reason"] in case.dropped:
            assert event["event"] == "field dropped"
            assert event["field"] == "temperature"
        elif event["reason"] != "no_valid_fields":
            assert event["event"].startswith("input rejected: ")
    assert reasons == {**case.rejected, **case.dropped}
    assert gw.warnings("good") == []

    assert gw.stored_seqs("bad") == sorted([0, 1, 2, 3, *case.stored])
    assert gw.stored_seqs("good") == [0, 1, 2, 3]


# --- MQTT ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttCase:
    payloads: tuple[bytes, ...]
    counter: str
    """"rejected", "dropped_fields" or "unrouted" (counted by the broker, not a device)."""
    reason: str
    stored: tuple[int, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    topic_level: str = "kitchen"
    """The {room} level of the topic the bad payloads go to."""


MQTT_CASES = {
    "malformed_json": MqttCase((b'{"seq": 5, "temperature": ',), "rejected", "malformed"),
    "plain_text": MqttCase((HOSTILE_PAYLOADS["plain_text"],), "rejected", "malformed"),
    "string_for_number": MqttCase(
        (b'{"seq": 100, "temperature": "hot"}',), "dropped_fields", "not_numeric", (100,)
    ),
    "unknown_topic": MqttCase(
        (b'{"seq": 100, "temperature": 20.0}',), "unrouted", "unrouted", topic_level=""
    ),
    "over_max_payload_bytes": MqttCase(
        (json.dumps({"seq": 100, "pad": "z" * 2000}).encode(),),
        "rejected",
        "too_large",
        options={"max_payload_bytes": "1KiB"},
    ),
    "invalid_utf8": MqttCase((HOSTILE_PAYLOADS["invalid_utf8"],), "rejected", "encoding"),
    "nan_inf_overflow": MqttCase(
        (
            b'{"seq": 101, "temperature": NaN}',
            b'{"seq": 102, "temperature": -Infinity}',
            b'{"seq": 103, "temperature": 1e999}',
        ),
        "dropped_fields",
        "nan",
        (101, 102, 103),
    ),
    "deep_nesting_100k": MqttCase(
        (HOSTILE_PAYLOADS["deep_nesting"],),
        "rejected",
        "malformed",
        # 600 kB: let it past the size cap, so the JSON parser itself meets it.
        options={"max_payload_bytes": "1MiB"},
    ),
    "huge_integer": MqttCase((HOSTILE_PAYLOADS["huge_int"],), "rejected", "malformed"),
    "not_an_object": MqttCase((HOSTILE_PAYLOADS["not_object"],), "rejected", "not_object"),
    "empty": MqttCase((HOSTILE_PAYLOADS["empty"],), "rejected", "empty"),
}


def _json(seq: int) -> bytes:
    return json.dumps({"seq": seq, "temperature": 20 + seq / 10}).encode()


@pytest.mark.integration
@pytest.mark.parametrize("case", MQTT_CASES.values(), ids=MQTT_CASES.keys())
async def test_bad_mqtt_input(
    case: MqttCase, tmp_path: Path, mosquitto: Mosquitto, unique_name: str
) -> None:
    u = unique_name
    devices = {
        name: {
            "driver": "json",
            "topics": [f"{u}/{name}/{{room}}/state"],
            "measurement": "climate",
            "fields": FIELD_RULES,
            **(case.options if name == "bad" else {}),
        }
        for name in ("bad", "good")
    }
    brokers = {"default": {"host": HOST, "port": mosquitto.port, "client_id": f"gw-{u}"}}
    bad_topic = f"{u}/bad/{case.topic_level}/state"
    async with (
        running_gateway(tmp_path, devices, brokers=brokers) as gw,
        aiomqtt.Client(HOST, mosquitto.port, identifier=f"pub-{u}") as client,
    ):
        hub = gw.gateway.hubs["default"]
        await gw.until(lambda: hub.stats.state == "connected", "the broker connection")

        async def publish(seqs: list[int]) -> None:
            for name in ("bad", "good"):
                for seq in seqs:
                    await client.publish(f"{u}/{name}/kitchen/state", _json(seq), qos=1)

        await publish([0, 1])
        await gw.until(lambda: gw.points_written() == 4, "the first readings stored")
        for payload in case.payloads:
            await client.publish(bad_topic, payload, qos=1)
        await publish([2, 3])
        expected_readings = 4 + len(case.stored)
        expected_messages = 8 + len(case.payloads)
        await gw.until(
            lambda: (
                hub.stats.messages == expected_messages
                and gw.stats("bad").readings == expected_readings
                and gw.stats("good").readings == 4
            ),
            "every message handled",
        )
        await gw.until(
            lambda: gw.points_written() == 4 + expected_readings, "the later readings stored"
        )

    status = gw.status_file()
    bad, good = status["devices"]["bad"], status["devices"]["good"]
    broker = status["brokers"]["default"]
    assert broker["messages"] == expected_messages
    assert good["rejected"] == good["dropped_fields"] == {}
    assert good["readings"] == good["frames"] == 4
    assert bad["readings"] == expected_readings
    warnings = gw.warnings("bad")
    if case.counter == "unrouted":
        # Counted by the broker connection; no device saw it, nothing else happened.
        assert broker["unrouted"] == len(case.payloads)
        assert bad["frames"] == 4
        assert bad["rejected"] == bad["dropped_fields"] == {}
        assert warnings == []
    else:
        assert broker["unrouted"] == 0
        assert bad[case.counter] == {case.reason: len(case.payloads)}
        other = "dropped_fields" if case.counter == "rejected" else "rejected"
        assert bad[other] == {}
        assert len(warnings) == len(case.payloads), warnings
        for event in warnings:
            assert event["reason"] == case.reason
            assert event["topic"] == bad_topic
        if case.counter == "dropped_fields":
            assert {e["field"] for e in warnings} == {"temperature"}
        else:
            assert all(e["event"].startswith("input rejected: ") for e in warnings)
    assert gw.warnings("good") == []

    assert gw.stored_seqs("bad") == sorted([0, 1, 2, 3, *case.stored])
    assert gw.stored_seqs("good") == [0, 1, 2, 3]


@pytest.mark.integration
async def test_a_rejected_reason_is_said_in_words(
    tmp_path: Path, mosquitto: Mosquitto, unique_name: str
) -> None:
    """The log line explains each rejection well enough to act on it."""
    u = unique_name
    devices = {
        "boiler": {"driver": "json", "topics": [f"{u}/{{room}}/state"], "max_payload_bytes": 64}
    }
    brokers = {"default": {"host": HOST, "port": mosquitto.port, "client_id": f"gw-{u}"}}
    sent = {
        f"{u}/a/state": b'{"seq": 1,',
        f"{u}/b/state": b"x" * 100,
        f"{u}/c/state": HOSTILE_PAYLOADS["invalid_utf8"],
        f"{u}/d/state": b"[1, 2]",
    }
    async with (
        running_gateway(tmp_path, devices, brokers=brokers) as gw,
        aiomqtt.Client(HOST, mosquitto.port, identifier=f"pub-{u}") as client,
    ):
        hub = gw.gateway.hubs["default"]
        await gw.until(lambda: hub.stats.state == "connected", "the broker connection")
        for topic, payload in sent.items():
            await client.publish(topic, payload, qos=1)
        await gw.until(lambda: len(gw.warnings("boiler")) == len(sent), "every rejection logged")
    said = {e["topic"]: e["event"] for e in gw.warnings("boiler")}
    assert said == {
        f"{u}/a/state": "input rejected: invalid JSON: "
        "Expecting property name enclosed in double quotes at character 10",
        f"{u}/b/state": "input rejected: payload of 100 bytes is over the 64-byte limit "
        "(max_payload_bytes)",
        f"{u}/c/state": "input rejected: invalid utf-8 at byte 17 (invalid start byte)",
        f"{u}/d/state": 'input rejected: expected a JSON object, got "[1, 2]"; '
        "set value_field for bare values",
    }
