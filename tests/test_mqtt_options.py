"""Broker options: the TLS port default."""

from __future__ import annotations

from gateway.config import BrokerSection


def test_tls_defaults_to_port_8883() -> None:
    assert BrokerSection(host="broker").port == 1883
    assert BrokerSection(host="broker", tls=True).port == 8883
    assert BrokerSection(host="broker", ca_file=__file__).port == 8883
    assert BrokerSection(host="broker", tls=True, port=1883).port == 1883
