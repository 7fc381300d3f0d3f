"""W1: the full pipeline, MQTT in → spool → VictoriaMetrics, with the gateway as a subprocess.

Starts a mosquitto and a VictoriaMetrics (tests/servers.py), a gateway (``python -m
gateway run``) with ``--devices`` json devices (one per topic ``bench/sensor-<i>/state``,
3 numeric fields and a ``ts`` each) writing to VictoriaMetrics through ``[sinks.influxdb]``
(v2 API; the local store is off), then publishes ``--messages`` messages from a separate
process (bench/_publisher.py, paho) as fast as the broker takes them, once per QoS.

Measured per run:

* readings/s end to end: first publish → the last row accepted by VictoriaMetrics
  (``vm_rows_inserted_total{type="influx"}``, polled every 50 ms: cheap, unlike exporting
  600k points each poll); then, after a force-flush, ``count_points`` must equal
  messages × 3 (nothing lost or merged);
* the gateway process's CPU seconds per 10k readings (utime + stime of all its threads,
  /proc/<pid>/stat), split into the event-loop thread and the others;
* the gateway's peak RSS (VmHWM) and its RSS before the burst;
* CPU used meanwhile by mosquitto, VictoriaMetrics, the publisher and anything else.

``--profile`` adds a run under ``py-spy record`` (100 Hz) and prints where the gateway's
CPU went, by stage and by function (the profiled run's own figures are not reported,
py-spy costs CPU on a 2-core box).

    python bench/pipeline.py                  # QoS 0 and QoS 1, 200k messages each
    python bench/pipeline.py --profile        # plus a py-spy run at QoS 0
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    CpuWindow,
    cpu_seconds,
    status_kib,
    thread_cpu,
    use_test_helpers,
    wait_quiet,
    write_result,
)

use_test_helpers()

from gateway_proc import GatewayProcess  # noqa: E402
from servers import Mosquitto, VictoriaMetrics, http_request  # noqa: E402

FIELDS = 3
MEASUREMENT = "bench"
GOALS = {"qos0_readings_per_s": 40_000, "qos1_readings_per_s": 30_000, "cpu_us_per_reading": 25.0,
         "peak_rss_mb": 80.0}  # fmt: skip


class QuietMosquitto(Mosquitto):
    """The test helper's broker without ``log_type all`` (a log line per PUBLISH would
    make the broker, not the gateway, the bottleneck). The runs pass
    ``max_queued_messages 0`` (no limit) unless ``--broker-queue`` says otherwise:
    mosquitto's default (1000 queued QoS 1 messages per client) drops messages when a
    subscriber lags, which is a broker setting, not what this benchmark measures."""

    def prepare(self) -> None:
        super().prepare()
        text = self.conf_path.read_text()
        text = text.replace("log_type all\n", "log_type error\nlog_type warning\nlog_type notice\n")
        self.conf_path.write_text(text)


def vm_rows_inserted(vm: VictoriaMetrics) -> int:
    status, body = http_request("GET", vm.url + "/metrics", timeout=5.0)
    if status != 200:
        raise RuntimeError(f"VictoriaMetrics /metrics answered {status}")
    m = re.search(rb'^vm_rows_inserted_total\{type="influx"\} (\d+)', body, re.M)
    return int(m.group(1)) if m else 0


def gateway_config(mqtt_port: int, vm_url: str, devices: int, qos: int) -> dict[str, Any]:
    return {
        # Self-metrics would add points of their own to the count.
        "gateway": {"log_level": "info", "metrics_interval": 86400},
        "brokers": {"default": {"host": "127.0.0.1", "port": mqtt_port, "client_id": "bench-gw"}},
        "sinks": {
            "influxdb": {
                "url": vm_url,
                "api": "v2",
                "org": "bench",
                "bucket": "bench",
                "token": "bench",
            },
            "local": {"enabled": False},
        },
        "devices": {
            f"sensor-{i}": {
                "driver": "json",
                "topics": [f"bench/sensor-{i}/state"],
                "qos": qos,
                "time_field": "ts",
                "measurement": MEASUREMENT,
            }
            for i in range(devices)
        },
    }


class Publishers:
    """``count`` publisher processes, each for its share of the devices, started together."""

    def __init__(self, port: int, qos: int, messages: int, devices: int, count: int = 1) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for shard in range(count):
            proc = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "_publisher.py"), "--port", str(port),
                 "--qos", str(qos), "--messages", str(messages), "--devices", str(devices),
                 "--shard", str(shard), "--shards", str(count)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "ready":
                self.kill()
                raise RuntimeError(f"publisher did not start: {line!r}")

    def go(self) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def results(self, timeout: float = 120.0) -> dict[str, Any] | None:
        """Combined timings (first start, last end, CPU summed); None if one failed."""
        got = []
        for proc in self.procs:
            out_text, _ = proc.communicate(timeout=timeout)
            lines = out_text.strip().splitlines()
            doc = json.loads(lines[-1]) if lines else {}
            if "t_start" not in doc:
                return None
            got.append(doc)
        return {
            "t_start": min(d["t_start"] for d in got),
            "t_end": max(d["t_end"] for d in got),
            "cpu_s": round(sum(d["cpu_s"] for d in got), 3),
            "published": sum(d["published"] for d in got),
            "example": got[0]["example"],
        }


def start_pyspy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--nolineno",
         "--threads", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_once(
    tmp: Path,
    qos: int,
    messages: int,
    devices: int,
    publishers: int = 1,
    profile_out: Path | None = None,
    broker_queue: int = 0,
) -> dict[str, Any]:
    mosq = QuietMosquitto(
        tmp / "mosquitto", extra_conf=f"max_queued_messages {broker_queue}\n"
    ).start()
    vm = VictoriaMetrics(tmp / "vm").start()
    gw = GatewayProcess(tmp / "gw", gateway_config(mosq.port, vm.url, devices, qos))
    pub: Publishers | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        gw.start()
        gw.wait_for_log("connected to MQTT broker")
        assert gw.proc is not None
        pid = gw.proc.pid
        pub = Publishers(mosq.port, qos, messages, devices, publishers)
        if profile_out is not None:
            spy = start_pyspy(pid, profile_out)
            time.sleep(1.0)  # let py-spy attach
        target = messages * FIELDS
        base_rows = vm_rows_inserted(vm)
        rss_before = status_kib(pid, "VmRSS")
        gw_cpu0, threads0 = cpu_seconds(pid), thread_cpu(pid)
        mosq_cpu0, vm_cpu0 = cpu_seconds(mosq.pid), cpu_seconds(vm.pid)
        window = CpuWindow.start()
        t_go = time.monotonic()
        pub.go()
        timeline: list[tuple[float, int, int]] = []
        rows, last_rows, last_change = 0, -1, t_go
        while rows < target:
            time.sleep(0.05)
            rows = vm_rows_inserted(vm) - base_rows
            now = time.monotonic()
            if rows != last_rows:
                last_rows, last_change = rows, now
                if not timeline or now - timeline[-1][0] - t_go >= 0.5:
                    timeline.append((now - t_go, rows, status_kib(pid, "VmRSS")))
            if now - last_change > 30.0:
                print(f"  stalled at {rows} of {target} rows", file=sys.stderr)
                break
        t_done = time.monotonic()
        gw_cpu1, threads1 = cpu_seconds(pid), thread_cpu(pid)
        mosq_cpu1, vm_cpu1 = cpu_seconds(mosq.pid), cpu_seconds(vm.pid)
        machine_cpu = window.stop()
        peak_rss = status_kib(pid, "VmHWM")
        if rows < target:
            pub.kill()
        pub_result = pub.results()
        if pub_result is None:
            pub_result = {"t_start": t_go, "t_end": t_done, "cpu_s": 0.0, "example": "",
                          "error": "publisher did not finish"}  # fmt: skip
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        vm.force_flush()
        stored = vm.count_points(f'{{__name__=~"{MEASUREMENT}_.+"}}')
        status = gw.status()
        gw.stop()
        log = (tmp / "mosquitto" / "mosquitto.log").read_text(errors="replace")
    finally:
        if pub is not None:
            pub.kill()
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        gw.close()
        vm.stop()
        mosq.stop()

    t_first = pub_result["t_start"]
    elapsed = t_done - t_first
    gw_cpu = gw_cpu1 - gw_cpu0
    loop_cpu = threads1.get(pid, 0.0) - threads0.get(pid, 0.0)
    others = gw_cpu - loop_cpu
    ours = gw_cpu + (mosq_cpu1 - mosq_cpu0) + (vm_cpu1 - vm_cpu0) + pub_result["cpu_s"]
    return {
        "qos": qos,
        "messages": messages,
        "devices": devices,
        "publishers": publishers,
        "mosquitto_max_queued_messages": broker_queue,
        "fields_per_message": FIELDS,
        "example_payload": pub_result["example"],
        "publisher_error": pub_result.get("error"),
        "elapsed_s": round(elapsed, 3),
        "readings_per_s": round(messages / elapsed),
        "publish_s": round(pub_result["t_end"] - t_first, 3),
        "publish_rate_per_s": round(messages / (pub_result["t_end"] - t_first)),
        "points_expected": messages * FIELDS,
        "points_stored": stored,
        "points_lost": messages * FIELDS - stored,
        "gateway_cpu_s": round(gw_cpu, 3),
        "gateway_cpu_s_per_10k": round(gw_cpu / messages * 10_000, 4),
        "gateway_cpu_us_per_reading": round(gw_cpu / messages * 1e6, 2),
        "gateway_loop_thread_cpu_s": round(loop_cpu, 3),
        "gateway_other_threads_cpu_s": round(others, 3),
        "gateway_rss_before_mb": round(rss_before / 1024, 1),
        "gateway_peak_rss_mb": round(peak_rss / 1024, 1),
        "mosquitto_cpu_s": round(mosq_cpu1 - mosq_cpu0, 3),
        "victoria_metrics_cpu_s": round(vm_cpu1 - vm_cpu0, 3),
        "publisher_cpu_s": pub_result["cpu_s"],
        **machine_cpu,
        "other_processes_cpu_s": round(max(0.0, machine_cpu["machine_busy_cpu_s"] - ours), 3),
        "gateway_status": {
            "spool": status.get("spool"),
            "sinks": status.get("sinks"),
            "brokers": status.get("brokers"),
            "rejected": sum(sum(d["rejected"].values()) for d in status["devices"].values()),
        },
        "mosquitto_dropped": "Outgoing messages are being dropped" in log,
        "timeline_s_rows_rsskib": timeline,
    }


def run_backlog(tmp: Path, messages: int, devices: int, publishers: int = 1) -> dict[str, Any]:
    """A QoS 1 backlog of ``messages`` waits at the broker for the gateway's persistent
    session; then the gateway starts and drains it. Peak RSS and the drain rate."""
    mosq = QuietMosquitto(tmp / "mosquitto", extra_conf="max_queued_messages 0\n").start()
    vm = VictoriaMetrics(tmp / "vm").start()
    gw = GatewayProcess(tmp / "gw", gateway_config(mosq.port, vm.url, devices, 1))
    pub: Publishers | None = None
    try:
        gw.start()
        gw.wait_for_log("connected to MQTT broker")  # the session exists
        assert gw.stop() == 0
        pub = Publishers(mosq.port, 1, messages, devices, publishers)
        pub.go()
        pub_result = pub.results(timeout=1800.0)
        if pub_result is None:
            raise RuntimeError("publisher failed")
        target = messages * FIELDS
        base_rows = vm_rows_inserted(vm)
        t_go = time.monotonic()
        gw.start()
        assert gw.proc is not None
        pid = gw.proc.pid
        rows, last_rows, last_change = 0, -1, t_go
        rss_max = 0
        while rows < target:
            time.sleep(0.2)
            rows = vm_rows_inserted(vm) - base_rows
            rss_max = max(rss_max, status_kib(pid, "VmRSS"))
            now = time.monotonic()
            if rows != last_rows:
                last_rows, last_change = rows, now
            if now - last_change > 60.0:
                print(f"  stalled at {rows} of {target} rows", file=sys.stderr)
                break
        t_done = time.monotonic()
        peak = status_kib(pid, "VmHWM")
        cpu = cpu_seconds(pid)
        vm.force_flush()
        stored = vm.count_points(f'{{__name__=~"{MEASUREMENT}_.+"}}')
        gw.stop()
    finally:
        if pub is not None:
            pub.kill()
        gw.close()
        vm.stop()
        mosq.stop()
    return {
        "backlog_messages": messages,
        "publish_rate_per_s": round(messages / (pub_result["t_end"] - pub_result["t_start"])),
        "drain_s": round(t_done - t_go, 1),
        "drain_readings_per_s": round(messages / (t_done - t_go)),
        "gateway_peak_rss_mb": round(peak / 1024, 1),
        "gateway_cpu_s_incl_start": round(cpu, 2),
        "points_expected": target,
        "points_stored": stored,
    }


def run_baseline(
    tmp: Path, kind: str, qos: int, messages: int, devices: int, publishers: int = 1
) -> dict[str, Any]:
    """A subscriber that only counts (paho alone, or aiomqtt as the gateway uses it)."""
    mosq = QuietMosquitto(tmp / "mosquitto", extra_conf="max_queued_messages 0\n").start()
    sub = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "_subscriber.py"), kind, "--port", str(mosq.port),
         "--qos", str(qos), "--messages", str(messages)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    pub: Publishers | None = None
    try:
        assert sub.stdout is not None
        if sub.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} subscriber did not start")
        pub = Publishers(mosq.port, qos, messages, devices, publishers)
        pub.go()
        got = json.loads(sub.stdout.readline())
        pub_result = pub.results()
        if pub_result is None:
            raise RuntimeError("publisher failed")
        sub.wait(30)
    finally:
        if pub is not None:
            pub.kill()
        if sub.poll() is None:
            sub.kill()
            sub.wait()
        mosq.stop()
    elapsed = got["t_last"] - pub_result["t_start"]
    return {
        "subscriber": kind,
        "qos": qos,
        "messages": got["received"],
        "messages_per_s": round(got["received"] / elapsed),
        "cpu_us_per_message": round(got["cpu_s"] / got["received"] * 1e6, 2),
        "peak_rss_mb": got["peak_rss_mb"],
        "publishers": publishers,
        "publish_rate_per_s": round(messages / (pub_result["t_end"] - pub_result["t_start"])),
    }


# --- py-spy profile summary ---------------------------------------------------------------

# Stages of the hot path, matched against a frame's "function (file)" text; a sample is
# charged to the stage of its innermost frame that matches one (stdlib frames such as
# json/decoder.py fall through to their caller's stage), except that anything under
# aiomqtt's message iterator is charged to it (it creates a task and runs asyncio.wait
# for every message).
ITERATOR = "aiomqtt message iterator (task + asyncio.wait per message)"
STAGES: list[tuple[str, tuple[str, ...]]] = [
    ("json driver decode", ("devices/json/", "devices/_parsing")),
    ("normalize", ("gateway/pipeline/normalize.py",)),
    ("field types", ("gateway/pipeline/fieldtypes.py",)),
    ("line protocol encode", ("gateway/pipeline/lineprotocol.py",)),
    ("pipeline submit (glue, Reading objects)", ("gateway/pipeline/intake.py", "gateway/telemetry/stats.py",
                                                 "gateway/pipeline/reading.py", "__create_fn__")),
    ("spool", ("gateway/delivery/spool.py",)),
    ("influx sink: gzip", ("gzip.py", "zlib")),
    ("influx sink: aiohttp/http", ("aiohttp/", "multidict", "yarl")),
    ("sink delivery loop", ("gateway/sinks/",)),
    ("mqtt hub dispatch", ("gateway/mqtt/hub.py",)),
    ("paho (packet read, topic matcher, callbacks)", ("paho/",)),
    ("aiomqtt (other)", ("aiomqtt/",)),
    ("asyncio event loop", ("asyncio/", "selectors.py")),
    ("logging (structlog)", ("structlog/", "gateway/logging.py")),
    ("status file / housekeeping", ("gateway/app.py", "json/encoder.py")),
    ("threads (executor plumbing)", ("concurrent/futures", "threading.py")),
]  # fmt: skip
# Leaves where a thread waits rather than computes (py-spy's idle detection does not
# see through them here): left out of the shares.
IDLE_LEAVES = ("EpollSelector.select (selectors.py)", "_worker (concurrent/futures/thread.py)",
               "wait (threading.py)")  # fmt: skip


def _stage(frames: list[str]) -> str:
    if any("MessagesIterator.__anext__" in f for f in frames):
        return ITERATOR
    for frame in reversed(frames):
        for name, needles in STAGES:
            if any(n in frame for n in needles):
                return name
    return "other"


def summarize_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Shares of the event-loop thread's busy samples, by stage and by function."""
    stages: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";")]
        thread = frames.pop(0) if frames and frames[0].startswith("thread ") else "?"
        if frames and frames[-1] in IDLE_LEAVES:
            if "MainThread" in thread:
                idle += count
            continue
        threads[thread.split(": ", 1)[-1]] += count
        if "MainThread" not in thread:
            continue
        total += count
        self_time[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
        stages[_stage(frames)] += count

    def share(c: collections.Counter[str], n: int | None = None) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / max(total, 1), 1)) for k, v in c.most_common(n)]

    return {
        "event_loop_busy_samples": total,
        "event_loop_idle_samples": idle,
        "busy_samples_by_thread": dict(threads),
        "stages_pct": share(stages),
        "self_pct": share(self_time, top),
        "inclusive_pct": share(inclusive, top),
    }


def _short(frame: str) -> str:
    # "func (/long/path/site-packages/pkg/mod.py)" -> "func (pkg/mod.py)"
    m = re.match(r"(.*) \((.*)\)$", frame)
    if not m:
        return frame
    func, file = m.groups()
    for marker in ("site-packages/", "/lib/python3.11/", str(ROOT) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{func} ({file})"


def print_run(r: dict[str, Any]) -> None:
    goal = GOALS["qos0_readings_per_s" if r["qos"] == 0 else "qos1_readings_per_s"]
    print(
        f"QoS {r['qos']}: {r['readings_per_s']:,} readings/s end to end (goal ≥ {goal:,}); "
        f"published at {r['publish_rate_per_s']:,}/s; {r['elapsed_s']} s for {r['messages']:,}"
    )
    print(
        f"  gateway CPU {r['gateway_cpu_s']} s = {r['gateway_cpu_s_per_10k']} s per 10k = "
        f"{r['gateway_cpu_us_per_reading']} µs/reading (goal ≤ 25); event-loop thread "
        f"{r['gateway_loop_thread_cpu_s']} s, other threads {r['gateway_other_threads_cpu_s']} s"
    )
    print(
        f"  gateway RSS {r['gateway_rss_before_mb']} MB before, peak {r['gateway_peak_rss_mb']} MB"
        f" (goal ≤ 80); points stored {r['points_stored']:,} of {r['points_expected']:,}"
        f" (lost {r['points_lost']})"
    )
    print(
        f"  CPU meanwhile: mosquitto {r['mosquitto_cpu_s']} s, VictoriaMetrics "
        f"{r['victoria_metrics_cpu_s']} s, publisher {r['publisher_cpu_s']} s, other processes "
        f"{r['other_processes_cpu_s']} s (machine: {r['machine_busy_cpu_s']} of "
        f"{r['machine_cpu_capacity_s']} CPU-s)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--qos", type=int, nargs="+", default=[0, 1], choices=(0, 1))
    ap.add_argument("--profile", action="store_true", help="add a py-spy run at QoS 0")
    ap.add_argument(
        "--publishers", type=int, default=1, help="publisher processes (devices split between them)"
    )
    ap.add_argument(
        "--broker-queue",
        type=int,
        default=0,
        help="mosquitto max_queued_messages for the gateway runs (0: no limit; its default: 1000)",
    )
    ap.add_argument(
        "--no-baselines", action="store_true", help="skip the count-only paho/aiomqtt subscribers"
    )
    ap.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="instead: a QoS 1 backlog of this many messages waiting at the broker, drained",
    )
    args = ap.parse_args()
    if args.backlog:
        with tempfile.TemporaryDirectory(prefix="bench-backlog-") as tmp_name:
            r = run_backlog(Path(tmp_name), args.backlog, args.devices, args.publishers)
        print(
            f"backlog of {r['backlog_messages']:,} QoS 1 messages (published at "
            f"{r['publish_rate_per_s']:,}/s): drained in {r['drain_s']} s = "
            f"{r['drain_readings_per_s']:,}/s, gateway peak RSS {r['gateway_peak_rss_mb']} MB "
            f"(goal ≤ 80), points stored {r['points_stored']:,} of {r['points_expected']:,}"
        )
        write_result("pipeline-backlog", {"backlog": r})
        return 0

    quiet = wait_quiet()
    runs: list[dict[str, Any]] = []
    profile: dict[str, Any] | None = None
    baselines: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp_name:
        tmp = Path(tmp_name)
        for qos in args.qos:
            result = run_once(
                tmp / f"qos{qos}", qos, args.messages, args.devices, args.publishers,
                broker_queue=args.broker_queue,
            )  # fmt: skip
            print_run(result)
            runs.append(result)
        if not args.no_baselines:
            for qos in args.qos:
                for kind in ("paho", "aiomqtt"):
                    b = run_baseline(
                        tmp / f"{kind}{qos}", kind, qos, args.messages, args.devices,
                        args.publishers,
                    )  # fmt: skip
                    baselines.append(b)
                    print(
                        f"baseline, {kind} subscriber that only counts, QoS {qos}: "
                        f"{b['messages_per_s']:,} messages/s, {b['cpu_us_per_message']} µs CPU/message,"
                        f" peak RSS {b['peak_rss_mb']} MB"
                    )
        if args.profile:
            out = tmp / "profile.txt"
            run_once(tmp / "profile", 0, args.messages, args.devices, args.publishers, out)
            profile = summarize_profile(out)
            (ROOT / "bench" / "results").mkdir(parents=True, exist_ok=True)
            shutil.copy(out, ROOT / "bench" / "results" / "pipeline-pyspy.txt")
            print(
                f"py-spy (QoS 0 run): {profile['event_loop_busy_samples']} busy samples of the "
                f"event-loop thread ({profile['event_loop_idle_samples']} idle left out); "
                f"busy samples by thread: {profile['busy_samples_by_thread']}"
            )
            print("  event-loop thread by stage:")
            for name, pct in profile["stages_pct"]:
                print(f"    {pct:5.1f}%  {name}")
            print("  by function (self):")
            for name, pct in profile["self_pct"][:15]:
                print(f"    {pct:5.1f}%  {name}")
    name = "pipeline" if args.broker_queue == 0 else f"pipeline-broker-queue-{args.broker_queue}"
    write_result(name, {"machine_load": quiet, "goals": GOALS, "runs": runs,
                              "baselines": baselines, "profile": profile})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
