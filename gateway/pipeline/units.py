"""Unit conversion for the units sensors commonly report.

The units are data: one table row per unit gives its dimension, its factor to the
dimension's base unit and an offset (only temperature needs one), so that
``base = value * factor + offset``. Factors are exact fractions, so the scale and
offset of a conversion are computed exactly once and rounded to floats once.

Names are case-sensitive on purpose: ``mW`` and ``MW`` differ by nine orders of
magnitude, so a near miss gets a did-you-mean rather than a guess.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["UnitError", "converter", "dimension", "known_units", "scale_offset"]


class UnitError(ValueError):
    """A unit is unknown, or two units measure different things."""


@dataclass(frozen=True, slots=True)
class _Unit:
    dimension: str
    factor: Fraction
    offset: Fraction = Fraction(0)


_F = Fraction
_LBF_N = _F("0.45359237") * _F("9.80665")  # pound-force in newtons (exact by definition)
_MMHG_PA = _F("13.5951") * _F("9.80665")  # conventional mmHg: 133.322387415 Pa
_KELVIN_AT_0C = _F("273.15")

# (names, dimension, factor to the base unit, offset); the first name is the canonical one.
# Base units: K, Pa, J, W, m/s, m, m³, ratio.
_TABLE: tuple[tuple[tuple[str, ...], str, Fraction, Fraction], ...] = (
    (("degC", "°C", "℃", "C", "celsius", "Celsius"), "temperature", _F(1), _KELVIN_AT_0C),
    (
        ("degF", "°F", "℉", "F", "fahrenheit", "Fahrenheit"),
        "temperature",
        _F(5, 9),
        _KELVIN_AT_0C - _F(32 * 5, 9),
    ),
    (("K", "kelvin", "Kelvin"), "temperature", _F(1), _F(0)),
    (("Pa", "pascal"), "pressure", _F(1), _F(0)),
    (("hPa",), "pressure", _F(100), _F(0)),
    (("kPa",), "pressure", _F(1000), _F(0)),
    (("MPa",), "pressure", _F(10**6), _F(0)),
    (("bar",), "pressure", _F(10**5), _F(0)),
    (("mbar", "millibar"), "pressure", _F(100), _F(0)),
    (("psi",), "pressure", _LBF_N / _F("0.0254") ** 2, _F(0)),
    (("inHg",), "pressure", _MMHG_PA * _F("25.4"), _F(0)),
    (("mmHg",), "pressure", _MMHG_PA, _F(0)),
    (("atm",), "pressure", _F(101325), _F(0)),
    (("J",), "energy", _F(1), _F(0)),
    (("kJ",), "energy", _F(10**3), _F(0)),
    (("MJ",), "energy", _F(10**6), _F(0)),
    (("Wh",), "energy", _F(3600), _F(0)),
    (("kWh",), "energy", _F(3600 * 10**3), _F(0)),
    (("MWh",), "energy", _F(3600 * 10**6), _F(0)),
    (("W",), "power", _F(1), _F(0)),
    (("kW",), "power", _F(10**3), _F(0)),
    (("MW",), "power", _F(10**6), _F(0)),
    (("m/s",), "speed", _F(1), _F(0)),
    (("km/h", "kph", "kmh"), "speed", _F(1000, 3600), _F(0)),
    (("mph",), "speed", _F("1609.344") / 3600, _F(0)),
    (("kn", "kt", "knot", "knots"), "speed", _F(1852, 3600), _F(0)),
    (("mm",), "length", _F(1, 1000), _F(0)),
    (("cm",), "length", _F(1, 100), _F(0)),
    (("m",), "length", _F(1), _F(0)),
    (("km",), "length", _F(1000), _F(0)),
    (("in", "inch"), "length", _F("0.0254"), _F(0)),
    (("ft", "foot", "feet"), "length", _F("0.3048"), _F(0)),
    (("mi", "mile"), "length", _F("1609.344"), _F(0)),
    (("mL", "ml"), "volume", _F(1, 10**6), _F(0)),
    (("L", "l"), "volume", _F(1, 1000), _F(0)),
    (("m3", "m³"), "volume", _F(1), _F(0)),
    (("gal",), "volume", _F("0.003785411784"), _F(0)),  # US liquid gallon
    (("%", "percent"), "fraction", _F(1, 100), _F(0)),
    (("ratio",), "fraction", _F(1), _F(0)),
)

_UNITS: dict[str, _Unit] = {
    name: _Unit(dim, factor, offset) for names, dim, factor, offset in _TABLE for name in names
}


def known_units() -> dict[str, list[str]]:
    """Every accepted unit name, grouped by dimension, canonical names first (for docs)."""
    out: dict[str, list[str]] = {}
    for names, dim, _factor, _offset in _TABLE:
        out.setdefault(dim, []).extend(names)
    return out


def _lookup(unit: str, other: str | None = None) -> _Unit:
    found = _UNITS.get(unit)
    if found is not None:
        return found
    msg = f'unknown unit "{unit}"'
    other_unit = _UNITS.get(other) if other is not None else None
    dim = other_unit.dimension if other_unit is not None else None
    candidates = [n for n, u in _UNITS.items() if dim is None or u.dimension == dim]
    # A case-only slip ("kwh") is the most common mistake; offer those first.
    hints = [n for n in _UNITS if n.casefold() == unit.casefold()]
    hints += [h for h in difflib.get_close_matches(unit, candidates, n=3) if h not in hints]
    if hints:
        msg += " (did you mean " + " or ".join(f'"{h}"' for h in hints[:3]) + "?)"
    canonical = [names[0] for names, d, *_ in _TABLE if dim is None or d == dim]
    msg += f"; known {dim + ' ' if dim else ''}units: {', '.join(canonical)}"
    raise UnitError(msg)


def dimension(unit: str) -> str:
    """The dimension ``unit`` measures, e.g. ``"temperature"``.

    Raises:
        UnitError: the unit is unknown.
    """
    return _lookup(unit).dimension


def scale_offset(from_unit: str, to_unit: str) -> tuple[float, float]:
    """``(scale, offset)`` such that ``value_in_to_unit = value * scale + offset``.

    Raises:
        UnitError: a unit is unknown or the two measure different dimensions.
    """
    src = _lookup(from_unit, to_unit)
    dst = _lookup(to_unit, from_unit)
    if src.dimension != dst.dimension:
        msg = f'cannot convert "{from_unit}" ({src.dimension}) to "{to_unit}" ({dst.dimension})'
        raise UnitError(msg)
    # base = x*fs + os and base = y*fd + od, so y = x*(fs/fd) + (os - od)/fd.
    return float(src.factor / dst.factor), float((src.offset - dst.offset) / dst.factor)


def converter(from_unit: str, to_unit: str) -> Callable[[float], float]:
    """A function converting a value from ``from_unit`` to ``to_unit`` (one multiply-add).

    Raises:
        UnitError: a unit is unknown or the two measure different dimensions.
    """
    scale, offset = scale_offset(from_unit, to_unit)

    def convert(value: float) -> float:
        return value * scale + offset

    return convert
