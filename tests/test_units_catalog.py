"""Units as metadata: the driver's units under the config's renames and labels, carried
on readings and kept in the state dir's unit catalog (``units.json``)."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.pipeline.normalize import NormalizeConfig, Normalizer, field_units
from gateway.pipeline.reading import RawSample
from gateway.pipeline.unitcatalog import UNITS_FILE, UnitCatalog, read_units
from gateway.service.statefile import write_atomic


def _config(**fields: dict[str, object]) -> NormalizeConfig:
    return NormalizeConfig.model_validate({"fields": fields})


def test_driver_units_follow_renames_and_the_config_wins() -> None:
    config = _config(
        t={"name": "temperature"},  # renamed: the driver's unit follows the new name
        p={"unit": "hPa"},  # a label only: no conversion
        s={"unit": "kn", "to_unit": "km/h"},  # converted: stored in to_unit
        co2={"unit": "ppm"},  # the config's word over the driver's
    )
    units = field_units(config, {"t": "degC", "co2": "ppb", "rh": "%"})
    assert units == {"temperature": "degC", "p": "hPa", "s": "km/h", "co2": "ppm", "rh": "%"}


def test_a_unit_label_does_not_change_the_value() -> None:
    normalizer = Normalizer("d", _config(p={"unit": "hPa"}, s={"unit": "kn", "to_unit": "km/h"}))
    reading = normalizer.apply(RawSample({"p": 1013.2, "s": 10}), 0).reading
    assert reading is not None
    assert reading.fields == {"p": 1013.2, "s": 18.52}
    assert reading.units == {"p": "hPa", "s": "km/h"}


def test_the_catalog_is_saved_only_when_it_changed(tmp_path: Path) -> None:
    catalog = UnitCatalog(tmp_path)
    catalog.set_device("a", {"t": "degC"})
    catalog.set_device("b", {})  # no units: no entry
    data = catalog.snapshot()
    assert data is not None
    write_atomic(catalog.path, data)
    assert read_units(tmp_path) == {"a": {"t": "degC"}}
    catalog.set_device("a", {"t": "degC"})
    assert catalog.snapshot() is None  # nothing new: no write
    # A new instance (a restart) starts from the file; a device keeps fields it no
    # longer declares, since their readings are still stored.
    again = UnitCatalog(tmp_path)
    again.set_device("a", {"rh": "%"})
    data = again.snapshot()
    assert data is not None
    write_atomic(again.path, data)
    assert read_units(tmp_path) == {"a": {"t": "degC", "rh": "%"}}


def test_an_unreadable_catalog_means_no_units(tmp_path: Path) -> None:
    assert read_units(tmp_path) == {}
    (tmp_path / UNITS_FILE).write_text("{not json")
    assert read_units(tmp_path) == {}
    (tmp_path / UNITS_FILE).write_text(json.dumps(["a"]))
    assert read_units(tmp_path) == {}
    assert UnitCatalog(tmp_path).units == {}
