"""Issue 16's 'done when' on the whole pipeline: a plate seen in a demo run is found, erased and audited.

The demo's worker reads the simulator's rendered plates; the plate is taken from a frame the sink archived
(read again with ``citystream plates read``, the worker's own reader), so the test knows a plate the demo
really saw. Everything runs as processes on the session stack, with a chDB path of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from citystream.settings import Settings
from tests.conftest import citystream, write_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run(config: Path, *args: str) -> str:
    """A citystream command that must succeed; its stdout."""
    res = citystream(*args, config=config, check=False, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res.stdout


def run_json(config: Path, *args: str) -> Any:
    """A citystream command with ``--json`` that must succeed; its (last line's) JSON document."""
    return json.loads(run(config, *args, "--json").strip().splitlines()[-1])


def test_a_plate_seen_in_the_demo_is_found_erased_and_audited(settings: Settings, tmp_path: Path) -> None:
    own = settings.model_copy(update={
        "clickhouse": settings.clickhouse.model_copy(update={"dsn": f"chdb://{tmp_path / 'clickhouse'}"}),
        "sink": settings.sink.model_copy(update={"frames_dir": tmp_path / "frames"}),
        "worker": settings.worker.model_copy(update={"pseudonym_keys": {"*": SecretStr("demo-pdpa-key-42")}}),
    })
    config = write_settings(own, tmp_path / "citystream.yaml")
    verdict = run_json(config, "demo", "--duration", "8", "--gateways", "1", "--cameras", "1", "--sensors", "1")
    assert verdict["plate_reads"] > 0

    frames = run_json(config, "query", "SELECT f.object_ref AS ref, p.plate_pseudonym AS alias, p.tenant AS tenant "
                      "FROM v_frame_index AS f INNER JOIN v_plate_reads AS p ON p.source_event_id = f.event_id "
                      "ORDER BY f.captured_at")
    assert frames, "no archived frame with a plate read"
    seen: dict[str, Any] | None = None
    for frame in frames:  # the first archived frame whose plate reads back as what the worker stored
        lines = run(config, "plates", "read", "--json", "--tenant", frame["tenant"],
                    str(tmp_path / "frames" / frame["ref"])).splitlines()
        reads = [json.loads(line) for line in lines if line.strip()]
        seen = next((r for r in reads if r["pseudonym"] == frame["alias"]), None)
        if seen is not None:
            break
    assert seen is not None, "no archived frame's plate reads back as stored"
    plate = ["--plate", seen["registration"], "--province", seen["province"]]

    found = run_json(config, "privacy", "search", *plate, "--reason", "demo access request")
    assert found["counts"]["plate_reads"] >= 1 and found["counts"]["frame_index"] >= 1
    assert {r["plate_pseudonym"] for r in found["records"]["plate_reads"]} == {seen["pseudonym"]}
    erased = run_json(config, "privacy", "erase", *plate, "--reason", "demo erasure request")
    assert erased["counts"] == found["counts"] and erased["frame_files"] == found["counts"]["frame_index"]
    assert set(run_json(config, "privacy", "search", *plate)["counts"].values()) == {0}
    tables = run_json(config, "query", f"SELECT name FROM system.tables WHERE database = '{own.clickhouse.database}' "
                      "AND engine NOT IN ('View', 'MaterializedView') AND name != 'audit_log'")
    for table in (t["name"] for t in tables):
        left = run_json(config, "query", f"SELECT count() AS n FROM {table} WHERE "
                        f"position(formatRow('TabSeparated', *), '{seen['pseudonym']}') > 0")
        assert left[0]["n"] == 0, table
    log = run_json(config, "privacy", "audit")
    assert [e["action"] for e in log] == ["privacy.search", "privacy.erase", "privacy.search"]
    by_action = {(e["action"], e["reason"]): e["subject"] for e in log}
    subject = f"plate:{seen['pseudonym']}"
    assert by_action[("privacy.search", "demo access request")] == subject
    assert by_action[("privacy.erase", "demo erasure request")] == subject
    # the search after the erasure may find no stored read left to name the tenant whose key makes the pseudonym
    assert {e["subject"] for e in log} <= {subject, "plate (no stored reads to key it)"}
    assert seen["registration"] not in json.dumps(log, ensure_ascii=False)
