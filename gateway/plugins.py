"""Finds drivers: built-in and third-party, all through one entry-point group.

A third-party driver is an ordinary Python package declaring, in its pyproject.toml::

    [project.entry-points."sensor_gateway.devices"]
    my_sensor = "my_package:MySensorDriver"

After ``pip install``, ``sensor-gateway drivers`` lists it and configs can use
``driver = "my_sensor"``. The gateway itself is never edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from gateway.driver import Driver

ENTRY_POINT_GROUP = "sensor_gateway.devices"


@dataclass(frozen=True, slots=True)
class PluginProblem:
    """A registered driver that could not be loaded, and why."""

    name: str
    target: str
    error: str


@dataclass(frozen=True, slots=True)
class DriverSet:
    """The drivers found, plus those that failed to load."""

    drivers: dict[str, type[Driver[Any]]]
    problems: tuple[PluginProblem, ...]
    origins: dict[str, str]


@cache
def discover() -> DriverSet:
    """Load every driver registered in the ``sensor_gateway.devices`` group (cached)."""
    drivers: dict[str, type[Driver[Any]]] = {}
    origins: dict[str, str] = {}
    problems: list[PluginProblem] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
        except Exception as err:  # a broken plugin must not take the gateway down
            problems.append(PluginProblem(ep.name, ep.value, f"{type(err).__name__}: {err}"))
            continue
        if not (isinstance(cls, type) and issubclass(cls, Driver)):
            problems.append(
                PluginProblem(ep.name, ep.value, "is not a gateway.driver.Driver subclass")
            )
            continue
        clash = _core_key_clash(cls)
        if clash:
            problems.append(
                PluginProblem(
                    ep.name,
                    ep.value,
                    f"its options {clash} clash with the keys every device has; rename them",
                )
            )
            continue
        drivers[ep.name] = cls
        origins[ep.name] = ep.dist.name if ep.dist is not None else "?"
    # Running from a source tree without `pip install`: the built-ins are still there.
    if "line" not in drivers or "json" not in drivers:
        from devices.json import JsonDriver
        from devices.line import LineDriver

        drivers.setdefault("line", LineDriver)
        drivers.setdefault("json", JsonDriver)
        origins.setdefault("line", "sensor-gateway")
        origins.setdefault("json", "sensor-gateway")
    return DriverSet(drivers, tuple(problems), origins)


def _core_key_clash(cls: type[Driver[Any]]) -> list[str]:
    from gateway.config import DeviceSection

    return sorted(set(cls.Options.model_fields) & set(DeviceSection.model_fields))


def load_drivers() -> dict[str, type[Driver[Any]]]:
    """Name → driver class for every driver that loaded."""
    return discover().drivers
