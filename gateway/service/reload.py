"""What a configuration reload (SIGHUP) changes: the difference between two configs.

Pure: compares the running :class:`~gateway.config.Config` with a newly loaded one and
says which devices, brokers and sinks to restart, add or remove, and which changes only a
restart of the process applies (the state directory, the spool, the ``[gateway]``
section, a sink turned on or off). :meth:`gateway.app.Gateway.reload` carries it out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import structlog

from gateway.config import Config, DeviceSpec
from gateway.driver import MqttDriver, MqttOptions
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.app import Gateway

log = structlog.get_logger("gateway.reload")


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The changes, by name."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    brokers: list[str] = field(default_factory=list)
    """Brokers whose connection restarts: its settings or its devices changed."""
    sinks: list[str] = field(default_factory=list)
    """Sinks rebuilt with their new settings (their spool position is kept)."""
    needs_restart: list[str] = field(default_factory=list)
    """Config paths whose change applies only after a restart of the process."""


def enabled_devices(config: Config) -> dict[str, DeviceSpec]:
    """The devices that run."""
    return {n: s for n, s in config.devices.items() if s.section.enabled}


def broker_of(spec: DeviceSpec) -> str | None:
    """The broker an MQTT device uses (None for a serial device)."""
    if issubclass(spec.driver_cls, MqttDriver) and isinstance(spec.options, MqttOptions):
        return spec.options.broker
    return None


def _same(a: DeviceSpec, b: DeviceSpec) -> bool:
    return a.driver_cls is b.driver_cls and a.section == b.section and a.options == b.options


def plan(old: Config, new: Config) -> ReloadPlan:
    """The changes from ``old`` to ``new``."""
    before, after = enabled_devices(old), enabled_devices(new)
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(n for n in set(before) & set(after) if not _same(before[n], after[n]))
    unchanged = sorted(n for n in set(before) & set(after) if _same(before[n], after[n]))
    brokers: set[str] = set()
    for name in added + changed:
        if (b := broker_of(after[name])) is not None:
            brokers.add(b)
    for name in removed + changed:
        if (b := broker_of(before[name])) is not None:
            brokers.add(b)
    for name, cfg in new.brokers.items():
        if name in old.brokers and old.brokers[name] != cfg:
            brokers.add(name)
    old_sinks, sinks = sink_settings(old), sink_settings(new)
    needs_restart = [
        path
        for path, a, b in (
            ("gateway", old.gateway, new.gateway),
            ("spool", old.spool, new.spool),
        )
        if a != b
    ]
    if set(old_sinks) != set(sinks):
        needs_restart.append("sinks (turned on or off)")
    changed_sinks = sorted(n for n in set(old_sinks) & set(sinks) if old_sinks[n] != sinks[n])
    return ReloadPlan(
        added=added,
        removed=removed,
        changed=changed,
        unchanged=unchanged,
        brokers=sorted(brokers),
        sinks=changed_sinks,
        needs_restart=needs_restart,
    )


def sink_settings(config: Config) -> dict[str, object]:
    """The running sinks' settings by sink name."""
    found: dict[str, object] = {}
    if config.influx is not None:
        found["influxdb"] = config.influx
    if config.local_enabled:
        found["local"] = config.sinks.local
    return found


@dataclass(slots=True)
class ReloadStats:
    """Reloads done and refused, for status."""

    done: int = 0
    rejected: int = 0
    last_error: str = ""
    last_at: float = 0.0

    def failed(self, reason: str) -> None:
        self.rejected += 1
        self.last_error = reason
        self.last_at = time.time()


async def reload_gateway(gw: Gateway) -> None:
    """Re-read ``gw``'s configuration file and apply the difference to the running gateway.

    An invalid configuration changes nothing: every problem is logged (one line each, with
    its TOML path) and the gateway runs on with what it has.
    """
    from gateway.config import load_config

    source = gw.config.sources[0] if gw.config.sources else None
    if source is None:
        log.warning("SIGHUP: this gateway was not started from a configuration file")
        return
    gw.notify.reloading()
    log.info("SIGHUP: reloading the configuration", config=str(source))
    try:
        new = await asyncio.to_thread(load_config, source)
    except ConfigError as err:
        for path, message in err.problems:
            log.error("configuration problem", config=str(source), path=path, problem=message)
        gw.reloads.failed(f"{len(err.problems)} problem(s)")
        log.error(
            "configuration reload rejected; still running with the previous configuration",
            config=str(source),
            problems=len(err.problems),
        )
        return
    old = gw.config
    change = plan(old, new)
    if change.needs_restart:
        log.warning(
            "changes that apply only after a restart (systemctl restart sensor-gateway); "
            "running on with the previous settings there",
            sections=change.needs_restart,
        )
    specs = enabled_devices(new)
    await gw.apply_devices(
        specs, new.brokers, restart=change.removed + change.changed, restart_brokers=change.brokers
    )
    sinks_toggled = set(sink_settings(old)) != set(sink_settings(new))
    if change.sinks and not sinks_toggled:
        await gw.replace_sinks(new, change.sinks)
    gw.config = replace(
        old,
        sinks=old.sinks if sinks_toggled else new.sinks,
        brokers=new.brokers,
        devices=new.devices,
        sources=new.sources,
    )
    gw.reloads.done += 1
    gw.reloads.last_at = time.time()
    log.info(
        "configuration reloaded",
        added=change.added,
        removed=change.removed,
        changed=change.changed,
        unchanged=len(change.unchanged),
        brokers_restarted=change.brokers,
        sinks_reconfigured=change.sinks if not sinks_toggled else [],
    )
