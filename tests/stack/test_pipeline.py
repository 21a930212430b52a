"""The live pipeline of ``make demo``: started on the session stack with a store of its own, data arrives in
the store through the query path while it runs, and ``stack pipeline stop`` leaves no process behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from citystream.processors.watchlists import watchlists
from citystream.settings import Settings
from citystream.stack.pipeline import DEMO_WATCHLIST
from citystream.stack.procs import alive
from tests.conftest import citystream, write_settings
from tests.console.conftest import wait_for

pytestmark = pytest.mark.e2e

COUNTS = """SELECT (SELECT count() FROM v_sensor_readings WHERE gateway_id LIKE 'live-gw-%') AS readings,
                   (SELECT count() FROM v_plate_reads WHERE gateway_id LIKE 'live-gw-%') AS plates"""


def _counts(config: Path) -> dict[str, int]:
    res = citystream("query", "--json", COUNTS, config=config, check=False)
    if res.returncode != 0:  # the sink is between batches or still migrating: ask again
        return {"readings": 0, "plates": 0}
    row = json.loads(res.stdout)[0]
    return {"readings": int(row["readings"]), "plates": int(row["plates"])}


def test_live_pipeline_feeds_the_store_until_stopped(settings: Settings, tmp_path: Path) -> None:
    own = settings.model_copy(update={"clickhouse": settings.clickhouse.model_copy(
        update={"dsn": f"chdb://{tmp_path / 'clickhouse'}"})})
    config = write_settings(own, tmp_path / "citystream.yaml")
    pids: list[int] = []
    try:
        res = citystream("stack", "pipeline", "start", "--gateways", "1", "--cameras", "1", "--sensors", "2",
                         "--rate", "2", "--round", "20", "--duration", "300", "--demo-watchlist", "--json",
                         config=config, check=False, timeout=180)
        assert res.returncode == 0, res.stdout + res.stderr
        started = json.loads(res.stdout.strip().splitlines()[-1])
        assert {name: started[name]["running"] for name in ("sink", "bridge", "worker", "traffic")} == dict.fromkeys(
            ("sink", "bridge", "worker", "traffic"), True)
        pids = [started[name]["pid"] for name in ("sink", "bridge", "worker", "traffic")]
        # the demo's watchlist entries are in the pipeline's watchlist topic, under the plates' ids
        on_list = {json.loads(raw)["registration"] + " " + json.loads(raw)["province"]
                   for raw in watchlists.read_all(settings).values()}
        assert len(started["demo_watchlist"]) == DEMO_WATCHLIST and set(started["demo_watchlist"]) == on_list
        first = wait_for(lambda: (c := _counts(config))["readings"] > 0 and c, "readings in the store", 90)
        # still arriving: more readings later, and the worker's plate reads from the simulated cameras
        wait_for(lambda: (c := _counts(config))["readings"] > first["readings"] and c["plates"] > 0,
                 "new readings and plate reads", 120)
    finally:
        stopped = citystream("stack", "pipeline", "stop", config=config, check=False, timeout=300)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.split() == ["traffic=stopped", "bridge=stopped", "worker=stopped", "sink=stopped"]
    assert [pid for pid in pids if alive(pid)] == []
    status = json.loads(citystream("stack", "pipeline", "status", "--json", config=config).stdout)
    assert [name for name in ("sink", "bridge", "worker", "traffic") if status[name]["running"]] == []
