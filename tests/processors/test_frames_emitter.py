"""The frames agent when its emitter task fails: the failure is logged and stops the agent, never a silent stall."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.processors.worker_helpers import unit_context

pytestmark = pytest.mark.unit


class FailingTopic:
    """A DLQ topic whose send fails like a producer error (not a ValueError, so not a per-frame problem)."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, key: bytes, value: bytes) -> None:
        self.calls += 1
        await asyncio.sleep(0.2)  # like a send waiting on the broker: meanwhile the agent fills the queue
        raise RuntimeError("producer send failed")


def test_an_emitter_failure_is_logged_and_ends_the_agent_instead_of_a_silent_stall(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ctx = unit_context(tmp_path, frame_batch=2)
    dlq = FailingTopic()
    ctx.topics["dlq"] = dlq
    agent = ctx.app.agents["frames"]
    caplog.set_level(logging.ERROR)

    async def run() -> bool:
        async with agent.test_context() as running:
            # frames without headers are dead-lettered: the first send fails in the emitter after the agent
            # has filled the queue (2 in flight) and waits to put the next frame
            for i in range(6):
                await running.put(b"not a frame", key=f"cam-{i}".encode(), wait=False)
            ended = False
            for _ in range(250):  # up to 5 s
                await asyncio.sleep(0.02)
                if any("frames emitter failed" in r.getMessage() for r in caplog.records):
                    ended = True
                    break
        await ctx.app.producer.stop()
        return ended

    ended = asyncio.run(run())
    assert dlq.calls == 1
    assert ended, "the emitter's failure was never logged (the agent waits forever on its full queue)"
    failures = [r for r in caplog.records if "frames emitter failed" in r.getMessage()]
    assert failures[0].exc_info is not None and "producer send failed" in str(failures[0].exc_info[1])


def test_stall_diagnostics_show_where_the_frames_emitter_waits() -> None:
    from citystream.processors.frames_agent import EMITTER_TASK
    from citystream.processors.watchdog import task_stacks

    async def waiting_for_a_vision_result(never: asyncio.Event) -> None:
        await never.wait()

    async def run() -> tuple[str, str]:
        task = asyncio.create_task(waiting_for_a_vision_result(asyncio.Event()), name=EMITTER_TASK)
        await asyncio.sleep(0)
        found, other = task_stacks(EMITTER_TASK), task_stacks("no-such-task")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return found, other

    found, other = asyncio.run(run())
    assert "waiting_for_a_vision_result" in found
    assert other == "no task 'no-such-task'"
