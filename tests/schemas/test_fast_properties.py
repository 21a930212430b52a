"""Unit, property-based: the SensorReading fast check never accepts what the strict contract refuses.

Hypothesis builds reading bodies from valid field values mixed with the mutations of issue 15 (coerced
types, repeated keys — also spelled with escapes —, integers beyond their bounds, values out of their
metric's range, non-RFC 3339 timestamps, quotes in text) and checks, for every body: accepted by
``fast_reading`` ⇒ accepted by ``schemas.strict.validate_json`` with the same values.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from citystream.schemas.events import SensorReading, make_event_id
from citystream.schemas.fast import FIELDS, fast_reading
from citystream.schemas.ranges import RANGES
from citystream.schemas.strict import validate_json

pytestmark = pytest.mark.unit
set_hypothesis_home_dir(f"{tempfile.gettempdir()}/citystream-hypothesis")  # keep its caches out of the work tree
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

anything = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                     st.text(max_size=8), st.lists(st.integers(), max_size=2))
stamps_ok = st.builds(lambda d, spec: d.isoformat(timespec=spec).replace("+00:00", "Z"),
                      st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1),
                                   timezones=st.just(UTC)),
                      st.sampled_from(["seconds", "milliseconds", "microseconds"]))
stamps_bad = st.one_of(
    st.sampled_from(["2026-11-25 15:03:48Z", "2026-11-25", "1796667452", "2026-11-25T15:03:48.1234567Z",
                     "2026-11-25T15:03:48+05:60", "2026-11-25t15:03:48z", "2026-11-25T15:03:48"]),
    st.integers(0, 2**41), st.floats(0, 2e12))


def _pick(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """Mostly a valid value, one time in ten a mutation (so many bodies are valid and the property bites)."""
    return draw(bad) if draw(st.integers(0, 9)) == 0 else draw(good)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    seq = _pick(draw, st.integers(0, 2**63 - 1), st.one_of(st.integers(2**63, 2**64 + 5), anything))
    metric = _pick(draw, st.sampled_from(sorted(RANGES)), anything)
    low, high = RANGES[metric] if isinstance(metric, str) and metric in RANGES else (0.0, 1.0)
    value = _pick(draw, st.one_of(st.floats(low, high), st.integers(int(low), int(high)), st.sampled_from([low, high])),
                  st.one_of(st.floats(low - 10, high + 10), st.sampled_from([1.79e308, high + 1e-9]), anything))
    doc: dict[str, Any] = {
        "event_id": make_event_id("gw-1", "reading", seq if isinstance(seq, int) and seq >= 0 else 0),
        "schema_version": _pick(draw, st.integers(1, 65_535), st.one_of(st.integers(65_536, 70_000), anything)),
        "tenant": _pick(draw, st.just("nakhon-rangsit"), st.sampled_from(["Nakhon", ""])), "gateway_id": "gw-1",
        "device_id": _pick(draw, st.just("pm-01"), st.just("pm 01")), "seq": seq,
        "captured_at": _pick(draw, stamps_ok, stamps_bad),
        "district": _pick(draw, st.text(max_size=128), st.one_of(st.text(min_size=129, max_size=140),
                                                                st.sampled_from(['a"b', "\\", "\u0000"]))),
        "kind": _pick(draw, st.just("sensor_reading"), st.just("alert")), "metric": metric, "value": value}
    if draw(st.integers(0, 5)) == 0:
        del doc[draw(st.sampled_from(sorted(doc)))]
    raw = json.dumps(doc, ensure_ascii=draw(st.booleans()), separators=(",", ":")).encode()
    if doc and draw(st.integers(0, 3)) == 0:  # a repeated key, sometimes spelled with a \u escape, sometimes first
        repeat = draw(st.sampled_from(sorted(doc)))
        key = draw(st.sampled_from([repeat, "".join(f"\\u{ord(c):04x}" for c in repeat)]))
        pair = f'"{key}":{json.dumps(doc[repeat])}'.encode()
        raw = raw[:-1] + b"," + pair + b"}" if draw(st.booleans()) else b"{" + pair + b"," + raw[1:]
    return raw


@settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_fast_acceptance_implies_strict_acceptance_with_the_same_values(raw: bytes) -> None:
    fast = fast_reading(raw)
    if fast is None:
        return
    model = validate_json(SensorReading, raw)  # raises if the fast check accepted a refused body
    values = dict(zip(FIELDS, fast, strict=True))
    assert values["captured_at"] == (model.captured_at - EPOCH) // timedelta(milliseconds=1)
    assert float(values["value"]) == model.value and values["seq"] == model.seq
    assert (values["tenant"], values["metric"], values["district"]) == (model.tenant, model.metric.value,
                                                                         model.district)
