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

import pyarrow as pa
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from citystream.schemas.fast import Limit, fast_reading

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


# ---- bulk path: the store checks and parses a whole block of canonical JSON ----------------------------------
_CH_TYPES = {pa.string(): "String", pa.uint16(): "UInt16", pa.uint64(): "UInt64", pa.float64(): "Float64"}
_TS = pa.timestamp("ms", tz="UTC")
RAW_STRUCTURE = "raw String, n UInt32, kafka_partition UInt16, kafka_offset UInt64"
TRAILER = ("ingested_at", "kafka_partition", "kafka_offset")
REFUSED = "a record does not pass the bulk checks"
# Every check on every record: with short-circuit evaluation ClickHouse extracted the JSON once per check.
NO_SHORT_CIRCUIT = "short_circuit_function_evaluation = 'disable'"


def sql_string(text: str) -> str:
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stamp_ms_sql(s: str) -> tuple[str, str]:
    """(is valid, epoch ms) of a canonical RFC 3339 text expression, as :func:`stamp_ms` computes them.

    The year must be one DateTime64 holds (1900-2299), the date read back as written (no February 30),
    hours < 24, minutes and seconds < 60; anything else takes the per-record path.
    """
    day = f"toDate32OrNull(substring({s}, 1, 10))"
    hour, minute, second = (f"toInt64OrZero(substring({s}, {at}, 2))" for at in (12, 15, 18))
    valid = (f"(toInt64OrZero(substring({s}, 1, 4)) BETWEEN 1900 AND 2299 "
             f"AND ifNull(toString({day}) = substring({s}, 1, 10), 0) "
             f"AND {hour} < 24 AND {minute} < 60 AND {second} < 60)")
    zone = f"if(endsWith({s}, 'Z'), 1, 6)"
    fraction = f"substring({s}, 21, greatest(0, length({s}) - 20 - {zone}))"
    offset = (f"if({zone} = 1, 0, if(substring({s}, -6, 1) = '-', -1, 1) * "
              f"(toInt64OrZero(substring({s}, -5, 2)) * 3600 + toInt64OrZero(substring({s}, -2, 2)) * 60))")
    seconds = f"(toInt64(toInt32(assumeNotNull({day}))) * 86400 + {hour} * 3600 + {minute} * 60 + {second} - {offset})"
    return valid, f"({seconds} * 1000 + toInt64OrZero(substring(concat({fraction}, '000'), 1, 3)))"


class BulkJson:
    """SQL that checks canonical JSON records against a contract and maps them to a table's columns.

    Derived from the model (:func:`citystream.schemas.fast.canonical_form`, field defaults) and from the
    table's Arrow schema (column names and types). A record passes when it matches the canonical pattern,
    is valid UTF-8 and JSON, and its values fit their ranges (numbers exact as float, calendar dates, the
    metric's range); everything else takes the per-record path, which alone decides poison and DLQ reasons.
    Guarantee (tested on the shared corpus): passed here ⇒ ``to_row`` accepts it, with the same row.
    """

    def __init__(self, model: type[BaseModel], schema: pa.Schema, form: tuple[str, dict[str, Limit]] | None) -> None:
        """Bulk SQL for ``model`` records into a table of ``schema``; disabled (``pattern`` None) without ``form``."""
        self.pattern: str | None = form[0] if form is not None else None
        limits = form[1] if form is not None else {}
        self.captured_ms = "0"
        self.columns = [f.name for f in schema if f.name not in TRAILER]
        fields = model.model_fields
        types, picks, checks = [], [], []
        for fld in schema:
            if fld.name in TRAILER:
                continue
            info = fields.get(fld.name)
            kind = "String" if fld.type == _TS else _CH_TYPES.get(fld.type)
            if info is None or kind is None:
                self.pattern = None  # a column the contract does not give: no bulk path
                continue
            wide = "UInt64" if kind.startswith("UInt") else kind  # checked before the cast to the column's width
            types.append(f"{fld.name} Nullable({wide})")
            value = f"t.{fld.name}"
            if info.default is not PydanticUndefined and info.default is not None:
                value = f"ifNull({value}, {_literal(info.default)})"
            limit = limits.get(fld.name)
            if limit is not None:
                measure = f"lengthUTF8({value})" if limit[0] == "length" else value
                checks.append(f"ifNull({measure} BETWEEN {limit[1]} AND {limit[2]}, 0)")
            if fld.type == _TS:
                valid, value = stamp_ms_sql(value)
                checks.append(valid)
                if fld.name == "captured_at":
                    self.captured_ms = value
                value = f"fromUnixTimestamp64Milli({value}, 'UTC')"
            elif kind == "Float64":
                checks.append(f"isFinite(ifNull({value}, nan))")
                integer = sql_string(f'"{fld.name}":-?[0-9]+[,}}]')  # an int literal: exact as float only up to 2**53
                checks.append(f"(abs({value}) <= {_FLOAT_EXACT} OR NOT match(raw, {integer}))")
            elif wide != kind:
                value = f"to{kind}({value})"
            picks.append(value)
        self.tuple_type = f"Tuple({', '.join(types)})"
        self.picks = picks
        self.checks = [f"t.{self.columns[0]} IS NOT NULL", *checks]  # the first field is required: NULL = not JSON

    def add_check(self, sql: str) -> None:
        """One more condition a record must meet (an expression over ``t.<field>``)."""
        self.checks.append(sql)

    def _source(self, path: str) -> str:
        return (f"(SELECT JSONExtract(raw, {sql_string(self.tuple_type)}) AS t, raw, n, kafka_partition, kafka_offset "
                f"FROM file({sql_string(path)}, Arrow, {sql_string(RAW_STRUCTURE)}))")

    def passes(self) -> str:
        """The condition a record (``raw``, and ``t`` its extracted fields) must meet to be stored in bulk."""
        assert self.pattern is not None
        return " AND ".join(["isValidUTF8(raw)", f"match(raw, {sql_string(self.pattern)})", *self.checks])

    def check_sql(self, path: str) -> str:
        """One row: ``bad``, the positions of the records of the Arrow file at ``path`` that do not pass."""
        return (f"SELECT groupArrayIf(n, NOT ({self.passes()})) AS bad FROM {self._source(path)} "
                f"SETTINGS {NO_SHORT_CIRCUIT}")

    def insert_sql(self, table: str, path: str, ingested_at_ms: int, settings: dict[str, Any]) -> str:
        """INSERT of every record of the Arrow file at ``path`` into ``table``; fails (code 395) if one does not pass.

        Nothing is written then: the block is one Arrow batch, checked before MergeTree writes its part.
        """
        names = ", ".join([*self.columns, *TRAILER])
        clause = ", ".join(f"{k} = {v if isinstance(v, int) else sql_string(str(v))}" for k, v in settings.items())
        picks = ", ".join([*self.picks, f"fromUnixTimestamp64Milli(toInt64({int(ingested_at_ms)}), 'UTC')",
                           "kafka_partition", f"kafka_offset + throwIf(NOT ({self.passes()}), {sql_string(REFUSED)})"])
        return (f"INSERT INTO {table} ({names}) SETTINGS {clause}, {NO_SHORT_CIRCUIT} "
                f"SELECT {picks} FROM {self._source(path)}")


def _literal(value: Any) -> str:
    if isinstance(value, str):
        return sql_string(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"no SQL literal for a default of {type(value).__name__}")
    return repr(value)


def metric_range_sql(ranges: dict[str, tuple[float, float]]) -> str:
    """The per-metric value range rule as one condition over ``t.metric`` and ``t.value``."""
    arms = ", ".join(f"t.metric = {sql_string(m)}, t.value BETWEEN {lo!r} AND {hi!r}" for m, (lo, hi) in ranges.items())
    return f"ifNull(multiIf({arms}, 0), 0)"
