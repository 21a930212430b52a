"""``citystream status``: finding the stage processes, reading their endpoints, lag, and the whole screen."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from citystream import status_servers
from citystream.settings import Settings
from citystream.status_probe import Scrape, Target, discover, parse_target, quantile, rate, stage_command
from tests.conftest import REPO, citystream, free_port, write_settings
from tests.sinks.procs import SinkProcess, sink_settings, wait_for


@pytest.mark.unit
def test_stage_command_finds_the_stage_and_its_config() -> None:
    assert stage_command(["python", "-m", "citystream", "--config", "/c.yaml", "bridge"]) == ("bridge", "/c.yaml")
    assert stage_command(["/venv/bin/citystream", "sink", "-c", "s.yaml"]) == ("sink", "s.yaml")
    assert stage_command(["python", "-m", "citystream", "--config=/w.yaml", "worker"]) == ("worker", "/w.yaml")
    assert stage_command(["python", "-m", "citystream", "worker"]) == ("worker", None)
    assert stage_command(["python", "-m", "citystream", "--config", "/c.yaml", "status"]) is None
    assert stage_command(["python", "-m", "citystream", "gateway", "simulate"]) is None
    assert stage_command(["python", "-m", "pytest", "tests/sinks"]) is None


@pytest.mark.unit
def test_parse_target_accepts_stage_equals_url_only() -> None:
    assert parse_target("worker=http://worker:9100/") == Target("worker", "http://worker:9100")
    for bad in ("worker", "gateway=http://g:9100", "sink=sink:9100"):
        with pytest.raises(ValueError):
            parse_target(bad)


def _fake_process(root: Path, pid: int, argv: list[str], env: dict[str, str], cwd: Path) -> None:
    proc = root / str(pid)
    proc.mkdir()
    (proc / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (proc / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()) + b"\0")
    (proc / "cwd").symlink_to(cwd)


@pytest.mark.unit
def test_discover_lists_the_processes_that_use_the_same_settings_file(tmp_path: Path) -> None:
    """Unit: a fake /proc tree (ports from the environment or from the settings file; others' files ignored)."""
    root, work = tmp_path / "proc", tmp_path / "work"
    root.mkdir()
    (work / ".citystream").mkdir(parents=True)
    ours = work / "ours.yaml"
    ours.write_text("metrics: {host: 0.0.0.0, port: 9301}\n")
    (work / "other.yaml").write_text("metrics: {port: 9999}\n")
    run = [sys.executable, "-m", "citystream"]
    _fake_process(root, 10, [*run, "--config", "ours.yaml", "bridge"], {"CITYSTREAM_METRICS__PORT": "9401"}, work)
    _fake_process(root, 11, [*run, "--config", str(ours), "worker"], {"CITYSTREAM_METRICS__PORT": "9402"}, work)
    _fake_process(root, 12, [*run, "--config", str(ours), "worker"], {"CITYSTREAM_METRICS__PORT": "9402"}, work)
    _fake_process(root, 13, [*run, "sink"], {"CITYSTREAM_CONFIG": str(ours)}, work)
    _fake_process(root, 14, [*run, "--config", "other.yaml", "sink"], {}, work)
    _fake_process(root, 15, [*run, "--config", str(ours), "bridge"], {"CITYSTREAM_METRICS__PORT": "0",
                                                                      "CITYSTREAM_METRICS__HOST": "10.0.0.1"}, work)
    _fake_process(root, 16, ["bash", "-c", "citystream"], {}, work)
    (root / "self").mkdir()

    targets, notes = discover(ours, root)

    assert sorted(targets, key=lambda t: t.url) == [
        Target("sink", "http://127.0.0.1:9301", 13),  # port from the file, 0.0.0.0 probed on loopback
        Target("bridge", "http://127.0.0.1:9401", 10),  # config relative to the process's cwd
        Target("worker", "http://127.0.0.1:9402", 11),  # a forked vision process shares the port: listed once
    ]
    assert notes == ["bridge pid 15 serves no metrics (metrics.port is 0)"]


def _scrape(stage: str, url: str, at: float, samples: dict[str, list[tuple[dict[str, str], float]]]) -> Scrape:
    return Scrape(Target(stage, url), at, ready=True, samples=samples)


@pytest.mark.unit
def test_rates_and_quantiles_follow_prometheus() -> None:
    before = [_scrape("sink", "a", 10.0, {"rows_total": [({"table": "x"}, 100.0), ({"table": "y"}, 50.0)]}),
              _scrape("sink", "b", 10.0, {"rows_total": [({}, 900.0)]})]
    after = [_scrape("sink", "a", 12.0, {"rows_total": [({"table": "x"}, 140.0), ({"table": "y"}, 70.0)]}),
             _scrape("sink", "b", 14.0, {"rows_total": [({}, 20.0)]})]  # b restarted: counts from zero
    assert rate(before, after, ["rows_total"]) == pytest.approx(60 / 2 + 20 / 4)
    assert rate([], after, ["rows_total"]) is None
    buckets = {0.1: 0.0, 0.5: 50.0, 1.0: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.5)
    assert quantile(0.99, buckets) == pytest.approx(0.99)  # histogram_quantile interpolates within the bucket
    assert quantile(0.5, {1.0: 0.0, float("inf"): 0.0}) is None


@pytest.mark.integration
def test_group_lag_is_high_watermark_minus_committed(settings: Settings, unique: str) -> None:
    topic = settings.kafka.topic("raw.readings")
    producer = Producer(settings.kafka.client_config())
    for i in range(30):
        producer.produce(topic, value=b"x", partition=i % 2)
    assert producer.flush(30) == 0
    group = f"{unique}-lag"
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    consumer.commit(offsets=[TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 15)], asynchronous=False)
    consumer.close()
    admin = status_servers.admin_client(settings, 10)

    assert status_servers.group_lag(admin, group, 10) == {"group": group, "total": 10, "topics": {topic: 10}}
    assert status_servers.group_lag(admin, f"{unique}-never", 10) == {"group": f"{unique}-never", "total": 0,
                                                                       "topics": {}}


def _start(stage: str, config: Path, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "citystream", "--config", str(config), stage], stdout=out,
                                stderr=out, cwd=REPO, env={**os.environ, **env})


def _status(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, Any, str]:
    res = citystream("status", "--json", "--interval", "1", *args, config=config, check=False, env=env, timeout=180)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout.splitlines()[-1]) if res.stdout.strip() else None, res.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_status_of_a_running_pipeline_and_with_kafka_unreachable(settings: Settings, tmp_path: Path) -> None:
    """Bridge, worker and sink as real processes: all healthy with lag, latency and the gateway seen; then
    the same deployment as seen with Kafka unreachable: which stages are not healthy, exit 1, one screen."""
    s = sink_settings(settings, tmp_path)
    sink = SinkProcess(s, tmp_path / "pipeline.yaml").start()  # the file every stage and status read
    config = sink.config
    procs = [_start(stage, config, tmp_path / f"{stage}.log", {"CITYSTREAM_METRICS__PORT": str(free_port()),
                                                               "CITYSTREAM_WORKER__VISION_PROCESSES": "1"})
             for stage in ("bridge", "worker")]
    try:
        wait_for("every stage ready", lambda: _status(config)[0] == 0, timeout=240, every=2)
        citystream("gateway", "simulate", "--gateways", "1", "--cameras", "0", "--sensors", "2", "--duration", "5",
                   config=config, timeout=120, env={"CITYSTREAM_METRICS__PORT": "0"})  # the sink has the file's port
        code, doc, _ = wait_for("the gateway in the status", lambda: (r := _status(config))[1]["gateways"] and r,
                                timeout=120, every=2)
        assert code == 0 and doc["healthy"] is True
        assert list(doc["stages"]) == ["mqtt", "bridge", "kafka", "worker", "sink", "clickhouse"]
        assert all(stage["healthy"] for stage in doc["stages"].values())
        assert [i["pid"] for i in doc["stages"]["sink"]["instances"]] == [sink.proc.pid]  # type: ignore[union-attr]
        assert [g["gateway_id"] for g in doc["gateways"]] == ["sim-gw-000"] and doc["gateways"][0]["readings"] > 0
        assert doc["lag"]["sink"]["group"] == s.sink.group_id and doc["lag"]["sink"]["total"] >= 0
        assert s.kafka.topic("raw.readings") in doc["lag"]["sink"]["topics"]
        assert doc["lag"]["worker"]["group"] == s.kafka.topic(s.worker.app_id)
        assert doc["e2e_latency"]["p50_s"] is not None and doc["e2e_latency"]["p50_s"] >= 0
        worker_metrics = urllib.request.urlopen(f"{doc['stages']['worker']['instances'][0]['url']}/metrics",
                                                timeout=10).read().decode()
        readings = s.kafka.topic("raw.readings")
        assert re.search(rf'citystream_worker_consumer_lag_messages{{partition="\d",topic="{re.escape(readings)}"}}',
                         worker_metrics), worker_metrics  # the worker exports its own lag

        closed = {"CITYSTREAM_KAFKA__BOOTSTRAP": f"127.0.0.1:{free_port()}"}
        code, doc, stderr = _status(config, env=closed)
        assert code == 1 and doc["healthy"] is False and stderr == ""
        health = {name: stage["healthy"] for name, stage in doc["stages"].items()}
        assert health == {"mqtt": True, "bridge": False, "kafka": False, "worker": False, "sink": False,
                          "clickhouse": True}
        assert "kafka unreachable at 127.0.0.1:" in doc["stages"]["kafka"]["detail"]
        assert doc["stages"]["worker"]["detail"] == "needs kafka: not healthy"
        assert all("error" in lag for lag in doc["lag"].values())
        screen = citystream("status", "--interval", "1", config=config, check=False, env=closed, timeout=180)
        assert screen.returncode == 1 and "Traceback" not in screen.stderr
        assert "NOT HEALTHY" in screen.stdout and "kafka unreachable" in screen.stdout
        assert len(screen.stdout.splitlines()) <= 50, screen.stdout  # one screen

        watch = citystream("status", "--json", "--watch", "--count", "2", "--interval", "1", config=config,
                           check=False, timeout=180)
        docs = [json.loads(line) for line in watch.stdout.splitlines()]
        assert watch.returncode == 0 and len(docs) == 2 and all(d["healthy"] for d in docs)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        sink.terminate()


@pytest.mark.unit
def test_a_bad_target_is_a_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    write_settings(Settings(stack={"home": str(tmp_path)}), cfg)
    res = citystream("status", "--target", "gateway=http://x:1", config=cfg, check=False)
    assert res.returncode == 2 and "STAGE=URL" in res.stderr
