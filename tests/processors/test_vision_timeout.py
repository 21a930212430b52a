"""A vision process that never answers costs one frame (vision_timeout), not a stalled worker."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from citystream.processors import frames_agent
from citystream.processors.frames_agent import FrameResult, VisionPool

pytestmark = pytest.mark.unit


def test_a_hung_analysis_is_rejected_and_the_pool_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls: list[bytes] = []

    def analyse(jpeg: bytes, *args: Any) -> FrameResult:
        calls.append(jpeg)
        if jpeg == b"hang":
            release.wait(10)  # a vision process stuck on this frame
        return FrameResult(faces=1)

    monkeypatch.setattr(frames_agent, "analyse_frame", analyse)
    pools: list[Executor] = []

    def factory(n: int) -> Executor:
        pools.append(ThreadPoolExecutor(n))
        return pools[-1]

    pool = VisionPool(1, factory, timeout_s=0.3)
    templates = np.zeros((0, 128), np.float32)

    async def scenario() -> tuple[FrameResult, FrameResult]:
        hung = await pool.run(b"hang", 10, templates, 0.6, 0)
        fine = await pool.run(b"ok", 10, templates, 0.6, 0)
        return hung, fine

    try:
        hung, fine = asyncio.run(scenario())
    finally:
        release.set()
        pool.shutdown()
    assert hung.rejected is not None and hung.rejected[0] == "vision_timeout"
    assert fine.rejected is None and fine.faces == 1, "the next frame runs on a fresh pool"
    assert len(pools) == 2 and pool.executor is pools[1]
