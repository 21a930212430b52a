"""The servers of a deployment as ``citystream status`` sees them: MQTT, Kafka (and consumer lag), ClickHouse.

Every check is bounded by a timeout and returns a document instead of raising: a server that does
not answer is ``{"healthy": false, "detail": "<server> unreachable at <address>: <reason>"}``.

- MQTT: a TCP connection to ``mqtt.host:mqtt.port`` (the listener answers; logins are the stages' business).
- Kafka: cluster metadata through the admin client; lag per consumer group is the high watermark minus
  the group's committed offset, per partition, summed per topic (partitions the group never
  committed are left out).
- ClickHouse: ``SELECT 1`` on a server; an embedded ``chdb://`` store is queried only through the
  sink that owns it (status never opens the directory itself: that would lock the sink out).
- Gateways: every gateway with a reading or a status row ingested in the last minutes.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from citystream.clickhouse import StoreError, chdb_path, query_rows, read_owner
from citystream.settings import Settings

log = logging.getLogger(__name__)
GATEWAY_LIMIT = 500


def unreachable(server: str, address: str, reason: object) -> dict[str, Any]:
    """The document of a server that did not answer."""
    return {"healthy": False, "detail": f"{server} unreachable at {address}: {reason}"}


def mqtt_check(settings: Settings, timeout: float) -> dict[str, Any]:
    """Whether the MQTT listener accepts a TCP connection."""
    address = f"{settings.mqtt.host}:{settings.mqtt.port}"
    try:
        with socket.create_connection((settings.mqtt.host, settings.mqtt.port), timeout=timeout):
            pass
    except OSError as exc:
        return unreachable("mqtt", address, exc.strerror or exc)
    return {"healthy": True, "detail": f"listening at {address}"}


def admin_client(settings: Settings, timeout: float) -> Any:
    """A Kafka admin client whose librdkafka logs stay quiet (status reports the failure itself)."""
    from confluent_kafka.admin import AdminClient

    quiet = logging.getLogger("citystream.status.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    conf = {**settings.kafka.client_config(), "logger": quiet, "socket.timeout.ms": int(timeout * 1000),
            "reconnect.backoff.max.ms": 1000}
    return AdminClient(conf)


def kafka_check(admin: Any, settings: Settings, timeout: float) -> dict[str, Any]:
    """Whether the cluster answers a metadata request, and how many brokers it lists."""
    from confluent_kafka import KafkaException

    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        return unreachable("kafka", settings.kafka.bootstrap, exc.args[0].str() if exc.args else exc)
    return {"healthy": True, "detail": f"{len(meta.brokers)} broker(s) at {settings.kafka.bootstrap}",
            "brokers": len(meta.brokers)}


def consumer_groups(settings: Settings) -> dict[str, str]:
    """Stage -> consumer group: the worker's (Faust app id with the topic prefix) and the sink's two."""
    return {"worker": settings.kafka.topic(settings.worker.app_id), "sink": settings.sink.group_id,
            "sink_frames": f"{settings.sink.group_id}-frames"}


def group_lag(admin: Any, group: str, timeout: float) -> dict[str, Any]:
    """``{"group", "total", "topics": {topic: lag}}`` of one consumer group, or ``{"group", "error"}``."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    try:
        found = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                  request_timeout=timeout)[group].result(timeout)
        committed = {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions or () if tp.offset >= 0}
        ends: dict[tuple[str, int], int] = {}
        if committed:
            specs = {TopicPartition(t, p): OffsetSpec.latest() for t, p in committed}
            for tp, future in admin.list_offsets(specs, request_timeout=timeout).items():
                ends[(tp.topic, tp.partition)] = future.result(timeout).offset
    except KafkaException as exc:
        return {"group": group, "error": exc.args[0].str() if exc.args else str(exc)}
    except TimeoutError:  # a future not done within the timeout
        return {"group": group, "error": f"no answer within {timeout:g} s"}
    topics: dict[str, int] = {}
    for key, offset in committed.items():
        if key in ends and ends[key] >= 0:
            topics[key[0]] = topics.get(key[0], 0) + max(0, ends[key] - offset)
    return {"group": group, "total": sum(topics.values()), "topics": dict(sorted(topics.items()))}


def lag(admin: Any, settings: Settings, timeout: float) -> dict[str, Any]:
    """Consumer lag of the worker's and the sink's groups."""
    return {stage: group_lag(admin, group, timeout) for stage, group in consumer_groups(settings).items()}


def clickhouse_check(settings: Settings, timeout: float) -> dict[str, Any]:
    """Whether the store answers ``SELECT 1`` (an embedded store only through its owning sink)."""
    dsn = settings.clickhouse.dsn
    path = chdb_path(dsn)
    if path is not None and read_owner(path) is None:
        return {"healthy": False, "detail": f"embedded store {path} is not served: no running sink owns it"}
    try:
        query_rows(settings, "SELECT 1 AS ok", timeout=timeout)
    except StoreError as exc:
        return unreachable("clickhouse", dsn, str(exc).splitlines()[0] if str(exc) else "no answer")
    return {"healthy": True, "detail": f"answers at {dsn}"}


def gateways_seen(settings: Settings, minutes: int, timeout: float) -> list[dict[str, Any]]:
    """Gateways with readings or status rows ingested in the last ``minutes``, newest first."""
    since = f"now64(3) - INTERVAL {int(minutes)} MINUTE"
    rows = query_rows(settings, f"""
        SELECT tenant, gateway_id, max(ingested_at) AS last_seen, countIf(kind = 'reading') AS readings,
               countIf(kind = 'status') AS status_events
        FROM (SELECT tenant, gateway_id, ingested_at, 'reading' AS kind FROM sensor_readings
              WHERE ingested_at >= {since}
              UNION ALL
              SELECT tenant, gateway_id, ingested_at, 'status' AS kind FROM device_status
              WHERE ingested_at >= {since})
        GROUP BY tenant, gateway_id ORDER BY last_seen DESC, tenant, gateway_id LIMIT {GATEWAY_LIMIT}""",
                      timeout=timeout)
    return [{"tenant": r["tenant"], "gateway_id": r["gateway_id"], "last_seen": r["last_seen"],
             "readings": int(r["readings"]), "status_events": int(r["status_events"])} for r in rows]
