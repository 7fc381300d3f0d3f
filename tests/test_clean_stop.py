"""A clean stop leaves nothing behind for a healthy sink (the real gateway process).

Regression: the self-metrics job kept running through the drain, after the spool's
last commit; its readings were committed at close and waited in the spool for the
next start, so every clean stop left the local store behind.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from gateway_proc import GatewayProcess

from gateway.testing.servers import free_port


@pytest.mark.integration
def test_a_clean_stop_leaves_a_healthy_sink_nothing_to_deliver(
    gateway_process: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_process(
        {
            # The drain lasts the whole grace time: InfluxDB is not there.
            "gateway": {"metrics_interval": "50ms", "shutdown_grace": "1s"},
            "sinks": {
                "influxdb": {
                    "url": f"http://127.0.0.1:{free_port()}",
                    "bucket": "b",
                    "token": "t",
                },
                "local": {"enabled": True, "flush_interval": "20ms"},
            },
            "spool": {"commit_interval": "20ms"},
        }
    ).start()
    time.sleep(0.5)  # some self-metrics readings flow to the local store
    assert gw.stop() == 0, gw.log_tail()
    doc = gw.status()
    assert doc["sinks"]["local"]["points_written"] > 0
    assert doc["sinks"]["local"]["behind"] == 0, doc["sinks"]["local"]
    assert doc["sinks"]["influxdb"]["behind"] > 0  # the drain did wait for it
