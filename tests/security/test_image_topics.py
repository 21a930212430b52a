"""Kafka topics that can hold camera images keep them no longer than raw frames are kept."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

from citystream.schemas.topics import DLQ, RAW_FRAMES, TOPICS
from citystream.settings import Settings
from citystream.topics import DAY_MS, IMAGE_SEGMENT_MS, admin_client, wanted_topics

HOUR_MS = 3_600_000


def _configs(settings: Settings) -> dict[str, dict[str, str]]:
    return {spec.name: topic.config for spec, topic in zip(TOPICS, wanted_topics(settings), strict=True)}


@pytest.mark.unit
def test_the_dlq_keeps_frames_no_longer_than_raw_frames_by_default() -> None:
    conf = _configs(Settings())
    frames_ms = int(conf[RAW_FRAMES]["retention.ms"])
    assert frames_ms == DAY_MS
    assert int(conf[DLQ]["retention.ms"]) == frames_ms  # the topic map's 30 days lowered to the frames' day
    for name in (RAW_FRAMES, DLQ):
        assert int(conf[name]["segment.ms"]) == IMAGE_SEGMENT_MS == HOUR_MS
    assert "segment.ms" not in conf["raw.readings"]  # other topics keep the broker's segments


@pytest.mark.unit
def test_a_longer_dlq_override_is_lowered_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    s = Settings(kafka={"topics": {DLQ: {"retention_ms": 30 * DAY_MS}}})
    with caplog.at_level(logging.WARNING, logger="citystream.topics"):
        conf = _configs(s)
    assert int(conf[DLQ]["retention.ms"]) == DAY_MS
    assert any(r.getMessage().startswith("dlq retention lowered") for r in caplog.records)
    forever = _configs(Settings(kafka={"topics": {DLQ: {"retention_ms": -1}}}))
    assert int(forever[DLQ]["retention.ms"]) == DAY_MS


@pytest.mark.unit
def test_the_dlq_follows_shorter_frame_and_image_retentions_and_may_be_shorter_still() -> None:
    half_day = _configs(Settings(kafka={"topics": {RAW_FRAMES: {"retention_ms": 12 * HOUR_MS}}}))
    assert int(half_day[DLQ]["retention.ms"]) == 12 * HOUR_MS
    # raw frames kept forever (an operator's choice): the dead-letter image days still bound the dlq
    kept: dict[str, Any] = {"kafka": {"topics": {RAW_FRAMES: {"retention_ms": -1}}},
                            "retention": {"dead_letter_image_days": 2}}
    conf = _configs(Settings(**kept))
    assert int(conf[DLQ]["retention.ms"]) == 2 * DAY_MS and int(conf[RAW_FRAMES]["segment.ms"]) == HOUR_MS
    # the image days bound it even when raw frames are kept longer
    longer = _configs(Settings(kafka={"topics": {RAW_FRAMES: {"retention_ms": 3 * DAY_MS}}}))
    assert int(longer[DLQ]["retention.ms"]) == DAY_MS
    shorter = _configs(Settings(kafka={"topics": {DLQ: {"retention_ms": 6 * HOUR_MS}}}))
    assert int(shorter[DLQ]["retention.ms"]) == 6 * HOUR_MS  # asking for less is kept
    tiny = _configs(Settings(kafka={"topics": {RAW_FRAMES: {"retention_ms": 600_000}}}))
    assert int(tiny[DLQ]["retention.ms"]) == 600_000 and int(tiny[DLQ]["segment.ms"]) == 600_000


@pytest.mark.integration
def test_the_broker_gets_the_capped_dlq_retention_and_short_segments(settings: Settings) -> None:
    client = admin_client(settings)
    got = {}
    for name in (RAW_FRAMES, DLQ):
        resource = ConfigResource(ResourceType.TOPIC, settings.kafka.topic(name))
        entries = client.describe_configs([resource])[resource].result(timeout=10)
        got[name] = {k: e.value for k, e in entries.items()}
    assert got[DLQ]["retention.ms"] == got[RAW_FRAMES]["retention.ms"] == str(DAY_MS)
    assert got[DLQ]["segment.ms"] == got[RAW_FRAMES]["segment.ms"] == str(HOUR_MS)
