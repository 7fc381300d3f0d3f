"""MQTT over TLS against a real mosquitto with a generated CA: the gateway's own client."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest
from servers import MosquittoFactory

from gateway.app import Gateway
from gateway.config import Config, config_from_dict

pytestmark = pytest.mark.integration


def _certs(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (openssl)."""
    openssl = shutil.which("openssl") or "openssl"

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=tmp)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
        "-keyout", "ca.key", "-out", "ca.crt")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")  # fmt: skip
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")  # fmt: skip
    return tmp / "ca.crt", tmp / "server.crt", tmp / "server.key"


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_readings_flow_over_tls_and_a_wrong_ca_is_a_clear_error(
    tmp_path: Path, mosquitto_factory: MosquittoFactory, unique_name: str
) -> None:
    ca, cert, key = _certs(tmp_path)
    broker = mosquitto_factory(
        extra_conf=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"  # TLS on the listener
    )

    def config(ca_file: Path, state: str) -> Config:
        return config_from_dict(
            {
                "gateway": {"state_dir": str(tmp_path / state), "clock_sync_check": False},
                "sinks": {"local": {"flush_interval": 0.05}},
                "brokers": {
                    "home": {
                        "host": "127.0.0.1",
                        "port": broker.port,
                        "ca_file": str(ca_file),
                        "reconnect_initial": 0.05,
                        "reconnect_max": 0.2,
                    }
                },
                "devices": {
                    "d": {"driver": "json", "broker": "home", "topics": [f"{unique_name}/+"]}
                },
            }
        )

    gateway = Gateway(config(ca, "ok"))
    task = asyncio.create_task(gateway.run())
    try:
        await _until(lambda: gateway.hubs["home"].stats.state == "connected")
        context = ssl.create_default_context(cafile=str(ca))
        async with aiomqtt.Client("127.0.0.1", broker.port, tls_context=context) as client:
            await client.publish(f"{unique_name}/x", b'{"t": 1}', qos=1)
        await _until(lambda: gateway.pipeline.devices["d"].stats.readings == 1)
    finally:
        gateway.stop()
        await task

    other = tmp_path / "other"
    other.mkdir()
    other_ca, _, _ = _certs(other)  # a CA that did not sign the broker's certificate
    gateway = Gateway(config(other_ca, "bad"))
    task = asyncio.create_task(gateway.run())
    try:
        hub = gateway.hubs["home"]
        await _until(lambda: hub.stats.last_error != "")
        assert "CERTIFICATE_VERIFY_FAILED" in hub.stats.last_error
        assert hub.stats.state == "disconnected"
    finally:
        gateway.stop()
        await task
