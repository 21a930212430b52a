"""``citystream chaos``: a seeded schedule of every fault kind on the whole pipeline loses and doubles nothing.

The short schedule here (60 s, every fault kind once) is part of ``make test``; the full 240 s schedule
over 20 seeds is a command whose results are in RELIABILITY.md.
"""

from __future__ import annotations

import orjson
import pytest

from citystream.chaos import FAULT_KINDS, schedule
from citystream.reconcile import reconcile
from tests.conftest import citystream


@pytest.mark.unit
def test_schedule_is_seeded_and_covers_every_fault_kind() -> None:
    faults = schedule(7, 240.0, repeats=2)
    assert faults == schedule(7, 240.0, repeats=2), "same seed, same schedule"
    assert faults != schedule(8, 240.0, repeats=2)
    assert sorted(f.kind for f in faults) == sorted(list(FAULT_KINDS) * 2)
    times = [f.at_s for f in faults]
    assert times == sorted(times) and 0.1 * 240 <= times[0] and times[-1] <= 0.8 * 240


@pytest.mark.unit
def test_reconcile_names_the_lost_seqs() -> None:
    result = reconcile({"gw-a": 5, "gw-b": 3}, {"gw-a": {0, 1, 3, 4}, "gw-b": {0, 1, 2, 7}})
    assert result == {"published": 8, "stored": 7, "lost": 1, "lost_seqs": {"gw-a": [2]}}


@pytest.mark.e2e
@pytest.mark.fault
@pytest.mark.slow
def test_short_chaos_schedule_loses_and_doubles_nothing() -> None:
    res = citystream("chaos", "--seed", "7", "--duration", "60", "--repeats", "1", "--gateways", "2",
                     "--sensors", "4", "--json", check=False, timeout=900)
    assert res.stdout.strip(), f"no verdict:\n{res.stderr[-3000:]}"
    verdict = orjson.loads(res.stdout.strip().splitlines()[-1])
    assert {"published", "stored", "lost", "view_duplicates", "faults", "ok"} <= verdict.keys()
    assert sorted(f["kind"] for f in verdict["faults"]) == sorted(FAULT_KINDS)
    assert verdict["published"] > 1000
    summary = {k: verdict[k] for k in ("published", "stored", "lost", "view_duplicates", "unplanned_exits",
                                       "worker_caught_up", "left_in_spools")}
    assert verdict["lost"] == 0 and verdict["view_duplicates"] == 0, summary
    assert verdict["ok"] and res.returncode == 0, f"{summary}\n{res.stderr[-3000:]}"
