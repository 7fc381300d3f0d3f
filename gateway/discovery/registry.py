"""One broker's discovery: configs in, gateway devices added, changed and removed.

:class:`Discovery` receives every message under the discovery prefixes (the broker's
hub routes them here, on the event loop), keeps the accepted entities grouped into
gateway devices, and tells its :class:`DeviceHost` (the running gateway) to add,
replace or remove a device. Nothing here does I/O: the accepted configs go to the
:class:`~gateway.discovery.store.DiscoveredStore`, which the gateway saves off the loop.

Rules (docs/discovery.md): one gateway device per Home Assistant device (its first
identifier) or per Tasmota; a configured device of the same name, or a name matched
by ``discovery_exclude``, wins over a discovered one; between two discovered ones the
first wins; at most ``discovery_max_devices`` devices. Every refusal is counted under
its reason and logged with the config topic (rate-limited per reason).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import structlog

from devices._parsing import decode_text, loads_json
from devices.tasmota import TasmotaDriver, TasmotaOptions
from gateway.config import BrokerSection
from gateway.discovery.driver import DiscoveredDriver, FieldPlan, plan_field, snake
from gateway.discovery.homeassistant import (
    Availability,
    DiscoveryError,
    Entity,
    Ignored,
    Removed,
    parse_config,
)
from gateway.discovery.store import DiscoveredStore
from gateway.discovery.tasmota import (
    TASMOTA_PREFIX,
    TasmotaDevice,
    mac_of,
    parse_tasmota_config,
    parse_tasmota_sensors,
)
from gateway.driver import MqttDriver, MqttOptions
from gateway.errors import RejectedInput
from gateway.mqtt.hub import MqttHub
from gateway.pipeline.intake import Pipeline
from gateway.pipeline.normalize import NormalizeConfig
from gateway.telemetry.stats import RateLimit

__all__ = ["MAX_CONFIG_BYTES", "DeviceHost", "Discovery", "DiscoveryStats", "place_discovered"]

# Discovery configs are a few hundred bytes; a per-device config with many components a
# few KiB. Anything larger is not a config we want to parse.
MAX_CONFIG_BYTES: Final = 64 * 1024
# Entities one discovered device may have (a big multi-sensor has a few dozen).
MAX_ENTITIES_PER_DEVICE: Final = 100
# Tasmota "sensors" messages kept while their "config" has not arrived yet.
MAX_PENDING_SENSORS: Final = 64


class DeviceHost(Protocol):
    """Where discovered devices go (the gateway; a test's stand-in)."""

    def add_discovered(self, name: str, driver: MqttDriver[Any], config: NormalizeConfig) -> None:
        """Add the device, or replace the one of that name (keeping its counters)."""

    def remove_discovered(self, name: str) -> None:
        """Stop routing to the device and forget it."""


def place_discovered(
    pipeline: Pipeline,
    hub: MqttHub,
    name: str,
    driver: MqttDriver[Any],
    config: NormalizeConfig,
    running: bool,
) -> None:
    """:meth:`DeviceHost.add_discovered` for a pipeline and a hub: a device already there
    is replaced and keeps its counters; a new one on a ``running`` hub is running."""
    routed = hub.remove_device(name)
    # The old entry may be in the pipeline only (its hub was rebuilt by a reload).
    old = pipeline.remove_device(name) or routed
    entry = pipeline.device(name, config, driver.units)
    if old is not None:
        entry.stats = old.stats
    elif running:
        entry.stats.state = "running"
    hub.add_device(driver, entry)


@dataclass(slots=True)
class DiscoveryStats:
    """Counters of one broker's discovery, for status."""

    configs: int = 0
    devices: int = 0
    entities: int = 0
    added: int = 0
    removed: int = 0
    ignored: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    overridden: int = 0
    excluded: int = 0
    over_cap: int = 0
    last_error: str = ""


@dataclass(slots=True)
class _Group:
    gid: str
    name: str
    node: str
    source: str
    first_topic: str
    plans: dict[str, FieldPlan] = field(default_factory=dict)
    tasmota: TasmotaDevice | None = None
    sensors: list[str] = field(default_factory=list)


class Discovery:
    """Discovery on one broker (see the module)."""

    def __init__(
        self,
        broker: str,
        config: BrokerSection,
        host: DeviceHost,
        store: DiscoveredStore,
        configured: Iterable[str] = (),
    ) -> None:
        self.broker = broker
        self.config = config
        self.host = host
        self.store = store
        self.configured = set(configured)
        """Configured device names: they win over discovered ones."""
        self.stats = DiscoveryStats()
        self.prefix = config.discovery_prefix
        self._log = structlog.get_logger("gateway.discovery").bind(broker=broker)
        self._limit = RateLimit()
        self._cap_limit = RateLimit(burst=1)
        self._raw: dict[str, bytes] = {}
        self._entities: dict[str, Entity] = {}
        self._by_topic: dict[str, list[str]] = {}
        self._uids: dict[str, str] = {}
        self._groups: dict[str, _Group] = {}
        self._names: dict[str, str] = {}
        self._pending_sensors: dict[str, list[str]] = {}
        self._told: set[tuple[str, str]] = set()

    @property
    def filters(self) -> list[str]:
        """The topic filters discovery subscribes to."""
        found = []
        if "homeassistant" in self.config.discovery:
            found.append(f"{self.prefix}/#")
        if "tasmota" in self.config.discovery:
            found.append(f"{TASMOTA_PREFIX}/#")
        return found

    @property
    def devices(self) -> dict[str, str]:
        """Discovered device name → source (``homeassistant`` / ``tasmota``)."""
        return {g.name: g.source for g in self._groups.values()}

    def restore(self) -> int:
        """Replay the configs kept in the state directory; how many devices came back."""
        for topic, payload in list(self.store.configs.get(self.broker, {}).items()):
            self.handle(topic, payload.encode())
        if self._groups:
            self._log.info(
                "discovered devices restored from the state directory", devices=sorted(self.devices)
            )
        return len(self._groups)

    def status(self) -> dict[str, Any]:
        """This broker's discovery counters for the status document (copied)."""
        st = self.stats
        return {
            "devices": st.devices,
            "entities": st.entities,
            "configs": st.configs,
            "added": st.added,
            "removed": st.removed,
            "ignored": dict(st.ignored),
            "refused": dict(st.refused),
            "overridden": st.overridden,
            "excluded": st.excluded,
            "over_cap": st.over_cap,
            "max_devices": self.config.discovery_max_devices,
            "last_error": st.last_error,
        }

    def set_configured(self, names: Iterable[str]) -> None:
        """The configured device names changed (a reload): a discovered device whose name
        is now configured is removed, and its configs forgotten (config wins)."""
        self.configured = set(names)
        for group in [g for g in self._groups.values() if g.name in self.configured]:
            topics = {p.entity.config_topic for p in group.plans.values()}
            for topic in topics:
                self._replace(topic, [])
                self._keep(topic, None)
            if group.tasmota is not None:
                self._keep(f"{TASMOTA_PREFIX}/{group.tasmota.mac}/config", None)
                self._keep(f"{TASMOTA_PREFIX}/{group.tasmota.mac}/sensors", None)
                group.tasmota = None
                self._sync(group.gid)
            self.stats.overridden += 1
            self._log.info(
                "discovered device removed: a configured device now has its name",
                device=group.name,
            )
        self._count()

    def replay_devices(self) -> None:
        """Hand every discovered device to the host again (its broker's hub was rebuilt)."""
        for gid in list(self._groups):
            self._sync(gid)

    # --- messages -----------------------------------------------------------------------

    def handle(self, topic: str, payload: bytes) -> None:
        """One message under a discovery prefix (on the event loop; never raises)."""
        if self._raw.get(topic) == payload:
            return  # the retained copy of what we have (or restored) already
        self.stats.configs += 1
        if len(payload) > MAX_CONFIG_BYTES:
            self._refuse(
                "too_large",
                f"config of {len(payload)} bytes is over the {MAX_CONFIG_BYTES}-byte limit",
                topic,
            )
            return
        try:
            if topic.startswith(TASMOTA_PREFIX + "/") and "tasmota" in self.config.discovery:
                self._tasmota(topic, payload)
            elif topic.startswith(self.prefix + "/") and "homeassistant" in self.config.discovery:
                self._homeassistant(topic, payload)
        except DiscoveryError as err:
            self._refuse(err.reason, str(err), topic)
        self._count()

    def _homeassistant(self, topic: str, payload: bytes) -> None:
        parsed = parse_config(self.prefix, topic, payload)
        if parsed is None:
            return
        if isinstance(parsed, Ignored):
            for component in parsed.components:
                self.stats.ignored[component] = self.stats.ignored.get(component, 0) + 1
            return
        if isinstance(parsed, Removed):
            self._replace(topic, [])
            self._keep(topic, None)
            return
        for err in parsed.refused:
            self._refuse(err.reason, str(err), topic)
        for component in parsed.ignored:
            self.stats.ignored[component] = self.stats.ignored.get(component, 0) + 1
        accepted = self._replace(topic, list(parsed.entities))
        self._keep(topic, payload if accepted else None)

    def _keep(self, topic: str, payload: bytes | None) -> None:
        if payload is None:
            self._raw.pop(topic, None)
            self.store.put_config(self.broker, topic, None)
        else:
            self._raw[topic] = payload
            self.store.put_config(self.broker, topic, payload.decode("utf-8"))

    def _replace(self, topic: str, entities: list[Entity]) -> bool:
        """Make ``topic``'s entities ``entities``; sync the devices touched."""
        touched: dict[str, None] = {}
        for key in self._by_topic.pop(topic, []):
            old = self._entities.pop(key)
            if old.unique_id is not None and self._uids.get(old.unique_id) == key:
                del self._uids[old.unique_id]
            group = self._groups.get(old.group)
            if group is not None:
                group.plans.pop(key, None)
                touched[old.group] = None
        # A device left without entities frees its name now: the new config may give
        # the same device under another identifier.
        emptied = []
        for gid in touched:
            group = self._groups.get(gid)
            if group is not None and not group.plans and group.tasmota is None:
                self._drop_group(group)
                emptied.append(group)
        accepted = [e.key for e in entities if self._accept(e)]
        for key in accepted:
            touched[self._entities[key].group] = None
        if accepted:
            self._by_topic[topic] = accepted
        for gid in touched:
            self._sync(gid)
        for group in emptied:
            if group.name not in self._names:
                self._gone(group)
        return bool(accepted)

    def _accept(self, entity: Entity) -> bool:
        topic = entity.config_topic
        if entity.unique_id is not None:
            other = self._uids.get(entity.unique_id)
            if other is not None and other != entity.key:
                self._refuse(
                    "collision",
                    f"unique_id {entity.unique_id!r} is already configured by "
                    f"{self._entities[other].config_topic}; the first one wins",
                    topic,
                    other_topic=self._entities[other].config_topic,
                )
                return False
        group = self._groups.get(entity.group)
        if group is None:
            group = self._claim(
                entity.group,
                entity.device_name,
                topic,
                "homeassistant",
                (entity.unique_id or "", entity.group.partition(":")[2]),
            )
            if group is None:
                return False
        elif len(group.plans) >= MAX_ENTITIES_PER_DEVICE:
            self._refuse(
                "too_many_entities",
                f"device {group.name} has {MAX_ENTITIES_PER_DEVICE} entities already",
                topic,
            )
            return False
        plan = plan_field(entity, group.node)
        for known in group.plans.values():
            if (
                known.entity.state_topic == entity.state_topic
                and known.field == plan.field
                and known.tags == plan.tags
            ):
                self._refuse(
                    "collision",
                    f"field {plan.field} of {entity.state_topic} is already read by "
                    f"{known.entity.config_topic}; the first one wins",
                    topic,
                    other_topic=known.entity.config_topic,
                )
                return False
        group.plans[entity.key] = plan
        self._entities[entity.key] = entity
        if entity.unique_id is not None:
            self._uids[entity.unique_id] = entity.key
        return True

    def _claim(
        self, gid: str, device_name: str, topic: str, source: str, ids: tuple[str, ...]
    ) -> _Group | None:
        """A new group for ``gid``, unless config, the exclude list, another discovered
        device of the same name or the cap says no (each counted and logged)."""
        name = _device_name(device_name)
        if name in self.configured:
            self.stats.overridden += 1
            if ("overridden", name) not in self._told:
                self._told.add(("overridden", name))
                self._log.info(
                    "discovered device ignored: a configured device has its name",
                    device=name,
                    topic=topic,
                )
            return None
        patterns = self.config.discovery_exclude
        if any(fnmatch.fnmatchcase(c, p) for p in patterns for c in (name, *ids) if c):
            self.stats.excluded += 1
            if ("excluded", name) not in self._told:
                self._told.add(("excluded", name))
                self._log.info(
                    "discovered device excluded by discovery_exclude", device=name, topic=topic
                )
            return None
        owner = self._names.get(name)
        if owner is not None:
            other = self._groups[owner].first_topic
            self._refuse(
                "collision",
                f"device name {name!r} is already taken by the device of {other}; "
                "the first one wins",
                topic,
                other_topic=other,
            )
            return None
        if len(self._groups) >= self.config.discovery_max_devices:
            self.stats.over_cap += 1
            if self._cap_limit.allow("over_cap"):
                self._log.warning(
                    "discovered device refused: discovery_max_devices reached",
                    topic=topic,
                    device=name,
                    max_devices=self.config.discovery_max_devices,
                    refused_since_last=self._cap_limit.take_suppressed("over_cap"),
                )
            return None
        group = _Group(gid, name, device_name, source, topic)
        self._groups[gid] = group
        self._names[name] = gid
        return group

    def _drop_group(self, group: _Group) -> None:
        self._groups.pop(group.gid, None)
        self._names.pop(group.name, None)

    def _sync(self, gid: str) -> None:
        """Tell the host what group ``gid`` is now (added, changed or gone)."""
        group = self._groups.get(gid)
        if group is None:
            return
        if not group.plans and group.tasmota is None:
            self._drop_group(group)
            self._gone(group)
            return
        driver, config = self._build(group)
        known = group.name in self.store.devices.get(self.broker, {})
        self.host.add_discovered(group.name, driver, config)
        info = self._info(group, driver)
        self.store.put_device(self.broker, group.name, info)
        if not known:
            self.stats.added += 1
        self._log.info(
            "discovered device updated" if known else "discovered device added",
            device=group.name,
            source=group.source,
            fields=info["fields"],
            topics=driver.options.topics,
        )

    def _gone(self, group: _Group) -> None:
        self.host.remove_discovered(group.name)
        self.store.put_device(self.broker, group.name, None)
        self.stats.removed += 1
        self._log.info("discovered device removed", device=group.name)

    def _build(self, group: _Group) -> tuple[MqttDriver[Any], NormalizeConfig]:
        if group.tasmota is not None:
            tasmota_options = TasmotaOptions.model_validate(
                {"broker": self.broker, "topics": group.tasmota.topics}
            )
            driver: MqttDriver[Any] = TasmotaDriver(group.name, tasmota_options)
            return driver, NormalizeConfig(tags={"node": group.tasmota.topic})
        plans = list(group.plans.values())
        availability: list[Availability] = []
        for plan in plans:
            for avail in plan.entity.availability:
                if avail not in availability:
                    availability.append(avail)
        expire = [p.entity.expire_after for p in plans if p.entity.expire_after]
        options = MqttOptions.model_validate(
            {
                "broker": self.broker,
                "topics": DiscoveredDriver.topics_of(plans, availability),
                "stale_after": max(expire) if len(expire) == len(plans) else None,
            }
        )
        return DiscoveredDriver(group.name, options, plans, availability, group.node), (
            NormalizeConfig()
        )

    @staticmethod
    def _info(group: _Group, driver: MqttDriver[Any]) -> dict[str, Any]:
        info: dict[str, Any] = {"source": group.source, "node": group.node}
        if group.tasmota is not None:
            t = group.tasmota
            info.update(mac=t.mac, model=t.model, firmware=t.firmware, sensors=group.sensors)
            info["fields"] = {}
        else:
            first = next(iter(group.plans.values())).entity
            info.update(model=first.model, manufacturer=first.manufacturer)
            info["fields"] = {p.field: p.unit or "" for p in group.plans.values()}
            info["state_classes"] = {
                p.field: p.entity.state_class for p in group.plans.values() if p.entity.state_class
            }
            info["configs"] = sorted({p.entity.config_topic for p in group.plans.values()})
        info["topics"] = list(driver.options.topics)
        return info

    # --- Tasmota ------------------------------------------------------------------------

    def _tasmota(self, topic: str, payload: bytes) -> None:
        found = mac_of(topic)
        if found is None:
            return  # not a device's config or sensors message
        mac, kind = found
        gid = f"tasmota:{mac}"
        group = self._groups.get(gid)
        if not payload.strip():
            self._keep(topic, None)
            if kind == "sensors":
                self._pending_sensors.pop(mac, None)
                if group is not None:
                    group.sensors = []
                    self._sync(gid)
            elif group is not None:
                group.tasmota = None
                self._sync(gid)
            return
        try:
            doc = loads_json(decode_text(payload))
        except RejectedInput as err:
            raise DiscoveryError(str(err), "malformed") from None
        if kind == "sensors":
            sensors = parse_tasmota_sensors(doc)
            if group is None:
                # Kept (bounded) for the config that usually follows.
                if mac in self._pending_sensors or len(self._pending_sensors) < MAX_PENDING_SENSORS:
                    self._pending_sensors[mac] = sensors
                    self._keep(topic, payload)
                return
            self._keep(topic, payload)
            group.sensors = sensors
            self._sync(gid)
            return
        device = parse_tasmota_config(mac, doc)
        if group is not None and _device_name(device.topic) != group.name:
            group.tasmota = None  # renamed: the old device goes, the new name is claimed
            self._sync(gid)
            group = None
        if group is None:
            group = self._claim(gid, device.topic, topic, "tasmota", (mac,))
            if group is None:
                self._keep(topic, None)
                return
            group.sensors = self._pending_sensors.pop(mac, [])
        group.tasmota = device
        self._keep(topic, payload)
        self._sync(gid)

    # --- counting -----------------------------------------------------------------------

    def _refuse(self, reason: str, message: str, topic: str, **extra: str) -> None:
        stats = self.stats
        stats.refused[reason] = stats.refused.get(reason, 0) + 1
        stats.last_error = f"{topic}: {message}"
        if self._limit.allow(reason):
            suppressed = self._limit.take_suppressed(reason)
            fields: dict[str, object] = dict(extra)
            if suppressed:
                fields["suppressed_since_last"] = suppressed
            self._log.warning(
                "discovery config refused", topic=topic, reason=reason, error=message, **fields
            )

    def _count(self) -> None:
        self.stats.devices = len(self._groups)
        self.stats.entities = len(self._entities)


def _device_name(text: str) -> str:
    """A device name from a firmware's name: ``Living Room`` → ``living_room``."""
    return snake(text)
