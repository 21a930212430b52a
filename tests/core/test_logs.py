"""Log lines: hostile values cannot forge fields or lines; third-party floods are rate-limited and formatted."""

from __future__ import annotations

import logging
import re
import time

import orjson
import pytest
from confluent_kafka import Producer

from citystream.logs import JsonFormatter, KeyValueFormatter, RateLimit, kv_value
from citystream.settings import Settings
from tests.conftest import free_port

HOSTILE = ["value=nan", "a b", 'quote"d', "new\nline", "tab\tcr\r", "nul\x00", "esc\x1b[31m", "", "=", "\\", "é ไทย"]


@pytest.mark.unit
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_inside_their_field(value: str) -> None:
    record = logging.makeLogRecord({"name": "t", "levelno": logging.INFO, "levelname": "INFO", "msg": "dead letter",
                                    "detail": value, "reason": "x"})
    line = KeyValueFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x00" not in line and "\x1b" not in line
    fields = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)
    keys = [k for k, _ in fields]
    assert keys == ["ts", "level", "logger", "msg", "detail", "reason"], line
    detail = dict(fields)["detail"]
    assert (orjson.loads(detail) if detail.startswith('"') else detail) == value
    doc = orjson.loads(JsonFormatter().format(record))
    assert doc["detail"] == value


@pytest.mark.unit
def test_plain_values_stay_bare() -> None:
    assert [kv_value(v) for v in ("abc", 3, 1.5, True, "a.b-c/d:e")] == ["abc", "3", "1.5", "True", "a.b-c/d:e"]


@pytest.mark.unit
def test_rate_limit_passes_a_burst_then_counts_what_it_dropped() -> None:
    now = [0.0]
    limit = RateLimit(burst=3, period_s=10.0, clock=lambda: now[0])

    def rec(name: str, msg: str = "FAIL broker down") -> logging.LogRecord:
        return logging.makeLogRecord({"name": name, "msg": msg, "levelno": logging.ERROR})

    passed = [limit.filter(rec("librdkafka")) for _ in range(100)]
    assert sum(passed) == 3
    assert all(limit.filter(rec("citystream.ingest.bridge.bridge")) for _ in range(10)), "own loggers are not limited"
    assert limit.filter(rec("librdkafka", "another message")), "each message template has its own budget"
    now[0] = 11.0
    first = rec("librdkafka")
    assert limit.filter(first) and getattr(first, "suppressed", 0) == 97


@pytest.mark.unit
def test_librdkafka_lines_go_through_python_logging(caplog: pytest.LogCaptureFixture,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    settings = Settings.model_validate({"kafka": {"bootstrap": f"127.0.0.1:{free_port()}"}})  # nothing listens
    producer = Producer({**settings.kafka.client_config(), "reconnect.backoff.max.ms": 100})
    with caplog.at_level(logging.DEBUG, logger="librdkafka"):
        deadline = time.monotonic() + 10
        while not any(r.name == "librdkafka" for r in caplog.records) and time.monotonic() < deadline:
            producer.poll(0.2)
    assert any(r.name == "librdkafka" for r in caplog.records), "no librdkafka line reached the logger"
    assert "%3|" not in capfd.readouterr().err, "raw librdkafka lines on stderr"
