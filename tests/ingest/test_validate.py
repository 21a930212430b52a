"""Bridge input validation: every DLQ reason, the accepted shape, the fast event id."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import orjson
import pytest

from citystream.ingest.validate import REASONS, RECEIVED_HEADER, Accepted, Rejected, Validator, fast_event_id, is_jpeg
from citystream.schemas.events import make_event_id
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
