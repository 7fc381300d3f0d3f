"""Line protocol: golden lines, every escaping rule and rejection, the parser, round trips.

The round-trip properties read each accepted line three ways: with our :func:`parse`, and
with small emulations of InfluxDB's own parsers (``models/points.go`` of 1.x/2.x and the
Rust ``influxdb_line_protocol`` crate of 3.x), so a line is only "good" if every server
would store exactly the reading we meant.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RejectedInput
from gateway.pipeline.lineprotocol import (
    MAX_STRING_BYTES,
    MAX_TIME_NS,
    MIN_TIME_NS,
    LineProtocolError,
    _parse_general,
    encode,
    encode_many,
    parse,
    series_key,
)
from gateway.pipeline.reading import FieldValue, Reading

T = TypeVar("T")
U = TypeVar("U")
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)
REASONS = {
    "nan",
    "empty",
    "invalid_name",
    "newline",
    "int_range",
    "string_too_long",
    "invalid_type",
    "invalid_utf8",
    "time_range",
    "key_too_long",
}


def r(
    fields: dict[str, FieldValue] | None = None,
    tags: dict[str, str] | None = None,
    measurement: str = "m",
    time_ns: int = 1,
) -> Reading:
    """A reading with small defaults for whatever a test does not care about."""
    return Reading(measurement, tags or {}, {"f": 1.5} if fields is None else fields, time_ns)


def untyped(value: object) -> Any:
    """``value`` with its type hidden from mypy, as an untyped caller could pass it."""
    return value


def attempt(function: Callable[[T], U], arg: T) -> U | LineProtocolError:
    try:
        return function(arg)
    except LineProtocolError as error:
        return error


def rejected(reading: Reading) -> LineProtocolError:
    with pytest.raises(LineProtocolError) as info:
        encode(reading)
    return info.value


# ------------------------------------------------------------------ InfluxDB emulations


def _go_unescape_string(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and text[i + 1 : i + 2] in ("\\", '"'):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def go_read(line: str) -> tuple[str, dict[str, str], dict[str, str], str]:
    """How InfluxDB 1.x/2.x (models/points.go) reads a valid line.

    Returns the measurement, tags, string fields (others as raw text) and timestamp.
    Its scanners treat a character as escaped when the *previous* one is a backslash,
    and unescape with plain replacements.
    """

    def unescape(text: str, codes: str) -> str:
        for char in codes:
            text = text.replace("\\" + char, char)
        return text

    def scan_to(start: int, stops: str) -> int:
        i = start + 1
        while i < len(line) and not (line[i] in stops and line[i - 1] != "\\"):
            i += 1
        return i

    end = scan_to(0, ", ")
    name = unescape(line[:end], ',"= ')  # Point.Name() uses escape.Unescape
    tags: dict[str, str] = {}
    i = end
    while line[i] == ",":
        eq = scan_to(i + 1, "=")
        stop = scan_to(eq + 1, ", ")
        tags[unescape(line[i + 1 : eq], ",= ")] = unescape(line[eq + 1 : stop], ",= ")
        i = stop
    # scanFields: backslash skips the next char; quotes count only in value position.
    start = j = i + 1
    quoted, equals, commas = False, 0, 0
    while j < len(line):
        char = line[j]
        if char == "\\":
            j += 2
            continue
        if char == '"' and equals > commas:
            quoted = not quoted
        elif char == "=" and not quoted:
            equals += 1
        elif char == "," and not quoted:
            commas += 1
        elif char == " " and not quoted:
            break
        j += 1
    text, stamp = line[start:j], line[j + 1 :]
    fields: dict[str, str] = {}
    k = 0
    while k < len(text):  # walkFields: scanTo('=') then scanFieldValue
        eq = k
        while not (text[eq] == "=" and (eq == 0 or text[eq - 1] != "\\")):
            eq += 1
        v, quoted = eq + 1, False
        while v < len(text):
            if text[v] == "\\" and text[v + 1 : v + 2] in ('"', "\\"):
                v += 2
                continue
            if text[v] == '"':
                quoted = not quoted
            elif text[v] == "," and not quoted:
                break
            v += 1
        raw = text[eq + 1 : v]
        value = _go_unescape_string(raw[1:-1]) if raw.startswith('"') else raw
        fields[unescape(text[k:eq], ',"= ')] = value
        k = v + 1
    return name, tags, fields, stamp


def rust_read(line: str) -> tuple[str, dict[str, str], dict[str, str], str]:
    """How InfluxDB 3 (Rust influxdb_line_protocol, escape_or_fallback) reads a valid line."""

    def ident(i: int, stops: str, escapable: str) -> tuple[str, int]:
        out: list[str] = []
        while i < len(line) and line[i] not in stops:
            if line[i] == "\\" and i + 1 < len(line):
                after = line[i + 1]
                out.append(after if after in escapable else "\\" + after)
                i += 2
            else:
                out.append(line[i])
                i += 1
        value = "".join(out)
        assert value, "empty name"
        assert not value.endswith("\\"), "EndsWithBackslash"
        return value, i

    name, i = ident(0, ", \t\0", ", \\")
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = ident(i + 1, "= \t", "\\,= ")
        assert line[i] == "="
        tags[key], i = ident(i + 1, ", \t", "\\,= ")
    assert line[i] == " "
    fields: dict[str, str] = {}
    i += 1
    while True:
        key, i = ident(i, "= \t", "\\,= ")
        assert line[i] == "="
        i += 1
        if line[i] == '"':
            out: list[str] = []
            i += 1
            while line[i] != '"':
                if line.startswith(('\\"', "\\\\"), i):
                    out.append(line[i + 1])
                    i += 2
                else:
                    out.append(line[i])
                    i += 1
            fields[key] = "".join(out)
            i += 1
        else:
            start = i
            while line[i] not in ", ":
                i += 1
            fields[key] = line[start:i]
        if line[i] == " ":
            return name, tags, fields, line[i + 1 :]
        i += 1


def assert_round_trips(reading: Reading, line: str) -> None:
    """``line`` is ``reading`` to our parser and to every InfluxDB parser emulated."""
    # so it can never become two points
    assert "\n" not in line
    assert "\r" not in line
    tags = {k: v for k, v in reading.tags.items() if v}
    back = parse(line)
    assert back.measurement == reading.measurement
    assert back.tags == tags
    assert back.time_ns == reading.time_ns
    assert back.fields.keys() == reading.fields.keys()
    for key, value in reading.fields.items():
        got = back.fields[key]
        assert type(got) is type(value), key
        assert got == value, key
        if isinstance(value, float):
            assert isinstance(got, float)
            assert math.copysign(1.0, got) == math.copysign(1.0, value)
    strings = {k: v for k, v in reading.fields.items() if isinstance(v, str)}
    for name, their_tags, their_fields, stamp in (go_read(line), rust_read(line)):
        assert name == reading.measurement
        assert their_tags == tags
        assert their_fields.keys() == reading.fields.keys()
        assert {k: their_fields[k] for k in strings} == strings
        assert stamp == str(reading.time_ns)
    key = series_key(line)
    assert line.startswith(key + " ")
    head = parse(key + " x=1i 0")
    assert (head.measurement, head.tags) == (reading.measurement, tags)


# ------------------------------------------------------------------------ golden lines


def test_golden_escaping_example() -> None:
    line = encode(Reading("my meas", {"t k": "a,b=c"}, {"f=1": 'say "hi"\\'}, 1))
    assert line == r'my\ meas,t\ k=a\,b\=c f\=1="say \"hi\"\\" 1'


def test_golden_typical_reading() -> None:
    reading = Reading(
        "climate",
        {"site": "home", "device": "kitchen"},
        {"temperature": 21.5, "humidity": 45.2, "battery": 87},
        1732512345123456789,
    )
    expected = (
        "climate,device=kitchen,site=home "
        "temperature=21.5,humidity=45.2,battery=87i 1732512345123456789"
    )
    assert encode(reading) == expected
    assert parse(expected) == reading


@pytest.mark.parametrize(
    ("reading", "line"),
    [
        # The examples of InfluxDB's line protocol reference ("Special characters").
        (
            Reading("my Measurement", {}, {"fieldKey": "string value"}, 1),
            r'my\ Measurement fieldKey="string value" 1',
        ),
        (
            Reading(
                "myMeasurement",
                {"tag Key1": "tag Value1", "tag Key2": "tag Value2"},
                {"fieldKey": 100},
                1,
            ),
            r"myMeasurement,tag\ Key1=tag\ Value1,tag\ Key2=tag\ Value2 fieldKey=100i 1",
        ),
        (
            Reading(
                "myMeasurement", {"tagKey": "🍭"}, {"fieldKey": "Launch 🚀"}, 1556813561098000000
            ),
            'myMeasurement,tagKey=🍭 fieldKey="Launch 🚀" 1556813561098000000',
        ),
        (
            Reading("myMeasurement", {}, {"fieldKey": '"string" within a string'}, 1),
            r'myMeasurement fieldKey="\"string\" within a string" 1',
        ),
        (
            Reading(
                "weather", {"location": "us-midwest"}, {"temperature": 82.0}, 1465839830100400200
            ),
            "weather,location=us-midwest temperature=82.0 1465839830100400200",
        ),
    ],
)
def test_golden_docs_lines(reading: Reading, line: str) -> None:
    assert encode(reading) == line
    assert_round_trips(reading, line)


# --------------------------------------------------------------------------- escaping


@pytest.mark.parametrize(
    ("reading", "line"),
    [
        # measurement: comma and space only; "=" and quotes stay as they are
        (r(measurement="a,b"), r"a\,b f=1.5 1"),
        (r(measurement="a b"), r"a\ b f=1.5 1"),
        (r(measurement="a=b"), "a=b f=1.5 1"),
        (r(measurement='a"b'), 'a"b f=1.5 1'),
        # tag keys and values: comma, equals sign, space; quotes stay
        (r(tags={"a,b": "v"}), r"m,a\,b=v f=1.5 1"),
        (r(tags={"a=b": "v"}), r"m,a\=b=v f=1.5 1"),
        (r(tags={"a b": "v"}), r"m,a\ b=v f=1.5 1"),
        (r(tags={"k": "x,y"}), r"m,k=x\,y f=1.5 1"),
        (r(tags={"k": "x=y"}), r"m,k=x\=y f=1.5 1"),
        (r(tags={"k": "x y"}), r"m,k=x\ y f=1.5 1"),
        (r(tags={"k": 'say "hi"'}), r'm,k=say\ "hi" f=1.5 1'),
        # field keys: comma, equals sign, space
        (r({"a,b": 1.5}), r"m a\,b=1.5 1"),
        (r({"a=b": 1.5}), r"m a\=b=1.5 1"),
        (r({"a b": 1.5}), r"m a\ b=1.5 1"),
        (r({'"q"': 1.5}), 'm "q"=1.5 1'),
        # string values: double quote and backslash; commas, spaces, "=" as they are
        (r({"s": 'a"b'}), r'm s="a\"b" 1'),
        (r({"s": "a\\b"}), r'm s="a\\b" 1'),
        (r({"s": "tail\\"}), r'm s="tail\\" 1'),
        (r({"s": "a, b=c"}), 'm s="a, b=c" 1'),
        (r({"s": ""}), 'm s="" 1'),
        (r({"s": "tab\there"}), 'm s="tab\there" 1'),
        # a backslash before any other character is an ordinary character in a name
        (
            r(measurement="C:\\temp", tags={"p\\x": "a\\b"}, fields={"k\\n": 1}),
            r"C:\temp,p\x=a\b k\n=1i 1",
        ),
    ],
)
def test_escaping(reading: Reading, line: str) -> None:
    assert encode(reading) == line
    assert_round_trips(reading, line)


def test_tags_sorted_by_key_whatever_their_order() -> None:
    forward = encode(r(tags={"a": "1", "b": "2", "c": "3"}))
    backward = encode(r(tags={"c": "3", "b": "2", "a": "1"}))
    assert forward == backward == "m,a=1,b=2,c=3 f=1.5 1"


def test_empty_tag_value_is_dropped_not_rejected() -> None:
    assert encode(r(tags={"a": "", "b": "x"})) == "m,b=x f=1.5 1"
    assert encode(r(tags={"a": ""})) == "m f=1.5 1"


# ---------------------------------------------------------------------- value formats


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (True, "true"),
        (False, "false"),
        (0, "0i"),
        (1, "1i"),
        (-5, "-5i"),
        (I64_MAX, "9223372036854775807i"),
        (I64_MIN, "-9223372036854775808i"),
        (21.5, "21.5"),
        (1.0, "1.0"),
        (0.1, "0.1"),
        (-0.0, "-0.0"),
        (1e300, "1e+300"),
        (1e-7, "1e-07"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e+308"),
        (12345678901234567890.0, "1.2345678901234567e+19"),
    ],
)
def test_value_formats(value: FieldValue, text: str) -> None:
    reading = r({"v": value})
    line = encode(reading)
    assert line == f"m v={text} 1"
    assert_round_trips(reading, line)


def test_bool_is_not_an_int_and_int_is_not_a_float() -> None:
    line = encode(r({"b": True, "i": 1, "x": 1.0}))
    assert line == "m b=true,i=1i,x=1.0 1"
    fields = parse(line).fields
    assert [type(fields[k]) for k in ("b", "i", "x")] == [bool, int, float]


def test_subclasses_of_the_field_types_are_written_as_the_base_type() -> None:
    class Level(enum.IntEnum):
        HIGH = 3

    class Celsius(float):
        def __repr__(self) -> str:
            return f"Celsius({float(self)})"

    class Name(str):
        pass

    line = encode(r({"level": Level.HIGH, "t": Celsius(20.5), "n": Name('x"y')}))
    assert line == r'm level=3i,t=20.5,n="x\"y" 1'


def test_timestamp_limits() -> None:
    assert encode(r(time_ns=MIN_TIME_NS)).endswith(f" {MIN_TIME_NS}")
    assert encode(r(time_ns=MAX_TIME_NS)).endswith(f" {MAX_TIME_NS}")
    assert encode(r(time_ns=-1)) == "m f=1.5 -1"
    assert parse(encode(r(time_ns=MIN_TIME_NS))).time_ns == MIN_TIME_NS


def test_string_limit_is_in_utf8_bytes() -> None:
    assert encode(r({"s": "x" * MAX_STRING_BYTES}))
    assert encode(r({"s": "é" * (MAX_STRING_BYTES // 2)}))
    error = rejected(r({"s": "x" * (MAX_STRING_BYTES + 1)}))
    assert error.reason == "string_too_long"
    assert (
        str(error) == 'field "s": string is 65537 bytes, over the 65536-byte limit of InfluxDB 1.x'
    )
    assert rejected(r({"s": "é" * (MAX_STRING_BYTES // 2 + 1)})).reason == "string_too_long"


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("reading", "reason", "message"),
    [
        (r({"temp": math.nan}), "nan", 'field "temp": NaN cannot be written to InfluxDB'),
        (r({"temp": math.inf}), "nan", 'field "temp": +Inf cannot be written to InfluxDB'),
        (r({"temp": -math.inf}), "nan", 'field "temp": -Inf cannot be written to InfluxDB'),
        (r({}), "empty", "reading has no fields: InfluxDB cannot store a point without fields"),
        (
            r({"n": I64_MAX + 1}),
            "int_range",
            'field "n": integer 9223372036854775808 is outside the signed 64-bit range InfluxDB stores',
        ),
        (
            r({"n": I64_MIN - 1}),
            "int_range",
            'field "n": integer -9223372036854775809 is outside the signed 64-bit range InfluxDB '
            "stores",
        ),
        (r(measurement=""), "invalid_name", "measurement is empty"),
        (r(tags={"": "v"}), "invalid_name", "tag key is empty"),
        (r(tags={"": ""}), "invalid_name", "tag key is empty"),
        (r({"": 1.0}), "invalid_name", "field key is empty"),
        (
            r(measurement="a\nb"),
            "newline",
            'measurement "a\\nb": contains a line break, which would split the point',
        ),
        (
            r(measurement="a\rb"),
            "newline",
            'measurement "a\\rb": contains a line break, which would split the point',
        ),
        (
            r(tags={"k\n": "v"}),
            "newline",
            'tag key "k\\n": contains a line break, which would split the point',
        ),
        (
            r(tags={"k": "v\n"}),
            "newline",
            'tag "k": value "v\\n": contains a line break, which would split the point',
        ),
        (
            r({"f\r": 1.0}),
            "newline",
            'field key "f\\r": contains a line break, which would split the point',
        ),
        (
            r({"s": "line1\nline2"}),
            "newline",
            'field "s": string contains a line break, which would split the point',
        ),
        (
            r({"s": "a\rb"}),
            "newline",
            'field "s": string contains a line break, which would split the point',
        ),
        (r(tags={"time": "x"}), "invalid_name", 'tag key "time" is reserved by InfluxDB'),
        (r(tags={"_field": "x"}), "invalid_name", 'tag key "_field" is reserved by InfluxDB'),
        (
            r(tags={"_measurement": "x"}),
            "invalid_name",
            'tag key "_measurement" is reserved by InfluxDB',
        ),
        (r(tags={"_start": "x"}), "invalid_name", 'tag key "_start" is reserved by InfluxDB'),
        (r(tags={"_stop": "x"}), "invalid_name", 'tag key "_stop" is reserved by InfluxDB'),
        (r(tags={"_value": "x"}), "invalid_name", 'tag key "_value" is reserved by InfluxDB'),
        (r({"time": 1.0}), "invalid_name", 'field key "time" is reserved by InfluxDB'),
        (
            r(measurement="_internal"),
            "invalid_name",
            "measurement \"_internal\": names starting with '_' are reserved by InfluxDB",
        ),
        (
            r(measurement="#m"),
            "invalid_name",
            "measurement \"#m\": InfluxDB reads a line starting with '#' as a comment and drops it",
        ),
        (
            r(measurement="m\\"),
            "invalid_name",
            'measurement "m\\\\": a trailing backslash cannot round-trip through InfluxDB',
        ),
        (
            r(tags={"k\\": "v"}),
            "invalid_name",
            'tag key "k\\\\": a trailing backslash cannot round-trip through InfluxDB',
        ),
        (
            r(tags={"k": "v\\"}),
            "invalid_name",
            'tag "k": value "v\\\\": a trailing backslash cannot round-trip through InfluxDB',
        ),
        (
            r({"f\\": 1.0}),
            "invalid_name",
            'field key "f\\\\": a trailing backslash cannot round-trip through InfluxDB',
        ),
        (
            r(measurement="a\\,b"),
            "invalid_name",
            "measurement \"a\\\\,b\": a backslash before ',' cannot round-trip through InfluxDB",
        ),
        (
            r(measurement="a\\ b"),
            "invalid_name",
            "measurement \"a\\\\ b\": a backslash before ' ' cannot round-trip through InfluxDB",
        ),
        (
            r(tags={"k": "a\\=b"}),
            "invalid_name",
            'tag "k": value "a\\\\=b": a backslash before \'=\' cannot round-trip through InfluxDB',
        ),
        (
            r({"a\\\\b": 1.0}),
            "invalid_name",
            "field key \"a\\\\\\\\b\": a backslash before '\\\\' cannot round-trip through InfluxDB",
        ),
        (
            r({'a\\"b': 1.0}),
            "invalid_name",
            'field key "a\\\\\\"b": a backslash before \'"\' cannot round-trip through InfluxDB',
        ),
        (
            r(measurement="a\tb"),
            "invalid_name",
            'measurement "a\\tb": contains a control character (tabs and NULs are separators to '
            "InfluxDB's parsers)",
        ),
        (
            r(tags={"k": "\x00"}),
            "invalid_name",
            'tag "k": value "\\u0000": contains a control character (tabs and NULs are separators '
            "to InfluxDB's parsers)",
        ),
        (
            r(measurement="a\ud800"),
            "invalid_utf8",
            'measurement "a\\ud800": contains a lone surrogate, which has no UTF-8 form',
        ),
        (
            r({"s": "\udc80"}),
            "invalid_utf8",
            'field "s": string contains a lone surrogate, which has no UTF-8 form',
        ),
        (
            r({"v": untyped(None)}),
            "invalid_type",
            'field "v": a NoneType is not a float, int, bool or str',
        ),
        (
            r({"v": untyped(b"x")}),
            "invalid_type",
            'field "v": a bytes is not a float, int, bool or str',
        ),
        (
            r(time_ns=MAX_TIME_NS + 1),
            "time_range",
            "timestamp 9223372036854775807 is outside the range InfluxDB accepts "
            "(-9223372036854775806..9223372036854775806 ns)",
        ),
        (
            r(time_ns=MIN_TIME_NS - 1),
            "time_range",
            "timestamp -9223372036854775807 is outside the range InfluxDB accepts "
            "(-9223372036854775806..9223372036854775806 ns)",
        ),
        (
            r(time_ns=untyped(True)),
            "time_range",
            "timestamp True is outside the range InfluxDB accepts "
            "(-9223372036854775806..9223372036854775806 ns)",
        ),
        (
            r(tags={"k": untyped(1)}),
            "invalid_name",
            "tag 'k'=1: tag keys and values must be str",
        ),
        (
            r(measurement="m" * 65530, tags={"k": "v"}),
            "key_too_long",
            'field "f": measurement, tags and field key exceed InfluxDB\'s 65535-byte series key '
            "limit",
        ),
    ],
)
def test_rejections(reading: Reading, reason: str, message: str) -> None:
    error = rejected(reading)
    assert isinstance(error, RejectedInput)
    assert error.reason == reason
    assert str(error) == message


def test_rejections_keep_rejecting_with_a_warm_cache() -> None:
    good = r(tags={"k": "v"})
    assert encode(good) == encode(good)
    bad = r(tags={"k": "v", "time": "t"})
    assert rejected(bad).reason == "invalid_name"
    assert rejected(bad).reason == "invalid_name"


def test_key_limit_counts_utf8_bytes() -> None:
    # "€" is 3 bytes: 21820 of them are over the limit, though far fewer characters
    fits = r(measurement="m" * 100, fields={"€" * 21000: 1.0})
    assert encode(fits)
    assert rejected(r(measurement="m" * 100, fields={"€" * 21820: 1.0})).reason == "key_too_long"


def test_encode_many_splits_good_and_bad() -> None:
    good, nan, empty = r({"a": 1}), r({"a": math.nan}), r({})
    lines, bad = encode_many([good, nan, good, empty])
    assert lines == ["m a=1i 1", "m a=1i 1"]
    assert [(reading, error.reason) for reading, error in bad] == [(nan, "nan"), (empty, "empty")]


# ------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("line", "reading"),
    [
        ("cpu value=1 10", Reading("cpu", {}, {"value": 1.0}, 10)),
        (
            "cpu,host=a,region=b v=2i,u=3u 10",
            Reading("cpu", {"host": "a", "region": "b"}, {"v": 2, "u": 3}, 10),
        ),
        (
            "m a=t,b=T,c=true,d=True,e=TRUE,f=f,g=F,h=false,i=False,j=FALSE 1",
            Reading(
                "m",
                {},
                {
                    "a": True,
                    "b": True,
                    "c": True,
                    "d": True,
                    "e": True,
                    "f": False,
                    "g": False,
                    "h": False,
                    "i": False,
                    "j": False,
                },
                1,
            ),
        ),
        (
            "m a=1e3,b=1.5E-3,c=-2.5e+10,d=.5,e=5.,f=-0 1",
            Reading(
                "m", {}, {"a": 1e3, "b": 1.5e-3, "c": -2.5e10, "d": 0.5, "e": 5.0, "f": 0.0}, 1
            ),
        ),
        (
            "m a=9223372036854775807i,b=-9223372036854775808i,c=18446744073709551615u 1",
            Reading("m", {}, {"a": I64_MAX, "b": I64_MIN, "c": 2**64 - 1}, 1),
        ),
        (
            r'm s="a\\b",t="a\b",u="say \"hi\"",v="",w="a, b=c d" 1',
            Reading(
                "m", {}, {"s": "a\\b", "t": "a\\b", "u": 'say "hi"', "v": "", "w": "a, b=c d"}, 1
            ),
        ),
        ("  m  f=1i   -5  ", Reading("m", {}, {"f": 1}, -5)),
        ("m f=1i 5\n", Reading("m", {}, {"f": 1}, 5)),
        ("mé,ключ=значение 字段=1i 5", Reading("mé", {"ключ": "значение"}, {"字段": 1}, 5)),
    ],
)
def test_parse_foreign_lines(line: str, reading: Reading) -> None:
    assert parse(line) == reading
    for key, value in reading.fields.items():
        assert type(parse(line).fields[key]) is type(value)


@pytest.mark.parametrize(
    ("line", "column", "words"),
    [
        ("cpu value=1", 12, "missing timestamp"),
        ("cpu", 4, "missing fields"),
        ("", 1, "empty line"),
        ("# a comment", 1, "comment"),
        (",t=v f=1 1", 1, "measurement is empty"),
        ("m,t= f=1 1", 5, 'tag "t": value is empty'),
        ("m,t f=1 1", 4, "has no '='"),
        ("m,=v f=1 1", 3, "tag key is empty"),
        ("m,t=a=b f=1 1", 6, "unescaped '='"),
        ("m,a=1,a=2 f=1 1", 10, 'duplicate tag key "a"'),
        ("m f=1,f=2 1", 8, 'duplicate field key "f"'),
        ("m =1 1", 3, "field key is empty"),
        ("m f 1", 4, "has no '='"),
        ("m f= 1", 5, "has no value"),
        ('m f="abc 1', 5, "no closing quote"),
        ('m f="abc"x 1', 10, "unexpected 'x'"),
        ("m f=1 1 2", 9, "unexpected text after the timestamp"),
        ("m f=1 1.5", 7, "invalid timestamp"),
        ("m f=1 9223372036854775807", 7, "invalid timestamp"),
        ("m f=1 abc", 7, "invalid timestamp"),
        ("m f=nan 1", 5, "invalid value"),
        ("m f=NaN 1", 5, "invalid value"),
        ("m f=inf 1", 5, "invalid value"),
        ("m f=Infinity 1", 5, "invalid value"),
        ("m f=1e999 1", 5, "invalid value"),
        ("m f=+1 1", 5, "invalid value"),
        ("m f=1_000 1", 5, "invalid value"),
        ("m f=1.2.3 1", 5, "invalid value"),
        ("m f=0x10 1", 5, "invalid value"),
        ("m f=1.5i 1", 5, "invalid value"),
        ("m f=9223372036854775808i 1", 5, "invalid value"),
        ("m f=-1u 1", 5, "invalid value"),
        ("m f=18446744073709551616u 1", 5, "invalid value"),
        ("m f=١٢i 1", 5, "invalid value"),
        ("m f=tRUE 1", 5, "invalid value"),
        ("m f=yes 1", 5, "invalid value"),
        ("m f=1\n2 1", 6, "line break"),
        ("m f=1\r 1", 6, "line break"),
        ("m\\ f=1 1", 9, "field key \"1\" has no '='"),  # "m f=1" is the measurement
        ("m\\\\ f=1 1", 2, "different InfluxDB versions"),
        ("m,t=a\\\\ f=1 1", 6, "different InfluxDB versions"),
        ('m f\\"=1 1', 4, "different InfluxDB versions"),
        ("m,k=v\tx f=1i 5", 6, "control character"),
        ("m f=1 1\\", 0, "invalid timestamp"),
    ],
)
def test_parse_errors(line: str, column: int, words: str) -> None:
    with pytest.raises(LineProtocolError) as info:
        parse(line)
    assert info.value.reason == "malformed"
    assert words in str(info.value)
    if column:
        assert info.value.column == column
        assert str(info.value).startswith(f"column {column}: ")


# --------------------------------------------------------------------------- series_key


def test_series_key() -> None:
    assert series_key("m,a=1,b=2 f=1i 5") == "m,a=1,b=2"
    assert series_key("m f=1i 5") == "m"
    line = encode(Reading("my m", {"t k": "a b"}, {"f x": "s p a c e"}, 1))
    assert series_key(line) == r"my\ m,t\ k=a\ b"
    with pytest.raises(LineProtocolError):
        series_key("nospace")
    with pytest.raises(LineProtocolError):
        series_key(" leading")


def test_same_series_same_key_whatever_the_fields_and_time() -> None:
    one = encode(Reading("m", {"b": "2", "a": "1"}, {"x": 1}, 1))
    two = encode(Reading("m", {"a": "1", "b": "2"}, {"y": "z z"}, 2))
    assert series_key(one) == series_key(two)


# ----------------------------------------------------------------- property round trips

# Names that can always be written: every special character, but a backslash is only
# ever followed by an ordinary one.
SAFE_TOKENS = ["a", "Z", "0", ",", "=", " ", '"', "'", "\\x", "é", "🚀", "_", "#"]
TOKENS = st.sampled_from(SAFE_TOKENS)
WRITABLE = st.lists(TOKENS, min_size=1, max_size=8).map("".join)
MEASUREMENT = WRITABLE.filter(lambda s: s[0] not in "_#")
TAG_KEY = WRITABLE.filter(
    lambda s: s not in {"time", "_field", "_measurement", "_start", "_stop", "_value"}
)
FIELD_KEY = WRITABLE.filter(lambda s: s != "time")
GOOD_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(I64_MIN, I64_MAX),
    st.booleans(),
    st.text(max_size=20).filter(lambda s: "\n" not in s and "\r" not in s),
    # any backslash is fine in a string value
    st.lists(st.sampled_from([*SAFE_TOKENS, "\\", '\\"', "\\\\"])).map("".join),
)
# ...and the pieces that must be refused somewhere: backslashes before special characters
# or at the end, line breaks, controls, a lone surrogate; plus any other character.
BAD_TOKENS = ["\\", "\\,", "\\=", "\\ ", '\\"', "\\\\", "\n", "\r", "\t", "\x00", "\ud800"]
HOSTILE = st.lists(
    st.sampled_from(SAFE_TOKENS + BAD_TOKENS) | st.characters(codec="utf-8"), max_size=6
).map("".join)
ANY_NAME = st.one_of(HOSTILE, WRITABLE)
ANY_VALUES = st.one_of(
    st.floats(),
    st.integers(-(2**64), 2**64),
    st.booleans(),
    HOSTILE,
    WRITABLE,
)


@settings(max_examples=400, deadline=None, database=None)
@given(
    measurement=ANY_NAME,
    tags=st.dictionaries(ANY_NAME, ANY_NAME, max_size=3),
    fields=st.dictionaries(ANY_NAME, ANY_VALUES, min_size=1, max_size=3),
    time_ns=st.integers(MIN_TIME_NS - 2, MAX_TIME_NS + 2),
)
def test_any_reading_round_trips_or_is_rejected(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue],
    time_ns: int,
) -> None:
    reading = Reading(measurement, tags, fields, time_ns)
    line = attempt(encode, reading)
    if isinstance(line, LineProtocolError):
        assert line.reason in REASONS
        assert str(line)
    else:
        assert_round_trips(reading, line)


@settings(max_examples=200, deadline=None, database=None)
@given(
    measurement=MEASUREMENT,
    tags=st.dictionaries(TAG_KEY, st.lists(TOKENS).map("".join), max_size=4),
    fields=st.dictionaries(FIELD_KEY, GOOD_VALUES, min_size=1, max_size=4),
    time_ns=st.integers(MIN_TIME_NS, MAX_TIME_NS),
)
def test_writable_readings_are_accepted_and_round_trip(
    measurement: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue],
    time_ns: int,
) -> None:
    reading = Reading(measurement, tags, fields, time_ns)
    assert_round_trips(reading, encode(reading))


@settings(max_examples=300, deadline=None, database=None)
@given(st.text(st.sampled_from(list('m,=" \\ft1i.-eu\n')), max_size=24))
def test_parse_raises_only_line_protocol_errors(line: str) -> None:
    reading = attempt(parse, line)
    if isinstance(reading, LineProtocolError):
        assert reading.reason == "malformed"
        assert reading.column is not None
        return
    # the fast path for plain lines agrees with the general parser
    assert _parse_general(line.removesuffix("\n")) == reading
    # whatever it accepts encodes back (unless, e.g., a name is reserved: parse() does not
    # police those) to a line that parses to the same reading
    again = attempt(encode, reading)
    if isinstance(again, str):
        assert parse(again) == reading
