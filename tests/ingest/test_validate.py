"""Bridge input validation: every DLQ reason, the accepted shape, the fast event id."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from citystream.ingest.bridge.validate import (
    REASONS,
    RECEIVED_HEADER,
    Accepted,
    Rejected,
    Validator,
    fast_event_id,
    fast_reading_fields,
    is_jpeg,
)
from citystream.schemas import fast as schemas_fast
from citystream.schemas.events import SensorReading, make_event_id
from citystream.schemas.topics import parse_mqtt_topic
from citystream.settings.bridge import BridgeSettings
from tests.ingest import malformed as mf

pytestmark = pytest.mark.unit
ROOT = "city"
LIMITS = BridgeSettings(max_reading_bytes=4096, max_frame_bytes=8192)


def validator(clock: float | None = None) -> Validator:
    return Validator(LIMITS, ROOT, (lambda: clock) if clock is not None else time.time)


def test_fast_event_id_equals_contract() -> None:
    for gw, stream, seq in [("gw-1", "reading", 0), ("gw.x_2", "frame", 123456789), ("g", "status", 7)]:
        assert fast_event_id(gw, stream, seq) == make_event_id(gw, stream, seq)


def test_valid_reading_is_accepted_with_key_headers_and_seq() -> None:
    msg = mf.reading(ROOT, 5, device="pm-9")
    result = validator().check(msg.topic, msg.payload, [("trace", "abc")])
    assert isinstance(result, Accepted)
    assert (result.stream, result.kafka_topic, result.key, result.seq) == ("reading", "raw.readings", "pm-9", 5)
    assert (result.tenant, result.gateway) == (mf.TENANT, mf.GATEWAY)
    headers = dict(result.headers)
    assert headers["trace"] == "abc"
    received = datetime.fromisoformat(headers[RECEIVED_HEADER])
    assert received.tzinfo is not None and abs((datetime.now(UTC) - received).total_seconds()) < 60


def test_valid_frame_and_status_are_accepted() -> None:
    frame = mf.frame(ROOT, 3)
    result = validator().check(frame.topic, frame.payload, frame.props)
    assert isinstance(result, Accepted)
    assert (result.kafka_topic, result.key, result.seq) == ("raw.frames", "cam-1", 3)
    assert dict(result.headers)["event_id"] == make_event_id(mf.GATEWAY, "frame", 3)
    st = mf.status(ROOT, 0)
    result = validator().check(st.topic, st.payload, [])
    assert isinstance(result, Accepted) and result.kafka_topic == "device.status"


def test_status_may_name_a_device_of_its_gateway() -> None:
    st = mf.status(ROOT, 1)
    doc = orjson.loads(st.payload) | {"device_id": "cam-7", "state": "camera_error"}
    assert isinstance(validator().check(st.topic, orjson.dumps(doc), []), Accepted)


@pytest.mark.parametrize("msg", mf.corpus(ROOT, minimum=1, max_reading=LIMITS.max_reading_bytes,
                                          max_frame=LIMITS.max_frame_bytes), ids=lambda m: m.reason)
def test_each_malformed_message_gets_its_reason(msg: mf.Msg) -> None:
    result = validator().check(msg.topic, msg.payload, msg.props)
    assert isinstance(result, Rejected), result
    assert result.reason == msg.reason, result.detail
    assert result.detail


def test_corpus_covers_every_reason() -> None:
    msgs = mf.corpus(ROOT)
    assert len(msgs) >= 200
    assert {m.reason for m in msgs} == set(REASONS)


def test_clock_skew_uses_injected_clock() -> None:
    msg = mf.reading(ROOT, 1)
    in_a_year = time.time() + 365 * 86400
    result = validator(clock=in_a_year).check(msg.topic, msg.payload, [])
    assert isinstance(result, Rejected) and result.reason == "clock_skew"
    assert isinstance(validator(clock=time.time() + 3600).check(msg.topic, msg.payload, []), Accepted)


def test_rejection_carries_what_the_topic_revealed() -> None:
    msg = mf.reading(ROOT, 1, device="pm-4")
    result = validator().check(msg.topic, b"garbage", [])
    assert isinstance(result, Rejected)
    assert (result.reason, result.tenant, result.key) == ("not_json", mf.TENANT, "pm-4")


def test_jpeg_markers() -> None:
    assert is_jpeg(mf.jpeg())
    assert not is_jpeg(b"\xff\xd8\xff\xd9"[:3])
    assert not is_jpeg(mf.jpeg()[:-1])


def _variants() -> list[tuple[str, bytes, bool]]:
    """(name, body, fast path expected to decide) for readings at the edges of the contract."""
    def doc(**changes: object) -> bytes:
        d = {**mf.reading_doc(7), **changes}
        return orjson.dumps({k: v for k, v in d.items() if v is not _DROP})

    now = datetime.now(UTC)
    iso = now.isoformat(timespec="microseconds")[:-6]
    valid = [("as sent", doc(), True), ("Z", doc(captured_at=iso[:-3] + "Z"), True),
             ("no fraction", doc(captured_at=iso[:19] + "+00:00"), True),
             ("1 digit", doc(captured_at=iso[:21] + "Z"), True), ("6 digits", doc(captured_at=iso + "Z"), True),
             ("offset", doc(captured_at=now.astimezone(timezone(timedelta(hours=7))).isoformat()), True),
             ("-00:00", doc(captured_at=iso + "-00:00"), True), ("int value", doc(value=3), True),
             ("top of range", doc(value=1000), True), ("bottom of range", doc(value=0.0), True),
             ("defaults", doc(district=_DROP, kind=_DROP, schema_version=_DROP), True),
             ("version 2", doc(schema_version=2), True), ("district 128", doc(district="ก" * 128), True),
             ("district with quote", doc(district='a"b'), False),
             ("unicode escape", doc()[:-1] + b',"district":"\\u0022"}', False),
             ("skewed", doc(captured_at="2020-01-01T00:00:00Z"), True),
             ("year 1800", doc(captured_at="1800-01-01T00:00:00Z"), True),
             ("offset 23:59", doc(captured_at=iso + "+23:59"), True)]
    odd = {"district 129": {"district": "ก" * 129}, "seq -1": {"seq": -1}, "seq bool": {"seq": True},
           "seq float": {"seq": 7.0}, "seq str": {"seq": "7"}, "value bool": {"value": True},
           "value str": {"value": "1.5"}, "value null": {"value": None}, "version 0": {"schema_version": 0},
           "version bool": {"schema_version": True}, "version float": {"schema_version": 1.0},
           "kind": {"kind": "alert"}, "extra": {"unit": "x"}, "no metric": {"metric": _DROP},
           "no seq": {"seq": _DROP}, "metric": {"metric": "pm1"}, "tenant": {"tenant": "other"},
           "device": {"device_id": "pm-2"}, "gateway": {"gateway_id": "gw-x"}, "event id": {"event_id": "x" * 36},
           "upper event id": {"event_id": mf.reading_doc(7)["event_id"].upper()}, "naive": {"captured_at": iso},
           "month 13": {"captured_at": "2026-13-01T00:00:00Z"}, "feb 30": {"captured_at": "2026-02-30T00:00:00Z"},
           "leap second": {"captured_at": "2026-06-30T23:59:60Z"}, "hour 24": {"captured_at": "2026-06-30T24:00:00Z"},
           "offset 24h": {"captured_at": iso + "+24:00"}, "epoch number": {"captured_at": int(now.timestamp())},
           "year 1": {"captured_at": "0001-01-01T00:00:00+01:00"},
           "space": {"captured_at": iso.replace("T", " ") + "Z"}, "7 digits": {"captured_at": iso + "1Z"},
           "offset minute 60": {"captured_at": iso + "+05:60"},
           "year 9999 -01:00": {"captured_at": "9999-12-31T23:00:00-01:00"},
           # strict contract: no coercion, bounded integers, per-metric ranges
           "big int value": {"value": 10**19}, "huge float": {"value": 1.79e308}, "pm25 5000": {"value": 5000},
           "below range": {"value": -0.001}, "humidity 100.5": {"metric": "humidity_pct", "value": 100.5},
           "value str number": {"value": "220.1"}, "epoch ms": {"captured_at": 1796667452521},
           "epoch in string": {"captured_at": "1796667452"}, "date only": {"captured_at": "2026-11-25"},
           "seq 2^63": {"seq": 2**63}, "seq 2^64-1": {"seq": 2**64 - 1}, "version 65536": {"schema_version": 65536}}
    return valid + [(name, doc(**changes), False) for name, changes in odd.items()] + [
        ("NaN", doc()[:-1].rsplit(b":", 1)[0] + b":NaN}", False), ("list", b"[1]", False), ("not utf8", b"\xff", False),
        ("duplicate key", doc()[:-1] + b',"seq":7}', False),
        ("duplicate metric", doc()[:-1] + b',"metric":"pm10_ug_m3"}', False),
        ("duplicate value", doc()[:-1] + b',"value":12.5}', False),
        ("duplicate by escape", doc()[:-1] + b',"\\u0073eq":7}', False),
        ("seq 2^64", doc()[:-1].replace(b'"seq":7', b'"seq":18446744073709551616') + b"}", False)]


_DROP = object()


def _outcome(fn: Callable[[], Accepted | Rejected]) -> Accepted | Rejected | type[Exception]:
    try:
        return fn()
    except Exception as exc:  # the contract's own validator can raise (year 1 with an offset overflows)
        return type(exc)


@pytest.mark.parametrize(("name", "body", "decides"), _variants(), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_reading_path_accepts_only_what_the_contract_accepts(name: str, body: bytes, decides: bool) -> None:
    msg = mf.reading(ROOT, 7)
    addr = parse_mqtt_topic(msg.topic, ROOT)
    assert addr is not None
    fast = fast_reading_fields(body, addr)
    full = _outcome(lambda: validator()._json(addr, body, []))  # the pydantic path alone
    assert (fast is not None) == decides, (name, full)
    if fast is not None:
        assert isinstance(full, Accepted) or (isinstance(full, Rejected) and full.reason == "clock_skew"), (name, full)
        assert full.seq == fast[0] if isinstance(full, Accepted) else True
        assert SensorReading.model_validate_json(body).captured_at.timestamp() == fast[1]
    both = _outcome(lambda: validator().check(msg.topic, body, []))  # the validator as the bridge calls it
    if isinstance(full, Rejected):
        assert isinstance(both, Rejected) and (both.reason, both.detail) == (full.reason, full.detail), name
    elif isinstance(full, Accepted):
        assert isinstance(both, Accepted) and (both.key, both.seq, both.tenant) == (full.key, full.seq, full.tenant)
        assert both.headers[:-1] == full.headers[:-1] and both.headers[-1][0] == RECEIVED_HEADER
    else:
        assert both is full, name


def test_a_switched_off_contract_check_leaves_readings_to_pydantic(monkeypatch: pytest.MonkeyPatch) -> None:
    msg = mf.reading(ROOT, 4)
    addr = parse_mqtt_topic(msg.topic, ROOT)
    assert addr is not None and fast_reading_fields(msg.payload, addr) is not None
    monkeypatch.setattr(schemas_fast, "ENABLED", False)
    assert fast_reading_fields(msg.payload, addr) is None
    result = validator().check(msg.topic, msg.payload, [])
    assert isinstance(result, Accepted) and result.seq == 4
