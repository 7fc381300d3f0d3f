"""The OBIS codes of DSMR P1 telegrams (NL 2.2-5.0, BE e-MUCS, LU Smarty) as data.

Each code of the electricity meter (channel 0) maps to a field name, how its value is
read and the unit(s) it must carry. M-Bus devices (gas, water, heat on channels 1-4)
have their own small table. Codes not listed are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = ["MBUS", "MBUS_MEDIUM", "METER", "Spec"]

Kind = Literal["number", "count", "text", "time", "max_demand"]


@dataclass(frozen=True, slots=True)
class Spec:
    """How one OBIS line becomes a field: ``name``, the ``kind`` of value and its ``unit``."""

    name: str
    kind: Kind
    unit: str | None = None


def _n(name: str, unit: str) -> Spec:
    return Spec(name, "number", unit)


def _c(name: str) -> Spec:
    return Spec(name, "count")


METER: Final[dict[str, Spec]] = {
    "1.0.0": Spec("time", "time"),  # the telegram's timestamp (DSMR 4+)
    # Energy registers: delivered to the customer (import) and returned (export).
    "1.8.0": _n("energy_delivered_total", "kWh"),  # LU, BE
    "1.8.1": _n("energy_delivered_tariff1", "kWh"),
    "1.8.2": _n("energy_delivered_tariff2", "kWh"),
    "2.8.0": _n("energy_returned_total", "kWh"),
    "2.8.1": _n("energy_returned_tariff1", "kWh"),
    "2.8.2": _n("energy_returned_tariff2", "kWh"),
    "3.8.0": _n("reactive_energy_imported_total", "kvarh"),  # LU
    "4.8.0": _n("reactive_energy_exported_total", "kvarh"),  # LU
    "96.14.0": _c("tariff"),  # 1 = low/night (NL) or day (BE), 2 = normal/night
    # Power, whole meter and per phase.
    "1.7.0": _n("power_delivered", "kW"),
    "2.7.0": _n("power_returned", "kW"),
    "3.7.0": _n("reactive_power_imported", "kvar"),  # LU
    "4.7.0": _n("reactive_power_exported", "kvar"),  # LU
    "21.7.0": _n("power_delivered_l1", "kW"),
    "41.7.0": _n("power_delivered_l2", "kW"),
    "61.7.0": _n("power_delivered_l3", "kW"),
    "22.7.0": _n("power_returned_l1", "kW"),
    "42.7.0": _n("power_returned_l2", "kW"),
    "62.7.0": _n("power_returned_l3", "kW"),
    "32.7.0": _n("voltage_l1", "V"),
    "52.7.0": _n("voltage_l2", "V"),
    "72.7.0": _n("voltage_l3", "V"),
    "31.7.0": _n("current_l1", "A"),
    "51.7.0": _n("current_l2", "A"),
    "71.7.0": _n("current_l3", "A"),
    # Power quality counters.
    "96.7.21": _c("power_failures"),
    "96.7.9": _c("long_power_failures"),
    "32.32.0": _c("voltage_sags_l1"),
    "52.32.0": _c("voltage_sags_l2"),
    "72.32.0": _c("voltage_sags_l3"),
    "32.36.0": _c("voltage_swells_l1"),
    "52.36.0": _c("voltage_swells_l2"),
    "72.36.0": _c("voltage_swells_l3"),
    # Messages from the grid operator (hex-encoded text; stored only when not empty).
    "96.13.0": Spec("text_message", "text"),
    "96.13.1": Spec("message_code", "text"),
    # Belgium (e-MUCS): capacity tariff and limiter.
    "1.4.0": _n("average_demand", "kW"),
    "1.6.0": Spec("max_demand_month", "max_demand", "kW"),
    "31.4.0": _n("fuse_threshold_l1", "A"),
    "96.3.10": _c("breaker_state"),
}
"""Electricity meter codes (``0-0:`` / ``1-0:``) by their ``C.D.E`` part."""

MBUS: Final[dict[str, Kind | str]] = {
    "24.1.0": "medium",  # device type (see MBUS_MEDIUM)
    "24.2.1": "reading",  # DSMR 4+: (timestamp)(value*unit); BE water
    "24.2.3": "reading",  # BE gas (not temperature-corrected)
    "24.3.0": "legacy_reading",  # DSMR 2.2/3: (ts)(..)(..)(..)(code)(unit)(value)
    "24.4.0": "valve",
}
"""M-Bus device codes (``0-1:`` … ``0-4:``) by their ``C.D.E`` part."""

MBUS_MEDIUM: Final[dict[int, str]] = {
    3: "gas",
    4: "heat",
    6: "warm_water",
    7: "water",
    12: "heat",
}
"""EN 13757-3 device types → the field name prefix of an M-Bus reading (else ``mbus``)."""
