"""``query``'s units (from the unit catalog) in the table, JSON and plot, and ``--plot``:
golden outputs at a fixed size, the extra missing, the terminal's size."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.query import Row, format_csv, format_json, format_table
from gateway.query.plot import plot
from gateway.sinks.local import LocalStore

T0 = 1_714_557_600_000_000_000  # 2024-05-01T10:00:00Z
S = 1_000_000_000
BOILER = {"device": "boiler", "site": "home"}
PUMP = {"device": "pump", "site": "lab"}
ROWS = [
    Row(T0, "heating", "boiler", BOILER, "pressure", 1.5),
    Row(T0, "heating", "boiler", BOILER, "temperature", 21.5),
    Row(T0 + 20 * S, "heating", "pump", PUMP, "pressure", 101.56),
    Row(T0 + 20 * S, "heating", "pump", PUMP, "temperature", 18.25),
]
UNITS = {
    "boiler": {"temperature": "degC", "pressure": "bar"},
    "pump": {"temperature": "degC", "pressure": "kPa"},
}


def test_the_table_shows_a_unit_where_all_its_readings_agree() -> None:
    assert format_table(ROWS, tz=UTC, units=UNITS) == (
        "time                           measurement  device  site  pressure  temperature (degC)\n"
        "2024-05-01T10:00:00.000+00:00  heating      boiler  home  1.5       21.5\n"
        "2024-05-01T10:00:20.000+00:00  heating      pump    lab   101.56    18.25\n"
    )
    # One device without a known unit for the field: bare, never a guess.
    partial = {"boiler": {"temperature": "degC", "pressure": "bar"}}
    assert format_table(ROWS, tz=UTC, units=partial).splitlines()[0].split()[-2:] == [
        "pressure",
        "temperature",
    ]
    only_boiler = format_table(ROWS[:2], tz=UTC, units=partial).splitlines()[0]
    assert only_boiler.endswith("pressure (bar)  temperature (degC)")
    assert format_table(ROWS, tz=UTC) == format_table(ROWS, tz=UTC, units={})


def test_json_carries_each_readings_own_units_and_csv_stays_bare() -> None:
    lines = [json.loads(line) for line in format_json(ROWS, UNITS).splitlines()]
    assert [line["units"] for line in lines] == [
        {"pressure": "bar", "temperature": "degC"},
        {"pressure": "kPa", "temperature": "degC"},
    ]
    assert list(lines[0]) == [
        "time", "measurement", "device", "site", "pressure", "temperature", "units",
    ]  # fmt: skip
    assert "units" not in json.loads(format_json(ROWS, {}).splitlines()[0])
    assert "units" not in json.loads(format_json(ROWS, {"x": {"a": "b"}}).splitlines()[0])
    named = [Row(T0, "m", "boiler", {"device": "boiler", "units": "si"}, "temperature", 1.0)]
    line = json.loads(format_json(named, UNITS))
    assert (line["units"], line["_units"]) == ("si", {"temperature": "degC"})
    assert format_csv(ROWS).splitlines()[0] == "time,measurement,device,site,pressure,temperature"


PLOT_ROWS = [
    Row(T0 + i * 300 * S, "heating", dev, tags, "temperature", value)
    for i in range(12)
    for dev, tags, value in (
        ("boiler", BOILER, 20.0 + (i % 5) * 0.5 + i * 0.1),
        ("pump", PUMP, 18.0 + (i % 3) * 0.75),
    )
] + [Row(T0, "heating", "boiler", BOILER, "state", "on")]

GOLDEN_PLOT = """\
                                   heating
     ┌─────────────────────────────────────────────────────────────────┐
22.90┤ •• boiler temperature (degC)                       •            │
     │ xx pump temperature (degC)                    ••••• •           │
22.08┤                 •••••• •                ••••••       ••         │
21.27┤            •••••        ••           •••               •       •│
     │         •••               •       •••                   ••••••• │
20.45┤      •••                   •••••••                              │
     │••••••                                                           │
19.63┤            x                x                 x                x│
18.82┤      xxxxxx x         xxxxxx xx         xxxxxx x         xxxxxx │
     │   xxx        xx    xxx         xx    xxx        xx    xxx       │
18.00┤xxx             xxxx              xxxx             xxxx          │
     └┬───────────────────────────────┬───────────────────────────────┬┘
   2024-05-01 10:00:00        2024-05-01 10:27:30   2024-05-01 10:55:00
degC                             time (UTC)
"""


def test_plot_golden_at_a_fixed_size() -> None:
    """One line per series (the string field is left out), labelled with device, field
    and unit; the y axis with the unit all lines share; the time axis in UTC here."""
    units = {"boiler": {"temperature": "degC"}, "pump": {"temperature": "degC"}}
    text = plot(PLOT_ROWS, width=72, height=16, units=units, tz=UTC, color=False)
    assert text == GOLDEN_PLOT
    assert plot([PLOT_ROWS[-1]], width=72, height=16, tz=UTC, color=False) == ""
    # Units that differ: each line says its own, the y axis none.
    mixed = {"boiler": {"temperature": "degC"}, "pump": {"temperature": "degF"}}
    lines = plot(PLOT_ROWS, width=72, height=16, units=mixed, tz=UTC, color=False).splitlines()
    assert "boiler temperature (degC)" in lines[2]
    assert "pump temperature (degF)" in lines[3]
    assert lines[-1].split() == ["time", "(UTC)"]


# --- the command ---------------------------------------------------------------------


@pytest.fixture
def gateway_toml(tmp_path: Path) -> Path:
    """A configuration whose state dir has a local store with ``PLOT_ROWS`` in it and the
    unit catalog the daemon would have saved."""
    lines = [
        f"heating,device={r.device},site={r.tags['site']} {r.field}="
        + (f'"{r.value}"' if isinstance(r.value, str) else f"{r.value}")
        + f" {r.time_ns}"
        for r in PLOT_ROWS
    ]

    async def build() -> None:
        local = LocalStore(tmp_path / "readings.db", retention=None)
        await local.open()
        result = await local.write(lines)
        await local.close()
        assert result.rejected == []

    asyncio.run(build())
    (tmp_path / "units.json").write_text(
        json.dumps({"boiler": {"temperature": "degC"}, "pump": {"temperature": "degC"}})
    )
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n[sinks.local]\nenabled = true\n')
    return cfg


def test_query_labels_columns_with_the_state_dirs_units(
    gateway_toml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["query", "-c", str(gateway_toml), "-n", "2", "-f", "temperature"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert out.splitlines()[0].split()[-2:] == ["temperature", "(degC)"]


def test_plot_is_sized_to_the_terminal(
    gateway_toml: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("LINES", "20")
    code = main(["query", "-c", str(gateway_toml), "--plot"])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 18  # LINES - 2: the prompt and the "answered by" line stay visible
    assert max(len(line) for line in lines) == 60
    assert "\x1b[" not in out  # not a terminal: no colours
    assert "boiler temperature (degC)" in out
    assert "pump temperature (degC)" in out


def test_plot_without_plotext_says_how_to_install_it(
    gateway_toml: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "plotext", None)  # what a missing package does
    code = main(["query", "-c", str(gateway_toml), "--plot"])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        "sensor-gateway: --plot draws with plotext, which is not installed: "
        "pip install 'sensor-gateway[plot]' (or pip install 'plotext>=5.2,<6')\n"
    )


@pytest.mark.parametrize("other", [["--list"], ["-o", "csv"]])
def test_plot_combines_with_neither_list_nor_another_format(
    gateway_toml: Path, capsys: pytest.CaptureFixture[str], other: list[str]
) -> None:
    code = main(["query", "-c", str(gateway_toml), "--plot", *other])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith(f"sensor-gateway: --plot and {' '.join(other)} cannot be combined")


def test_plot_labels_tell_series_of_one_device_apart_by_the_tags_that_differ() -> None:
    rows = [
        Row(
            T0 + i * S,
            "rooms",
            "rooms",
            {"device": "rooms", "sensor": s, "site": "demo"},
            "temperature",
            20.0 + i,
        )
        for i in range(3)
        for s in ("s0", "s1")
    ] + [Row(T0, "climate", "boiler", {"device": "boiler"}, "temperature", 21.0)]
    text = plot(rows, width=72, height=16, tz=UTC, color=False)
    legend = [line[7:].split("  ")[0].strip() for line in text.splitlines()[2:5]]
    assert legend == [
        "•• rooms sensor=s0 temperature",
        "xx rooms sensor=s1 temperature",
        "++ boiler temperature",
    ]
