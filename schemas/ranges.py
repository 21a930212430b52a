"""Plausible range of each sensor metric: the one rule, part of the ``SensorReading`` contract.

A reading outside its metric's range (PM2.5 = 5000 µg/m³, humidity 140 %, 1.8e308 anything) is not a
measurement but a broken sensor or a forged message. The rule lives here once and is applied by the
contract itself (a validator of :class:`~citystream.schemas.events.SensorReading`, also exported into
its JSON Schema as ``if metric … then value minimum/maximum``), so every stage that reads a reading
applies the same bounds:

- the **bridge** dead-letters it with reason ``out_of_range`` before it reaches Kafka (the first stage
  that can know);
- the **sink** and the **worker** validate records with the same model, so a record that reached
  Kafka another way is poison there (``schema_mismatch`` / ``invalid_reading``) and never a row.

We chose dead-lettering over storing with a quality flag: analysts then need no filter in any view
or rollup, and the original bytes stay in ``dead_letters`` for whoever wants to look.
Bounds are inclusive. Changing them is a contract change (re-export the JSON Schemas).
"""

from __future__ import annotations

from typing import NamedTuple

from pydantic.config import JsonDict, JsonValue


class Bounds(NamedTuple):
    """Inclusive plausible range of one metric, in the metric's unit."""

    low: float
    high: float


# Keyed by the metric's name (``Metric`` values; events.py checks at import that every metric has one).
RANGES: dict[str, Bounds] = {
    "pm25_ug_m3": Bounds(0.0, 1000.0),
    "pm10_ug_m3": Bounds(0.0, 2000.0),
    "temperature_c": Bounds(-20.0, 70.0),
    "humidity_pct": Bounds(0.0, 100.0),
    "water_level_cm": Bounds(-1000.0, 5000.0),
    "noise_db_a": Bounds(0.0, 160.0),
    "rain_mm_h": Bounds(0.0, 500.0),
}


def out_of_range(metric: str, value: float) -> str | None:
    """Why ``value`` is implausible for ``metric`` (the metric's name), or None when it is in range."""
    bounds = RANGES.get(str(metric))
    if bounds is None or bounds.low <= value <= bounds.high:
        return None
    return f"{metric}={value!r} outside [{bounds.low:g}, {bounds.high:g}]"


def json_schema_rules() -> list[JsonValue]:
    """The ranges as JSON Schema ``if/then`` rules for the exported SensorReading schema."""
    rules: list[JsonDict] = [{"if": {"properties": {"metric": {"const": m}}, "required": ["metric"]},
             "then": {"properties": {"value": {"minimum": b.low, "maximum": b.high}}}}
            for m, b in RANGES.items()]
    return list(rules)
