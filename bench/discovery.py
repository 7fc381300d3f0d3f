"""What discovery costs on the event loop, in process, without a broker.

A flood of Zigbee2MQTT-style discovery configs (tests/data/mqtt/discovery/, one HA device
each, all different) goes through ``Discovery.handle`` with a host that only records:
the first ``discovery_max_devices`` are parsed, grouped, named and handed over, the rest
refused over the cap; then again with every one accepted. Reported per config, beside ``json.loads`` of the same payloads
(the part no implementation avoids), measured in the same run, and the evaluation of a
value template against a plain dict lookup. Best of 5, GC off.

    python bench/discovery.py [--configs 1000] [--max-devices 200]
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path
from typing import Any

from _common import use_test_helpers, wait_quiet, write_result

use_test_helpers()

from gateway.config import BrokerSection  # noqa: E402
from gateway.discovery.registry import Discovery  # noqa: E402
from gateway.discovery.store import DiscoveredStore  # noqa: E402
from gateway.discovery.template import compile_template  # noqa: E402
from gateway.driver import MqttDriver  # noqa: E402
from gateway.logging import configure  # noqa: E402
from gateway.pipeline.normalize import NormalizeConfig  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "mqtt" / "discovery"
ROUNDS = 5


class _Host:
    def __init__(self) -> None:
        self.added = 0

    def add_discovered(self, name: str, driver: MqttDriver[Any], config: NormalizeConfig) -> None:
        self.added += 1

    def remove_discovered(self, name: str) -> None:
        pass


def _configs(count: int) -> list[tuple[str, bytes]]:
    first = json.loads((DATA / "zigbee2mqtt.jsonl").read_text(encoding="utf-8").splitlines()[0])
    out = []
    for i in range(count):
        payload = (
            first["payload"]
            .replace("0x00158d0001a2b3c4", f"0x{i:016x}")
            .replace("living_room_sensor", f"sensor_{i}")
        )
        out.append((f"homeassistant/sensor/0x{i:016x}/temperature/config", payload.encode()))
    return out


def _best(run: Any) -> float:
    times = []
    for _ in range(ROUNDS):
        gc.disable()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        gc.enable()
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=1000)
    parser.add_argument("--max-devices", type=int, default=200)
    args = parser.parse_args()
    configure("error", "json")  # the added/refused log lines are not what is measured
    quiet = wait_quiet()
    configs = _configs(args.configs)
    section = BrokerSection(
        host="127.0.0.1", discovery=["homeassistant"], discovery_max_devices=args.max_devices
    )
    hosts: list[_Host] = []

    def flood() -> None:
        host = _Host()
        hosts.append(host)
        found = Discovery("bench", section, host, DiscoveredStore(None))
        for topic, payload in configs:
            found.handle(topic, payload)

    def loads() -> None:
        for _, payload in configs:
            json.loads(payload)

    flood_s, loads_s = _best(flood), _best(loads)
    assert hosts[-1].added == min(args.configs, args.max_devices)
    section = section.model_copy(update={"discovery_max_devices": args.configs})
    accepted_s = _best(flood)  # every config accepted: parse, group, name, build the driver
    assert hosts[-1].added == args.configs
    template = compile_template("{{ value_json.temperature | float | round(1) }}")
    doc = {"temperature": 21.349, "humidity": 45.2, "battery": 100}
    n = 100_000

    def render() -> None:
        for _ in range(n):
            template.render("", doc)

    def lookup() -> None:
        for _ in range(n):
            round(float(doc["temperature"]), 1)

    render_s, lookup_s = _best(render), _best(lookup)
    result = {
        "configs": args.configs,
        "max_devices": args.max_devices,
        "us_per_config": round(flood_s / args.configs * 1e6, 2),
        "us_per_config_all_accepted": round(accepted_s / args.configs * 1e6, 2),
        "us_per_json_loads": round(loads_s / args.configs * 1e6, 2),
        "ratio_to_json_loads": round(flood_s / loads_s, 1),
        "us_per_template_render": round(render_s / n * 1e6, 3),
        "us_per_plain_lookup": round(lookup_s / n * 1e6, 3),
        "ratio_template_to_lookup": round(render_s / lookup_s, 1),
        "quiet": quiet,
    }
    write_result("discovery", result)
    print(json.dumps({k: v for k, v in result.items() if k != "quiet"}, indent=1))


if __name__ == "__main__":
    main()
