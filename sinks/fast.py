"""Fast path for sensor readings: the shared contract check, then the columns of ``sensor_readings``.

:func:`reading_values` takes what :func:`citystream.schemas.fast.fast_reading` proves a valid
:class:`~citystream.schemas.events.SensorReading`, adds the column ranges of ``sensor_readings``
that :func:`citystream.sinks.rows.to_row` enforces, and returns the row's values in column order,
exactly as ``to_row`` would build them. Whatever it cannot prove valid (bad JSON, unknown or missing
fields, an unusual timestamp form, a value out of a column's range, an int that is not exact as a
float…) returns ``None`` and the caller takes the full pydantic path, so poison detection and DLQ
reasons are those of the contract. Guarantee: accepted here ⇒ accepted there, with the same row.
"""

from __future__ import annotations

from typing import Any

from citystream.schemas.fast import fast_reading

Values = tuple[Any, ...]

_FLOAT_EXACT = 2**53
def reading_values(value: bytes) -> Values | None:
    """A sensor reading's column values (common columns, metric, value), or None: take the full path."""
    reading = fast_reading(value)
    if reading is None:
        return None
    if reading[1] >= 1 << 16 or reading[5] >= 1 << 64:  # schema_version UInt16, seq UInt64: to_row makes these poison
        return None
    number = reading[9]
    if type(number) is int:
        if not -_FLOAT_EXACT <= number <= _FLOAT_EXACT:
            return None
        return (*reading[:9], float(number))
    return reading  # FIELDS (the contract's fields minus kind) are the table's columns, in order
