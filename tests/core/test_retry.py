"""The one retry helper: the delays every stage uses, what is retried, when it gives up or stops."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from citystream.retry import Backoff, GaveUp, retry, retry_async

pytestmark = pytest.mark.unit


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 3.0, rand=lambda: 0.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.next() == 0.5 and backoff.attempts == 1


def test_jitter_only_shortens_a_delay_by_up_to_its_fraction() -> None:
    backoff = Backoff(1.0, 8.0, jitter=0.25, rand=lambda: 1.0)
    assert [backoff.next() for _ in range(4)] == [0.75, 1.5, 3.0, 6.0]
    delays = [Backoff(2.0, 2.0).next() for _ in range(200)]
    assert all(1.6 <= d <= 2.0 for d in delays) and len(set(delays)) > 1


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(-1.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(1.0, 1.0, jitter=1.0)


def test_retry_retries_only_the_named_errors_and_logs_each(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")
        return "ok"

    with caplog.at_level(logging.WARNING, logger="citystream.retry"):
        assert retry(flaky, what="connect", retryable=(ConnectionError,), backoff=Backoff(0.0, 0.0)) == "ok"
    assert len(calls) == 3
    assert [r.getMessage() for r in caplog.records] == ["connect failed, retrying"] * 2
    assert [r.__dict__["attempt"] for r in caplog.records] == [1, 2]

    def buggy() -> None:
        calls.append(1)
        raise TypeError("a bug is not an outage")

    calls.clear()
    with pytest.raises(TypeError):
        retry(buggy, what="insert", retryable=(ConnectionError,), backoff=Backoff(0.0, 0.0))
    assert len(calls) == 1


def test_retry_gives_up_after_its_attempts_and_on_stop() -> None:
    def down() -> None:
        raise TimeoutError("no answer")

    with pytest.raises(GaveUp, match="connect failed 3 times: TimeoutError: no answer"):
        retry(down, what="connect", retryable=(TimeoutError,), backoff=Backoff(0.0, 0.0), attempts=3)
    stop = threading.Event()
    stop.set()
    with pytest.raises(GaveUp, match="stop requested while retrying connect"):
        retry(down, what="connect", retryable=(TimeoutError,), backoff=Backoff(0.0, 0.0), wait=stop.wait)


def test_retry_async_counts_retries_and_gives_up() -> None:
    retried: list[int] = []

    async def down() -> None:
        raise OSError("unreachable")

    with pytest.raises(GaveUp, match="notify failed 4 times"):
        asyncio.run(retry_async(down, what="notify", retryable=(OSError,), backoff=Backoff(0.0, 0.0), attempts=4,
                                on_retry=retried.append))
    assert retried == [1, 2, 3]
