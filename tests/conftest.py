"""Shared fixtures: the real local stack started once per session on free loopback ports.

Each test gets its own Kafka topic prefix, MQTT topic root and ClickHouse database, so tests never
see each other's data. The pytest process itself may open exactly one chDB path (chDB allows one
per process), so in-process ClickHouse tests share ``chdb_dsn`` and differ by database; a stage
started as a subprocess gets a chDB path of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from citystream.settings import ClickHouseSettings, Settings, load_settings
from citystream.stack.kafka import ensure_topics
from citystream.stack.procs import free_port

REPO = Path(__file__).resolve().parent.parent


def citystream(*args: str, config: Path | None = None, timeout: float = 120, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``citystream`` command line."""
    argv = [sys.executable, "-m", "citystream", *(["--config", str(config)] if config else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check,
                          env={**os.environ, **(env or {})}, cwd=REPO)


@pytest.fixture(scope="session")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Start Mosquitto + Kafka once for the session on free ports; yields the generated config file."""
    home = tmp_path_factory.mktemp("stack")
    base = home / "base.yaml"
    base.write_text(yaml.safe_dump({"stack": {
        "home": str(home), "mqtt_port": free_port(), "kafka_port": free_port(),
        "kafka_controller_port": free_port(), "kafka_jars": str(REPO / ".cache" / "kafka"), "kafka_heap": "512m",
        "test_publisher": True}}))  # tests of malformed traffic publish what no gateway identity may
    res = citystream("stack", "up", config=base, check=False, timeout=180)
    if res.returncode != 0:
        citystream("stack", "down", config=base, check=False)  # whatever did start
        raise RuntimeError(f"stack up failed:\n{res.stdout}\n{res.stderr}")
    yield home / "citystream.yaml"
    citystream("stack", "down", config=base, check=False)


@pytest.fixture(scope="session")
def chdb_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The one chDB path this test process may open."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def unique() -> str:
    """A short unique name for this test's topics, databases and topic roots."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture
def analyst_store(chdb_dsn: str, unique: str) -> ClickHouseSettings:
    """A migrated database holding a small demo-like city (for the analyst queries and the dashboards)."""
    from citystream import clickhouse
    from citystream.schemas.migrate import migrate
    from tests.schemas.test_analyst_queries import demo_like

    ch = ClickHouseSettings(dsn=chdb_dsn, database=unique)
    admin = clickhouse.connect(ch, database=False)
    migrate(admin, unique)
    demo_like(admin, unique)
    return ch


@pytest.fixture
def settings(stack_home: Path, chdb_dsn: str, unique: str) -> Settings:
    """Settings pointing at the session stack, isolated for this test (topics created)."""
    s = load_settings(stack_home, {
        "kafka.topic_prefix": f"{unique}.",
        "mqtt.topic_root": unique,
        "clickhouse.dsn": chdb_dsn,
        "clickhouse.database": unique,
        "sink.group_id": f"{unique}-sink",
        "sink.query_port": 0,
        "bridge.share_group": f"{unique}-bridge",
    })
    ensure_topics(s)
    return s


def write_settings(settings: Settings, path: Path) -> Path:
    """Write settings as a YAML file for a subprocess stage."""
    from citystream.settings import dump_settings
    path.write_text(yaml.safe_dump(dump_settings(settings), allow_unicode=True))
    return path
