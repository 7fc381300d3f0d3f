"""The ``line`` driver: data-driven cases, its simulator, and a real pseudo-terminal."""

from __future__ import annotations

import io
import math
import random
import time
from collections.abc import Callable
from typing import Any, get_args

import pytest
from driver_cases.cases import Case, cases, run

from devices._parsing import _BOOLS, _INTEGER, _NUMBER, _SPECIAL, parse_scalar
from devices.line import LineDriver, LineOptions
from devices.line.simulator import LineFormat, LineSimulator
from gateway.config import config_from_dict
from gateway.driver import LineFramer, RawSample, RejectedInput
from gateway.errors import ConfigError
from gateway.testing import Capture, ScriptedDevice, SerialPty, run_serial_driver

FORMATS: tuple[LineFormat, ...] = get_args(LineFormat)
MakePort = Callable[[], SerialPty]
MakeDevice = Callable[..., ScriptedDevice]


@pytest.mark.parametrize("case", cases("line"))
def test_case(case: Case) -> None:
    run(case, LineDriver)


def _driver(**options: Any) -> LineDriver:
    return LineDriver("dev", LineOptions.model_validate({"port": "/dev/null", **options}))


def _decode_all(driver: LineDriver, data: bytes) -> list[RawSample]:
    framer = driver.framer()
    return [s for frame in framer.feed(data) for s in driver.parse(frame)]


# -- options ------------------------------------------------------------------------------


def test_constructor_rechecks_unvalidated_options() -> None:
    """Options built without validation still get a clear ValueError from __init__."""
    bad = LineOptions.model_construct(port="/dev/null", format="csv", columns=None)
    with pytest.raises(ValueError, match='columns is required when format = "csv"'):
        LineDriver("dev", bad)
    bad = LineOptions.model_construct(port="/dev/null", format="regex", pattern="(?P<t>")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        LineDriver("dev", bad)


@pytest.mark.parametrize(
    ("options", "path", "message"),
    [
        ({"format": "csv"}, "devices.bench.columns", 'columns is required when format = "csv"'),
        (
            {"format": "regex", "pattern": "(?P<t>[0-9"},
            "devices.bench.pattern",
            "not a valid regular expression",
        ),
        (
            {"format": "regex", "pattern": "t=([0-9]+)"},
            "devices.bench.pattern",
            "at least one named group",
        ),
        ({"encoding": "utf-16"}, "devices.bench.encoding", "newline"),
        ({"separator": ""}, "devices.bench.separator", ""),
        ({"pattern": "(?P<t>.*)"}, "devices.bench", 'pattern only applies to format = "regex"'),
        ({"formt": "csv"}, "devices.bench.formt", 'did you mean "format"'),
    ],
)
def test_config_errors_carry_the_option_path(
    options: dict[str, Any], path: str, message: str
) -> None:
    raw = {"devices": {"bench": {"driver": "line", "port": "/dev/ttyUSB0", **options}}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw, env={})
    paths = [p for p, _ in info.value.problems]
    assert path in paths, info.value.problems
    assert any(message in msg for p, msg in info.value.problems if p == path), info.value


# -- parsing details not covered by the case folders ----------------------------------------


def test_huge_integer_text_becomes_a_float() -> None:
    """Integers past Python's int/str limit are not an error: the core sees a float (inf)."""
    (sample,) = _driver(max_frame_bytes=10_000).parse(b"n=" + b"9" * 5000)
    assert sample.fields["n"] == math.inf


def test_deeply_nested_json_line_is_rejected_quickly() -> None:
    driver = _driver(format="json", max_frame_bytes=1_000_000)
    frame = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
    start = time.perf_counter()
    with pytest.raises(RejectedInput) as info:
        driver.parse(frame)
    assert info.value.reason == "malformed"
    assert "nested too deeply" in str(info.value)
    assert time.perf_counter() - start < 1.0


def test_json_line_with_huge_integer_is_rejected() -> None:
    with pytest.raises(RejectedInput, match="longer than 4300 digits") as info:
        _driver(format="json", max_frame_bytes=10_000).parse(b'{"n": ' + b"1" * 5000 + b"}")
    assert info.value.reason == "malformed"


def test_messages_name_the_bad_input_and_cut_it_short() -> None:
    with pytest.raises(RejectedInput) as info:
        _driver().parse(b"x" * 3000)
    assert len(str(info.value)) < 200
    assert "xxxxx" in str(info.value)


def _scalar_by_pattern(text: str) -> object:
    """parse_scalar's definition: the regexes it used before its ASCII fast path."""
    if _INTEGER.fullmatch(text):
        try:
            return int(text)
        except ValueError:
            return float(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    lowered = text.lower()
    for table in (_SPECIAL, _BOOLS):
        if lowered in table:
            return table[lowered]
    return text


def _same(a: object, b: object) -> bool:
    if type(a) is not type(b):
        return False
    return (math.isnan(b)) if isinstance(a, float) and math.isnan(a) else a == b  # type: ignore[arg-type]


def _random_texts(alphabet: str, count: int, longest: int) -> list[str]:
    rnd = random.Random(20261130)
    return ["".join(rnd.choices(alphabet, k=rnd.randint(0, longest))) for _ in range(count)]


def test_scalar_fast_path_reads_exactly_what_the_patterns_read() -> None:
    edge = ["", "+", "-", ".", "1.", ".5", "1e5", "1.e5", "-.5e-3", "1e", "0x1", "1_0", " 1",
            "1 ", "+-1", "--1", "nan", "-inf", "+Infinity", "TRUE", "١٢", "²", "1" * 5000,
            "-" + "1" * 5000, "1.5.5", "1e+5", "+.5E3"]  # fmt: skip
    texts = edge + _random_texts("0123456789+-.eE_ xnaifINtrue\t\x1c١²", 50_000, 7)
    wrong = [t for t in texts if not _same(parse_scalar(t), _scalar_by_pattern(t))]
    assert wrong == []


def test_kv_fast_split_agrees_with_the_general_one() -> None:
    """Blank/comma-separated kv lines: the fast split gives the same pairs, or the same
    rejection, as the general one on any line."""
    driver = _driver()
    texts = _random_texts("ab=1 ,=\t\x1c\x00é", 30_000, 12)
    for text in texts:
        try:
            expected: object = driver._split_kv(text)
        except RejectedInput as err:
            expected = ("rejected", str(err), err.reason)
        try:
            got: object = driver._split_kv_blanks(text)
        except RejectedInput as err:
            got = ("rejected", str(err), err.reason)
        assert got == expected, text


# -- the simulator ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("with_time", [False, True])
def test_simulator_lines_decode_in_order(fmt: LineFormat, with_time: bool) -> None:
    sim = LineSimulator(format=fmt, seed=3, with_time=with_time)
    driver = LineDriver("sim", LineOptions.model_validate(sim.options("/dev/null")))
    data = sim.banner() + b"".join(sim.lines(200))
    samples = _decode_all(driver, data)
    assert [s.fields["seq"] for s in samples] == list(range(200))
    for s in samples:
        assert 18.0 <= float(s.fields["temperature"]) <= 24.0  # type: ignore[arg-type]
        assert 35.0 <= float(s.fields["humidity"]) <= 60.0  # type: ignore[arg-type]
        assert 990.0 <= float(s.fields["pressure"]) <= 1035.0  # type: ignore[arg-type]
        assert (s.time_ns is not None) is with_time
        assert "ts" not in s.fields
    if with_time:
        times = [s.time_ns for s in samples if s.time_ns is not None]
        assert times == sorted(set(times)), "device times must be unique and increasing"
        assert abs(times[-1] - time.time_ns()) < 60 * 10**9


def test_simulator_is_repeatable_with_a_seed() -> None:
    a = list(LineSimulator(format="kv", seed=7).lines(20))
    b = list(LineSimulator(format="kv", seed=7).lines(20))
    assert a == b
    assert a != list(LineSimulator(format="kv", seed=8).lines(20))


def test_simulator_kv_with_comma_separator() -> None:
    sim = LineSimulator(format="kv", separator=",", start=5)
    assert sim.line().startswith(b"seq=5,temperature=")
    assert [s.fields["seq"] for s in _decode_all(_driver(), b"".join(sim.lines(3)))] == [6, 7, 8]


@pytest.mark.parametrize("fmt", FORMATS)
def test_simulator_garbage_is_rejected_without_losing_good_lines(fmt: LineFormat) -> None:
    sim = LineSimulator(format=fmt, seed=1)
    driver = LineDriver("sim", LineOptions.model_validate(sim.options("/dev/null")))
    framer = LineFramer(driver.options.max_frame_bytes)
    kinds = ["invalid_utf8", "malformed", "long_line", "noise"]
    if fmt != "regex":
        kinds.append("empty")
    stream = [sim.line()]
    for kind in kinds:
        stream += [sim.garbage(kind), sim.line()]  # type: ignore[arg-type]
    seqs: list[object] = []
    reasons: list[str] = []
    for chunk in stream:
        for frame in framer.feed(chunk):
            try:
                seqs += [s.fields["seq"] for s in driver.parse(frame)]
            except RejectedInput as err:
                reasons.append(err.reason)
    assert seqs == list(range(len(kinds) + 1))
    assert framer.overflows == 1  # the long line
    expected = {"encoding", "malformed"} | ({"empty"} if fmt != "regex" else set())
    assert expected <= set(reasons)
    assert len(reasons) == len(kinds) - 1  # every garbage line except the long one


def test_no_terminator_garbage_swallows_exactly_the_next_line() -> None:
    sim = LineSimulator(format="kv")
    framer = LineFramer()
    driver = _driver()
    data = sim.line() + sim.garbage("no_terminator") + sim.line() + sim.line()
    seqs = [s.fields["seq"] for f in framer.feed(data) for s in driver.parse(f)]
    assert seqs == [0, 2]
    assert framer.overflows == 1


def test_simulator_writes_to_file_objects() -> None:
    buf = io.BytesIO()
    sim = LineSimulator(buf, "csv")
    assert sim.write_lines(3) == range(0, 3)
    assert buf.getvalue().count(b"\n") == 3


def test_simulator_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="format must be one of"):
        LineSimulator(format="xml")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no empty line"):
        LineSimulator(format="regex").garbage("empty")
    with pytest.raises(RuntimeError, match="no target"):
        LineSimulator().write(b"x")


# -- through a real pseudo-terminal, with the driver test kit ------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_pty_run_delivers_every_line(
    virtual_port: MakePort, scripted_device: MakeDevice, fmt: LineFormat
) -> None:
    pty = virtual_port()
    sim = LineSimulator(None, fmt, seed=2)
    driver = LineDriver("pty", LineOptions.model_validate(sim.options(pty.path)))
    lines = [sim.banner(), sim.garbage("invalid_utf8"), *sim.lines(300)]
    device = scripted_device(pty)
    device.stream(lambda n: lines[n], rate_hz=2000, count=len(lines), start_delay=0.3)
    run = await run_serial_driver(driver, readings=300)
    assert run.fields("seq") == list(range(300))
    assert run.stats.rejected == {"encoding": 1}


async def test_pty_burst_with_garbage_resyncs(
    virtual_port: MakePort, scripted_device: MakeDevice
) -> None:
    pty = virtual_port()
    sim = LineSimulator(seed=4)
    driver = LineDriver("pty", LineOptions.model_validate(sim.options(pty.path)))
    burst = b"".join(
        [
            *sim.lines(100),
            sim.garbage("long_line", 100_000),
            sim.garbage("malformed"),
            *sim.lines(100),
        ]
    )
    scripted_device(pty).send(burst, delay=0.3)
    run = await run_serial_driver(driver, readings=200)
    assert run.fields("seq") == list(range(200))
    assert run.stats.rejected == {"frame_too_long": 1, "malformed": 1}


async def test_pty_replays_a_capture(virtual_port: MakePort, scripted_device: MakeDevice) -> None:
    """A timed capture (what a real logger printed), replayed at ten times its speed."""
    capture = Capture.parse(
        "# sensor-gateway capture v1\n"
        '0.0 < "# logger v2 ready\\r\\n"\n'
        '0.5 < "seq=0 t=21.5\\r\\n"\n'
        "1.0 < 73 65 71 3d 31 20 74 3d 32 31 2e 36 0d 0a\n"
        '1.5 < "seq=2 t="\n'
        '1.6 < "21.7\\r\\n"\n'
    )
    pty = virtual_port()
    driver = LineDriver("pty", LineOptions(port=pty.path))
    scripted_device(pty).replay(capture, speed=10.0)
    run = await run_serial_driver(driver, readings=3)
    assert run.fields("seq") == [0, 1, 2]
    assert run.stats.rejected == {}
