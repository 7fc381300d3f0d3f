"""Normalization: per-field rules, tags, measurement, timestamps and config validation."""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.pipeline.normalize import FieldRule, NormalizeConfig, Normalizer, NormalizeResult
from gateway.pipeline.reading import RawSample, Reading

NOW = 1_700_000_000_000_000_000
SECOND = 1_000_000_000


def normalize(
    fields: Mapping[str, object],
    config: Mapping[str, Any] | None = None,
    *,
    tags: Mapping[str, str] | None = None,
    time_ns: int | None = None,
    measurement: str | None = None,
    device: str = "dev1",
) -> NormalizeResult:
    cfg = NormalizeConfig.model_validate({"measurement": "m", **(config or {})})
    sample = RawSample(fields, tags or {}, time_ns, measurement)
    return Normalizer(device, cfg).apply(sample, NOW)


def assert_fields(actual: Mapping[str, object], expected: Mapping[str, object]) -> None:
    """Equal keys, identical types (21 == 21.0 == True would hide a type change), close floats."""
    assert actual.keys() == expected.keys()
    for key, want in expected.items():
        got = actual[key]
        assert type(got) is type(want), (key, got, want)
        if isinstance(want, float):
            assert got == pytest.approx(want, rel=1e-9, abs=1e-12), key
        else:
            assert got == want, key


# One field "x" through one rule: (rule, raw value, expected fields, expected drop reason).
FIELD_CASES = [
    # rename, calibration
    pytest.param({"name": "temperature"}, 21.5, {"temperature": 21.5}, None, id="rename"),
    pytest.param({"scale": 0.1, "offset": -5}, 250, {"x": 20.0}, None, id="scale-offset"),
    pytest.param({"scale": 0.5}, -3.0, {"x": -1.5}, None, id="scale-negative"),
    # one conversion per dimension
    pytest.param({"unit": "degF", "to_unit": "degC"}, 212, {"x": 100.0}, None, id="unit-temp"),
    pytest.param({"unit": "K", "to_unit": "°C"}, 0, {"x": -273.15}, None, id="unit-kelvin"),
    pytest.param(
        {"unit": "inHg", "to_unit": "hPa"}, 1, {"x": 33.86388640341}, None, id="unit-pres"
    ),
    pytest.param({"unit": "kWh", "to_unit": "Wh"}, 1.5, {"x": 1500.0}, None, id="unit-energy"),
    pytest.param({"unit": "kW", "to_unit": "W"}, 2, {"x": 2000.0}, None, id="unit-power"),
    pytest.param({"unit": "kn", "to_unit": "km/h"}, 10, {"x": 18.52}, None, id="unit-speed"),
    pytest.param({"unit": "in", "to_unit": "mm"}, 2, {"x": 50.8}, None, id="unit-length"),
    pytest.param({"unit": "gal", "to_unit": "L"}, 1, {"x": 3.785411784}, None, id="unit-volume"),
    pytest.param({"unit": "%", "to_unit": "ratio"}, 45, {"x": 0.45}, None, id="unit-fraction"),
    pytest.param(
        {"scale": 2, "offset": 1, "unit": "degC", "to_unit": "K"},
        10,
        {"x": 294.15},
        None,
        id="calibration-before-conversion",
    ),
    # range: inclusive bounds, checked after conversion
    pytest.param({"min": 0, "max": 100}, 100, {"x": 100.0}, None, id="range-max-inclusive"),
    pytest.param({"min": 0, "max": 100}, 0, {"x": 0.0}, None, id="range-min-inclusive"),
    pytest.param({"min": 0, "max": 100}, 100.01, {}, "out_of_range", id="range-above"),
    pytest.param({"min": 0, "max": 100}, -1, {}, "out_of_range", id="range-below"),
    pytest.param(
        {"unit": "degF", "to_unit": "degC", "max": 50},
        130,
        {},
        "out_of_range",
        id="range-converted",
    ),
    pytest.param(
        {"unit": "degF", "to_unit": "degC", "max": 50},
        120,
        {"x": 48.88888888888889},
        None,
        id="range-converted-ok",
    ),
    # rounding: after conversion and after the range check
    pytest.param(
        {"unit": "degF", "to_unit": "degC", "round": 1}, 70, {"x": 21.1}, None, id="round-converted"
    ),
    pytest.param({"max": 100, "round": 0}, 100.4, {}, "out_of_range", id="round-after-range"),
    pytest.param({"round": 2}, 3, {"x": 3.0}, None, id="round-int-input"),
    # default type: numbers become floats, bools and strings stay
    pytest.param({}, 21, {"x": 21.0}, None, id="int-becomes-float"),
    pytest.param({}, True, {"x": True}, None, id="bool-stays"),
    pytest.param({}, "21.5", {"x": "21.5"}, None, id="string-stays"),
    # numeric strings are parsed when the rule is numeric
    pytest.param({"unit": "degC", "to_unit": "K"}, "21.5", {"x": 294.65}, None, id="str-unit"),
    pytest.param({"scale": 10}, " 2.5 ", {"x": 25.0}, None, id="str-scale"),
    pytest.param({"type": "float"}, "21.5", {"x": 21.5}, None, id="str-float"),
    pytest.param({"unit": "degC", "to_unit": "K"}, "warm", {}, "not_numeric", id="str-not-numeric"),
    pytest.param({"type": "float"}, "", {}, "not_numeric", id="str-empty"),
    pytest.param({"scale": 2}, True, {}, "type", id="bool-where-number"),
    # int type
    pytest.param({"type": "int"}, 7, {"x": 7}, None, id="int-int"),
    pytest.param({"type": "int"}, 7.0, {"x": 7}, None, id="int-integral-float"),
    pytest.param({"type": "int"}, 7.5, {}, "type", id="int-non-integral"),
    pytest.param({"type": "int"}, " 42 ", {"x": 42}, None, id="int-str"),
    pytest.param({"type": "int"}, "42.5", {}, "type", id="int-str-non-integral"),
    pytest.param({"type": "int", "round": 0}, 21.6, {"x": 22}, None, id="int-round"),
    pytest.param({"type": "int", "scale": 10}, 2.5, {"x": 25}, None, id="int-scaled"),
    pytest.param({"type": "int"}, 2**60 + 1, {"x": 2**60 + 1}, None, id="int-exact-big"),
    pytest.param({"type": "int"}, "1152921504606846977", {"x": 2**60 + 1}, None, id="int-str-big"),
    # bool type
    pytest.param({"type": "bool"}, False, {"x": False}, None, id="bool-bool"),
    pytest.param({"type": "bool"}, " ON ", {"x": True}, None, id="bool-str-on"),
    pytest.param({"type": "bool"}, "false", {"x": False}, None, id="bool-str-false"),
    pytest.param({"type": "bool"}, 1, {"x": True}, None, id="bool-one"),
    pytest.param({"type": "bool"}, 0.0, {"x": False}, None, id="bool-zero"),
    pytest.param({"type": "bool"}, 2, {}, "type", id="bool-two"),
    pytest.param({"type": "bool"}, "maybe", {}, "type", id="bool-word"),
    # string type
    pytest.param({"type": "string"}, True, {"x": "true"}, None, id="string-bool"),
    pytest.param({"type": "string"}, 21.5, {"x": "21.5"}, None, id="string-float"),
    pytest.param({"type": "string"}, 3, {"x": "3"}, None, id="string-int"),
    # non-finite values never pass
    pytest.param({}, math.nan, {}, "nan", id="nan"),
    pytest.param({}, math.inf, {}, "nan", id="inf"),
    pytest.param({"unit": "degC", "to_unit": "K"}, -math.inf, {}, "nan", id="neg-inf-unit"),
    pytest.param({"scale": 2}, "nan", {}, "nan", id="nan-str"),
    pytest.param({"type": "float"}, "1e999", {}, "nan", id="overflow-str"),
    pytest.param({"scale": 1e300}, 1e300, {}, "nan", id="overflow-scaled"),
    pytest.param({"type": "string"}, math.nan, {}, "nan", id="nan-string-type"),
    pytest.param({"type": "bool"}, math.nan, {}, "nan", id="nan-bool-type"),
    # nested values are the driver's to flatten
    pytest.param({}, {"a": 1}, {}, "type", id="nested-dict"),
    pytest.param({"unit": "degC", "to_unit": "K"}, [1, 2], {}, "type", id="nested-list"),
    pytest.param({"type": "string"}, {"a": 1}, {}, "type", id="nested-string-type"),
    pytest.param({"type": "bool"}, [True], {}, "type", id="nested-bool-type"),
    pytest.param({}, b"21", {}, "type", id="bytes"),
    pytest.param({}, 10**400, {}, "type", id="huge-int"),
    # JSON null means no value: skipped, not counted
    pytest.param({"scale": 2}, None, {}, None, id="none-skipped"),
]


@pytest.mark.parametrize(("rule", "raw", "expected", "reason"), FIELD_CASES)
def test_field_rule(
    rule: dict[str, Any], raw: object, expected: dict[str, object], reason: str | None
) -> None:
    result = normalize({"x": raw}, {"fields": {"x": rule}})
    if expected:
        assert result.reading is not None
        assert_fields(result.reading.fields, expected)
    else:
        assert result.reading is None
    assert result.dropped == ((("x", reason),) if reason else ())
    assert result.flagged == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(21, {"x": 21.0}, id="int-becomes-float"),
        pytest.param(21.5, {"x": 21.5}, id="float"),
        pytest.param(False, {"x": False}, id="bool"),
        pytest.param("ok", {"x": "ok"}, id="string"),
    ],
)
def test_unlisted_fields_get_the_default_treatment(
    raw: object, expected: dict[str, object]
) -> None:
    result = normalize({"x": raw})
    assert result.reading is not None
    assert_fields(result.reading.fields, expected)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(math.nan, "nan"), ({"a": 1}, "type"), ([1], "type")],
)
def test_unlisted_fields_are_checked_too(raw: object, reason: str) -> None:
    result = normalize({"x": raw, "y": 1})
    assert result.reading is not None
    assert_fields(result.reading.fields, {"y": 1.0})
    assert result.dropped == (("x", reason),)


def test_a_drop_keeps_the_other_fields() -> None:
    result = normalize(
        {"t": 150, "h": 40, "s": "nan", "n": None},
        {"fields": {"t": {"max": 100}, "s": {"type": "float"}}},
    )
    assert result.reading is not None
    assert_fields(result.reading.fields, {"h": 40.0})
    assert result.dropped == (("t", "out_of_range"), ("s", "nan"))


def test_no_surviving_field_means_no_reading() -> None:
    result = normalize({"t": math.nan, "n": None})
    assert result.reading is None
    assert result.dropped == (("t", "nan"),)


def test_out_of_range_flag_keeps_the_value_and_adds_a_flag_field() -> None:
    config = {
        "out_of_range": "flag",
        "fields": {"t": {"name": "temperature", "max": 100, "round": 0}, "h": {"max": 100}},
    }
    result = normalize({"t": 150.4, "h": 40}, config)
    assert result.reading is not None
    assert_fields(
        result.reading.fields,
        {"temperature": 150.0, "temperature_out_of_range": True, "h": 40.0},
    )
    assert result.flagged == ("t",)
    assert result.dropped == ()


def test_out_of_range_flag_still_drops_nan() -> None:
    result = normalize({"t": math.nan}, {"out_of_range": "flag", "fields": {"t": {"max": 1}}})
    assert result.reading is None
    assert result.dropped == (("t", "nan"),)


def test_keep_unlisted_fields_false_keeps_only_listed() -> None:
    config = {"keep_unlisted_fields": False, "fields": {"t": {"name": "temp"}}}
    result = normalize({"t": 21, "rssi": -60, "junk": {"a": 1}}, config)
    assert result.reading is not None
    assert_fields(result.reading.fields, {"temp": 21.0})
    assert result.dropped == ()  # leaving out unlisted fields is not a drop


def test_exclude_fields() -> None:
    result = normalize({"t": 21, "rssi": -60, "uptime": 5}, {"exclude_fields": ["rssi", "uptime"]})
    assert result.reading is not None
    assert_fields(result.reading.fields, {"t": 21.0})
    assert result.dropped == ()


def test_unlisted_field_cannot_overwrite_a_renamed_one() -> None:
    result = normalize(
        {"raw_t": 21, "temperature": 99}, {"fields": {"raw_t": {"name": "temperature"}}}
    )
    assert result.reading is not None
    assert_fields(result.reading.fields, {"temperature": 21.0})
    assert result.dropped == (("temperature", "duplicate"),)


def test_unlisted_field_cannot_overwrite_a_flag() -> None:
    config = {"out_of_range": "flag", "fields": {"t": {"max": 100}}}
    result = normalize({"t_out_of_range": False, "t": 101}, config)
    assert result.reading is not None
    assert_fields(result.reading.fields, {"t": 101.0, "t_out_of_range": True})
    assert result.dropped == (("t_out_of_range", "duplicate"),)


def test_renames_may_swap_names() -> None:
    config = {"fields": {"a": {"name": "b"}, "b": {"name": "a"}}}
    result = normalize({"a": 1, "b": 2}, config)
    assert result.reading is not None
    assert_fields(result.reading.fields, {"b": 1.0, "a": 2.0})


@pytest.mark.parametrize(
    ("config", "driver_tags", "expected"),
    [
        pytest.param({}, {}, {"device": "dev1"}, id="device-tag"),
        pytest.param({"device_tag": None}, {}, {}, id="no-device-tag"),
        pytest.param({"device_tag": "sensor"}, {}, {"sensor": "dev1"}, id="device-tag-key"),
        pytest.param(
            {"tags": {"site": "lab"}},
            {"site": "topic", "room": "k"},
            {"site": "lab", "room": "k", "device": "dev1"},
            id="static-wins-over-driver",
        ),
        pytest.param(
            {}, {"device": "from-topic"}, {"device": "dev1"}, id="device-tag-wins-over-driver"
        ),
        pytest.param(
            {"device_tag": None, "tags": {"device": "boiler"}},
            {"device": "from-topic"},
            {"device": "boiler"},
            id="static-device-tag",
        ),
    ],
)
def test_tags(
    config: dict[str, Any], driver_tags: dict[str, str], expected: dict[str, str]
) -> None:
    result = normalize({"x": 1}, config, tags=driver_tags)
    assert result.reading is not None
    assert result.reading.tags == expected


def test_readings_do_not_share_tag_dicts() -> None:
    cfg = NormalizeConfig(measurement="m", tags={"site": "lab"})
    normalizer = Normalizer("dev1", cfg)
    first = normalizer.apply(RawSample({"x": 1}), NOW).reading
    second = normalizer.apply(RawSample({"x": 2}), NOW).reading
    assert first is not None
    assert second is not None
    assert first.tags is not second.tags


@pytest.mark.parametrize(
    ("configured", "suggested", "expected"),
    [
        pytest.param("climate", "esphome", "climate", id="config-wins"),
        pytest.param(None, "esphome", "esphome", id="driver-suggestion"),
        pytest.param(None, None, "dev1", id="device-name"),
    ],
)
def test_measurement_fallback(configured: str | None, suggested: str | None, expected: str) -> None:
    result = normalize({"x": 1}, {"measurement": configured}, measurement=suggested)
    assert result.reading is not None
    assert result.reading.measurement == expected


@pytest.mark.parametrize(
    ("device_time", "expected_time", "skewed"),
    [
        pytest.param(None, NOW, False, id="no-device-time"),
        pytest.param(NOW - 10 * SECOND, NOW - 10 * SECOND, False, id="behind-within"),
        pytest.param(NOW + 10 * SECOND, NOW + 10 * SECOND, False, id="ahead-within"),
        pytest.param(NOW - 300 * SECOND, NOW - 300 * SECOND, False, id="at-limit"),
        pytest.param(NOW - 301 * SECOND, NOW, True, id="behind-beyond"),
        pytest.param(NOW + 301 * SECOND, NOW, True, id="ahead-beyond"),
        pytest.param(0, NOW, True, id="epoch-zero-clock"),
    ],
)
def test_timestamps(device_time: int | None, expected_time: int, skewed: bool) -> None:
    result = normalize({"x": 1}, time_ns=device_time)
    assert result.reading is not None
    assert result.reading.time_ns == expected_time
    assert result.clock_skew is skewed


def test_clock_skew_limit_is_configurable() -> None:
    result = normalize({"x": 1}, {"max_clock_skew_s": 5}, time_ns=NOW - 6 * SECOND)
    assert result.reading is not None
    assert result.reading.time_ns == NOW
    assert result.clock_skew


@pytest.mark.parametrize(
    ("device_time", "offset_s"),
    [
        pytest.param(NOW + 3600 * SECOND, 3600.0, id="an-hour-ahead-CET"),
        pytest.param(NOW - 301 * SECOND, -301.0, id="behind"),
        pytest.param(NOW, 0.0, id="in-time"),
    ],
)
def test_a_replaced_device_time_reports_its_offset(device_time: int, offset_s: float) -> None:
    result = normalize({"x": 1}, time_ns=device_time)
    assert result.clock_offset_ns / SECOND == offset_s
    assert result.clock_skew is (offset_s != 0)


def test_without_the_skew_check_any_device_time_is_kept() -> None:
    cfg = NormalizeConfig.model_validate({"measurement": "m"})
    for device_time in (NOW + 3600 * SECOND, 0):
        sample = RawSample({"x": 1}, time_ns=device_time)
        result = Normalizer("dev1", cfg).apply(sample, NOW, check_skew=False)
        assert result.reading is not None
        assert result.reading.time_ns == device_time
        assert not result.clock_skew


def test_config_from_toml() -> None:
    text = """
        measurement = "climate"
        tags = { site = "lab" }
        out_of_range = "flag"

        [fields.temp_f]
        name = "temperature"
        unit = "°F"
        to_unit = "degC"
        min = -40
        max = 85.5
        round = 1
    """
    cfg = NormalizeConfig.model_validate(tomllib.loads(text))
    assert cfg.fields["temp_f"] == FieldRule(
        name="temperature", unit="°F", to_unit="degC", min=-40.0, max=85.5, round=1
    )
    result = Normalizer("esp", cfg).apply(RawSample({"temp_f": "71.3"}), NOW)
    assert result.reading is not None
    assert_fields(result.reading.fields, {"temperature": 21.8})


@pytest.mark.parametrize(
    ("config", "loc", "message"),
    [
        pytest.param(
            {"fields": {"t": {"unit": "kelvn", "to_unit": "degC"}}},
            ("fields", "t", "unit"),
            'unknown unit "kelvn" (did you mean "kelvin"',
            id="unknown-unit",
        ),
        pytest.param(
            {"fields": {"t": {"unit": "degC", "to_unit": "kwh"}}},
            ("fields", "t", "to_unit"),
            'unknown unit "kwh" (did you mean "kWh"',
            id="unknown-to-unit",
        ),
        pytest.param(
            {"fields": {"t": {"to_unit": "degC"}}},
            ("fields", "t"),
            "to_unit needs unit",
            id="to-unit-without-unit",
        ),
        pytest.param(
            {"fields": {"t": {"unit": "degC", "to_unit": "kWh"}}},
            ("fields", "t", "unit"),
            'cannot convert "degC" (temperature) to "kWh" (energy)',
            id="incompatible-units",
        ),
        pytest.param(
            {"fields": {"t": {"min": 10, "max": 0}}},
            ("fields", "t"),
            "min (10.0) is greater than max (0.0)",
            id="min-above-max",
        ),
        pytest.param(
            {"fields": {"t": {"type": "string", "scale": 2}}},
            ("fields", "t"),
            'type "string" cannot be combined with scale',
            id="string-with-scale",
        ),
        pytest.param(
            {"fields": {"t": {"scale": 0}}}, ("fields", "t"), "scale must not be 0", id="scale-0"
        ),
        pytest.param(
            {"fields": {"t": {"scale": math.inf}}},
            ("fields", "t", "scale"),
            "finite number",
            id="scale-inf",
        ),
        pytest.param(
            {"fields": {"t": {"scale": "2"}}},
            ("fields", "t", "scale"),
            "valid number",
            id="strict-no-str-for-float",
        ),
        pytest.param(
            {"fields": {"t": {"round": 1.0}}},
            ("fields", "t", "round"),
            "valid integer",
            id="strict-no-float-for-int",
        ),
        pytest.param(
            {"fields": {"t": {"type": "number"}}},
            ("fields", "t", "type"),
            "'float', 'int', 'bool' or 'string'",
            id="unknown-type",
        ),
        pytest.param(
            {"fields": {"t": {"units": "degC"}}},
            ("fields", "t", "units"),
            "Extra inputs are not permitted",
            id="extra-key",
        ),
        pytest.param(
            {"tags": {"device": "x"}},
            (),
            'tags["device"] clashes with device_tag',
            id="static-device-tag-clash",
        ),
        pytest.param({"tags": {"site": ""}}, ("tags",), "must not be empty", id="empty-tag"),
        pytest.param(
            {"fields": {"t": {}}, "exclude_fields": ["t"]},
            (),
            "both configured and excluded: t",
            id="excluded-and-configured",
        ),
        pytest.param(
            {"fields": {"a": {"name": "t"}, "t": {}}},
            (),
            'fields "a" and "t" would both write field "t"',
            id="two-fields-one-name",
        ),
        pytest.param(
            {"out_of_range": "flag", "fields": {"t": {"max": 1}, "t_out_of_range": {}}},
            (),
            'would both write field "t_out_of_range"',
            id="flag-name-clash",
        ),
        pytest.param({"out_of_range": "warn"}, ("out_of_range",), "'drop' or 'flag'", id="mode"),
        pytest.param(
            {"max_clock_skew_s": 0}, ("max_clock_skew_s",), "greater than 0", id="skew-zero"
        ),
        pytest.param({"measurement": ""}, ("measurement",), "at least 1", id="empty-measurement"),
    ],
)
def test_config_errors(config: dict[str, Any], loc: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        NormalizeConfig.model_validate(config)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    assert errors[0]["loc"] == loc
    assert message in errors[0]["msg"]


def test_config_is_frozen() -> None:
    cfg = NormalizeConfig()
    with pytest.raises(ValidationError):
        cfg.measurement = "x"


def test_empty_device_name_is_refused() -> None:
    with pytest.raises(ValueError, match="device name"):
        Normalizer("", NormalizeConfig())


def test_samples_and_readings_stay_frozen_dataclasses() -> None:
    """Their hand-written constructors (faster on the hot path) keep the dataclass
    behaviour: defaults, a fresh tags dict each, equality, replace, no assignment."""
    a, b = RawSample({"t": 1.0}), RawSample({"t": 1.0})
    assert a == b
    assert a.tags == {}
    assert a.tags is not b.tags
    assert (a.time_ns, a.measurement) == (None, None)
    assert dataclasses.replace(a, time_ns=5) == RawSample({"t": 1.0}, {}, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.time_ns = 1  # type: ignore[misc]
    reading = Reading("m", {"k": "v"}, {"t": 1.0}, 7)
    assert reading.units == {}
    assert reading.units is not Reading("m", {}, {"t": 1.0}, 7).units
    assert dataclasses.replace(reading, time_ns=8).time_ns == 8
    assert repr(reading) == (
        "Reading(measurement='m', tags={'k': 'v'}, fields={'t': 1.0}, time_ns=7, units={})"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        reading.fields = {}  # type: ignore[misc]
