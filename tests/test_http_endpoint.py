"""/healthz and /metrics of a real in-process gateway, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from gateway_proc import GatewayProcess
from servers import SerialPtyFactory, free_port

from gateway.app import Gateway
from gateway.config import config_from_dict
from gateway.errors import ConfigError
from gateway.service.http import parse_listen


def _get(url: str, method: str = "GET") -> tuple[int, str, str]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


async def get(url: str, method: str = "GET") -> tuple[int, str, str]:
    return await asyncio.to_thread(_get, url, method)


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[Gateway, asyncio.Task[None]]] = []

    async def start(**sections: Any) -> tuple[Gateway, str]:
        port = free_port()
        data: dict[str, Any] = {
            "gateway": {
                "state_dir": str(tmp_path / "state"),
                "clock_sync_check": False,
                "http_listen": f"127.0.0.1:{port}",
                "health_sink_failing": 1.0,
                "shutdown_grace": 0.5,
            },
            "spool": {"commit_interval": 0.05},
            **sections,
        }
        gw = Gateway(config_from_dict(data))
        ready = asyncio.Event()
        task = asyncio.create_task(gw.run(ready=ready.set))
        started.append((gw, task))
        await asyncio.wait_for(ready.wait(), 15)
        base = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(10):
            while True:
                try:
                    await get(base + "/healthz")
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        return gw, base

    yield start
    for gw, task in started:
        gw.stop()
        await asyncio.wait_for(task, 30)


async def test_healthy_gateway_and_its_metrics(
    gateway: Callable[..., Any], serial_pty: SerialPtyFactory
) -> None:
    pty = serial_pty()
    gw, base = await gateway(
        sinks={"local": {"enabled": True, "flush_interval": 0.05}},
        # A broker nobody listens for: its device is not up, whatever its own state.
        brokers={"default": {"host": "127.0.0.1", "port": free_port()}},
        devices={
            "boiler": {"driver": "line", "port": pty.path},
            "rooms": {"driver": "json", "topics": ["sensors/+/state"]},
        },
    )
    async with asyncio.timeout(10):
        while gw.pipeline.devices["boiler"].stats.state != "running":
            await asyncio.sleep(0.02)
    os.write(pty.master_fd, b"t=1.5\nt=2.5\nt=3.5\n")
    async with asyncio.timeout(10):
        while gw.pipeline.devices["boiler"].stats.readings < 3:
            await asyncio.sleep(0.02)
    assert await get(base + "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    code, ctype, body = await get(base + "/metrics")
    assert code == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    # The same counters as status.json: one source, two views.
    readings = gw.status()["devices"]["boiler"]["readings"]
    assert f'sensor_gateway_device_readings_total{{device="boiler"}} {float(readings)}' in body
    assert 'sensor_gateway_device_up{device="boiler"} 1.0' in body
    assert 'sensor_gateway_device_up{device="rooms"} 0.0' in body
    assert 'sensor_gateway_sink_points_written_total{sink="local"}' in body
    assert "sensor_gateway_spool_committed_total" in body
    assert "# TYPE sensor_gateway_spool_bytes gauge" in body
    assert (await get(base + "/nope"))[0] == 404
    assert (await get(base + "/healthz", "POST"))[0] == 405
    head = await get(base + "/healthz", "HEAD")
    assert head[:2] == (200, "text/plain; charset=utf-8")


async def test_healthz_503_once_a_sink_fails_longer_than_the_threshold(
    gateway: Callable[..., Any], serial_pty: SerialPtyFactory
) -> None:
    """InfluxDB at a port nobody listens on: retrying; after 1 s /healthz says why."""
    pty = serial_pty()
    gw, base = await gateway(
        sinks={
            "influxdb": {
                "url": f"http://127.0.0.1:{free_port()}",
                "org": "o",
                "bucket": "b",
                "token": "t",
                "flush_interval": 0.05,
                "retry_max_interval": 0.2,
            },
        },
        devices={"boiler": {"driver": "line", "port": pty.path}},
    )
    async with asyncio.timeout(10):
        while gw.pipeline.devices["boiler"].stats.state != "running":
            await asyncio.sleep(0.02)
    os.write(pty.master_fd, b"t=1.5\n")
    body = ""
    async with asyncio.timeout(15):
        while True:
            code, _, body = await get(base + "/healthz")
            if code == 503:
                break
            assert code == 200
            await asyncio.sleep(0.1)
    assert body.startswith("sink influxdb retrying for ")
    assert "refused" in body.lower() or "connect" in body.lower(), body
    _, _, metrics = await get(base + "/metrics")
    assert 'sensor_gateway_sink_behind{sink="influxdb"} 1.0' in metrics


def test_listen_address() -> None:
    assert parse_listen("127.0.0.1:9273") == ("127.0.0.1", 9273)
    assert parse_listen("[::1]:9273") == ("::1", 9273)
    assert parse_listen("9273") == ("127.0.0.1", 9273)
    with pytest.raises(ConfigError) as err:
        config_from_dict({"gateway": {"http_listen": "localhost:http"}})
    assert err.value.problems[0][0] == "gateway.http_listen"


@pytest.mark.integration
def test_a_stop_with_a_client_connected_logs_no_error(
    gateway_process: Callable[..., GatewayProcess],
) -> None:
    """A scraper's connection open at shutdown ends with the gateway, quietly: its handler
    was cancelled with the loop, which Python 3.11 logs as an error with a traceback."""
    port = free_port()
    gw = gateway_process(
        {"gateway": {"http_listen": f"127.0.0.1:{port}"}, "sinks": {"local": {"enabled": True}}}
    ).start()
    gw.wait_for_log("http endpoint listening")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /metr")  # half a request: the handler waits for the rest
        time.sleep(0.3)
        assert gw.stop() == 0, gw.log_tail()
    errors = [e for e in gw.log_events() if e.get("level") in ("error", "critical")]
    assert errors == [], errors
