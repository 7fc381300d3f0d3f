"""Unit conversion: known values, aliases, round-trips and the error messages."""

from __future__ import annotations

import itertools

import pytest

from gateway.pipeline.units import UnitError, converter, dimension, known_units, scale_offset


@pytest.mark.parametrize(
    ("value", "from_unit", "to_unit", "expected"),
    [
        # temperature (affine)
        (212.0, "degF", "degC", 100.0),
        (32.0, "°F", "°C", 0.0),
        (-40.0, "F", "C", -40.0),
        (0.0, "K", "degC", -273.15),
        (0.0, "celsius", "kelvin", 273.15),
        (100.0, "℃", "fahrenheit", 212.0),
        (0.0, "K", "degF", -459.67),
        # pressure
        (1.0, "bar", "hPa", 1000.0),
        (1.0, "inHg", "Pa", 3386.389),
        (1.0, "atm", "Pa", 101325.0),
        (1.0, "atm", "mmHg", 760.0),
        (1.0, "psi", "kPa", 6.894757),
        (1013.25, "mbar", "atm", 1.0),
        (1.0, "MPa", "bar", 10.0),
        # energy
        (1.0, "kWh", "Wh", 1000.0),
        (1.0, "kWh", "MJ", 3.6),
        (1.0, "MWh", "kWh", 1000.0),
        (1.0, "Wh", "J", 3600.0),
        (1.0, "MJ", "kJ", 1000.0),
        # power
        (1.5, "kW", "W", 1500.0),
        (1.0, "MW", "kW", 1000.0),
        # speed
        (1.0, "kn", "km/h", 1.852),
        (36.0, "km/h", "m/s", 10.0),
        (1.0, "mph", "km/h", 1.609344),
        # length
        (1.0, "in", "mm", 25.4),
        (1.0, "ft", "cm", 30.48),
        (1.0, "mi", "km", 1.609344),
        (1.0, "km", "m", 1000.0),
        # volume
        (1.0, "gal", "L", 3.785411784),
        (1.0, "m3", "L", 1000.0),
        (250.0, "mL", "L", 0.25),
        # fraction
        (45.0, "%", "ratio", 0.45),
        (0.5, "ratio", "%", 50.0),
    ],
)
def test_known_values(value: float, from_unit: str, to_unit: str, expected: float) -> None:
    assert converter(from_unit, to_unit)(value) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_same_unit_is_identity() -> None:
    assert scale_offset("degC", "degC") == (1.0, 0.0)
    assert scale_offset("°C", "celsius") == (1.0, 0.0)


@pytest.mark.parametrize(
    ("dim", "units"),
    [(dim, units) for dim, units in known_units().items()],
)
def test_round_trips(dim: str, units: list[str]) -> None:
    for a, b in itertools.permutations(units, 2):
        there, back = converter(a, b), converter(b, a)
        for value in (-40.0, 0.0, 21.5, 1013.25):
            assert back(there(value)) == pytest.approx(value, rel=1e-12, abs=1e-9), (dim, a, b)


def test_known_units_lists_each_dimension() -> None:
    units = known_units()
    assert set(units) == {
        "temperature", "pressure", "energy", "power", "speed", "length", "volume", "fraction",
    }  # fmt: skip
    assert {"degC", "°C", "C", "celsius", "degF", "°F", "F", "fahrenheit", "K", "kelvin"} <= set(
        units["temperature"]
    )
    assert units["energy"][:3] == ["J", "kJ", "MJ"]
    assert dimension("kWh") == "energy"


def test_names_are_case_sensitive() -> None:
    # milli- and mega- differ only in case; guessing would be off by 10**9.
    with pytest.raises(UnitError, match=r'unknown unit "mW" \(did you mean "MW"'):
        converter("mW", "W")


@pytest.mark.parametrize(
    ("from_unit", "to_unit", "message"),
    [
        ("degC", "kWh", 'cannot convert "degC" (temperature) to "kWh" (energy)'),
        ("%", "m", 'cannot convert "%" (fraction) to "m" (length)'),
        ("kwh", "Wh", 'unknown unit "kwh" (did you mean "kWh"?); known energy units: J, kJ,'),
        ("degC", "kelvn", 'unknown unit "kelvn" (did you mean "kelvin"'),
        ("degC", "kelvn", "known temperature units: degC, degF, K"),
        ("furlong", "parsec", 'unknown unit "furlong"; known units: degC, degF, K, Pa,'),
    ],
)
def test_errors(from_unit: str, to_unit: str, message: str) -> None:
    with pytest.raises(UnitError) as info:
        converter(from_unit, to_unit)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
