"""Why ``clock=unsynced`` is a tag and not a field: the evidence, on a real InfluxDB 1.x.

The same six readings of one sensor — two stamped while the clock was unsynchronized —
written both ways. The tag splits the sensor's series in two (what Grafana's
``GROUP BY *`` shows), but the query every user needs, "only trustworthy times", is one
plain condition that keeps untagged points. As a field, the series stays whole, but
InfluxQL's ``WHERE clock_unsynced != true`` also drops every point that does not carry
the field — all the good ones — so excluding the suspect points needs a subquery. And
a reading's tags are its identity: a field would let a suspect point and a good point
at the same time overwrite each other. See docs/delivery.md, "An unsynchronized clock".
"""

from __future__ import annotations

from typing import Any

import pytest
from servers import Influx1

from gateway.pipeline.clock import UNSYNCED_TAG

BASE = 1_700_000_000_000_000_000
SYNCED = [1, 2, 3, 4]
UNSYNCED = [5, 6]


def values(answer: dict[str, Any]) -> list[list[Any]]:
    series = answer["results"][0].get("series", [])
    return [row for s in series for row in s["values"]]


def series_count(answer: dict[str, Any]) -> int:
    return len(answer["results"][0].get("series", []))


@pytest.mark.integration
def test_a_tag_splits_the_series_but_filters_cleanly(influx1: Influx1, unique_name: str) -> None:
    db = unique_name
    influx1.create_database(db)
    key, value = UNSYNCED_TAG
    influx1.write_lines(
        db,
        [f"m,device=boiler t={v} {BASE + v}" for v in SYNCED]
        + [f"m,device=boiler,{key}={value} t={v} {BASE + v}" for v in UNSYNCED],
    )
    assert series_count(influx1.query("SELECT count(t) FROM m GROUP BY *", db)) == 2
    kept = values(influx1.query(f"SELECT t FROM m WHERE {key} != '{value}'", db))
    assert [row[1] for row in kept] == SYNCED
    suspect = values(influx1.query(f"SELECT t FROM m WHERE {key} = '{value}'", db))
    assert [row[1] for row in suspect] == UNSYNCED
    # The split is undone where it matters, by grouping on the identifying tags only.
    whole = influx1.query("SELECT count(t) FROM m GROUP BY device", db)
    assert series_count(whole) == 1
    assert values(whole)[0][1] == len(SYNCED + UNSYNCED)


@pytest.mark.integration
def test_a_field_keeps_the_series_whole_but_cannot_filter_simply(
    influx1: Influx1, unique_name: str
) -> None:
    db = unique_name
    influx1.create_database(db)
    influx1.write_lines(
        db,
        [f"m,device=boiler t={v} {BASE + v}" for v in SYNCED]
        + [f"m,device=boiler t={v},clock_unsynced=true {BASE + v}" for v in UNSYNCED],
    )
    assert series_count(influx1.query("SELECT count(t) FROM m GROUP BY *", db)) == 1
    # The obvious filter drops the good points too: they lack the field.
    kept = values(influx1.query("SELECT t FROM m WHERE clock_unsynced != true", db))
    assert kept == []
    # A point stamped while unsynchronized at the time of a good point replaces it:
    # without the tag both have the same identity (measurement, tags, time).
    influx1.write_lines(db, f"m,device=boiler t=99,clock_unsynced=true {BASE + 1}")
    at_one = values(influx1.query(f"SELECT t FROM m WHERE time = {BASE + 1}", db))
    assert [row[1] for row in at_one] == [99]
