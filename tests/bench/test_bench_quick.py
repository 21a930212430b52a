"""``citystream bench --quick`` on a tiny load against the session stack: the JSON report's shape.

Speed is not asserted here (benchmarks are not tests); only that every stage ran on real servers,
produced positive figures with their ceilings, and that nothing was lost on the way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import citystream

STAGES = ("bridge_small", "bridge_frames", "sink_rows", "plates_fps", "faces_fps", "e2e_p50_s_at_25pct",
          "e2e_p99_s_at_50pct", "e2e_p99_s_at_75pct")
CEILINGS = ("mqtt_small", "mqtt_frames", "kafka_produce", "kafka_consume", "insert_arrow", "jpeg_decode")


@pytest.mark.integration
@pytest.mark.slow
def test_bench_quick_reports_every_stage_against_its_ceiling(stack_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = citystream("bench", "--quick", "--scale", "tiny", "--json", str(out), config=stack_home, timeout=300,
                     check=False)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    doc = json.loads(out.read_text())

    assert doc["mode"] == "tiny" and doc["stack"] == "given by --config"
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["python"]
    for key in CEILINGS:
        ceiling = doc["ceilings"][key]
        assert "error" not in ceiling, (key, ceiling)
        assert ceiling["value"] > 0 and ceiling["unit"], (key, ceiling)
    for key in STAGES:
        stage = doc["stages"][key]
        assert "error" not in stage, (key, stage)
        assert set(stage) >= {"value", "unit", "ceiling", "ratio"}, (key, stage)
        # plate accuracy on 3 scenes of the held-out renderer may honestly be 0 (its range is checked below)
        assert stage["value"] > 0 or key == "plate_accuracy", (key, stage)
        if stage["ceiling"] is not None:
            assert math.isclose(stage["ratio"], stage["value"] / stage["ceiling"], rel_tol=1e-2), (key, stage)

    # ratios are against the ceilings measured in this same run
    assert doc["stages"]["bridge_small"]["ceiling"] == doc["ceilings"]["mqtt_small"]["value"]
    assert doc["stages"]["sink_rows"]["ceiling"] == doc["ceilings"]["insert_arrow"]["value"]
    assert doc["stages"]["plates_fps"]["ceiling"] == doc["ceilings"]["jpeg_decode"]["value"]
    # zero loss through the bridge, every produced row stored by the sink
    for key in ("bridge_small", "bridge_frames"):
        stage = doc["stages"][key]
        assert stage["zero_loss"] and stage["delivered"] == stage["sent"], stage
    assert doc["stages"]["sink_rows"]["stored"] >= doc["stages"]["sink_rows"]["records"]
    accuracy = doc["stages"]["plate_accuracy"]
    assert accuracy["unit"] == "fraction" and 0.0 <= accuracy["value"] <= 1.0 and accuracy["n"] == 3
    # latency percentiles are ordered at every load level
    for pct in (25, 50, 75):
        p50, p95, p99 = (doc["stages"][f"e2e_{q}_s_at_{pct}pct"]["value"] for q in ("p50", "p95", "p99"))
        assert 0 < p50 <= p95 <= p99, (pct, p50, p95, p99)
    # the scaling runs need more load than the tiny scale gives; they say so instead of inventing a figure
    assert "skipped" in doc["stages"]["worker_scaling"] and "skipped" in doc["stages"]["bridge_scaling"]
