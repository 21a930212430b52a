"""One way to retry: jittered exponential backoff, the same limits and the same log line everywhere.

Every stage that waits before trying again uses :class:`Backoff` for the delay (first delay, doubling up
to a cap, each delay shortened by a random fraction up to ``jitter`` so that many clients that failed
together do not retry together; :meth:`Backoff.reset` after a success). Loops that call one function
until it succeeds use :func:`retry` (threads) or :func:`retry_async` (asyncio): they retry only the
exception classes named *retryable*, log each failure as ``"<what> failed, retrying"`` with the attempt
and the delay, and give up after ``attempts`` tries (``None``: never) or when the stop check says so.

Loops that cannot block (a paho network loop, the bridge's poll loop) keep their own structure and ask a
:class:`Backoff` for the delay, so the numbers are still the same everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class GaveUp(Exception):
    """A retried call failed on every attempt, or a stop was requested while waiting to retry."""


class Backoff:
    """Delays for successive attempts: ``first_s``, doubling up to ``max_s``, jittered down by up to ``jitter``."""

    def __init__(self, first_s: float, max_s: float, *, jitter: float = 0.2,
                 rand: Callable[[], float] = random.random) -> None:
        if first_s < 0 or not 0 <= jitter < 1:
            raise ValueError(f"backoff needs first_s >= 0 and 0 <= jitter < 1, got {first_s}, {jitter}")
        self.first_s = first_s
        self.max_s = max(max_s, first_s)
        self.jitter = jitter
        self.attempts = 0
        self._rand = rand
        self._current = first_s

    def next(self) -> float:
        """The delay before the next attempt (the undelayed base grows each call)."""
        base = self._current
        self._current = min(max(self._current * 2, self.first_s), self.max_s)
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rand())

    def peek(self) -> float:
        """The undelayed base of the next delay, for log lines."""
        return self._current

    def reset(self) -> None:
        """Start again from ``first_s`` (after a success)."""
        self._current = self.first_s
        self.attempts = 0


def _after_failure(what: str, tries: int, attempts: int | None, backoff: Backoff, exc: BaseException) -> float:
    """The delay before the next try, logged; GaveUp once ``attempts`` tries have failed."""
    if attempts is not None and tries >= attempts:
        raise GaveUp(f"{what} failed {tries} times: {type(exc).__name__}: {exc}") from exc
    delay = backoff.next()
    log.warning("%s failed, retrying", what, extra={"what": what, "attempt": tries, "retry_in_s": round(delay, 3),
                                                    "error": f"{type(exc).__name__}: {exc}"})
    return delay


def retry(fn: Callable[[], T], *, what: str, retryable: tuple[type[BaseException], ...], backoff: Backoff,
          attempts: int | None = None, wait: Callable[[float], bool] | None = None) -> T:
    """Call ``fn`` until it returns; retry ``retryable`` errors after a backoff delay.

    ``wait(delay)`` sleeps and returns True when a stop was requested (e.g. ``threading.Event.wait``);
    then, or after ``attempts`` failed tries, :class:`GaveUp` is raised from the last error.
    Other exceptions propagate at once.
    """
    sleep = wait or _sleep
    tries = 0
    while True:
        try:
            return fn()
        except retryable as exc:
            tries += 1
            if sleep(_after_failure(what, tries, attempts, backoff, exc)):
                raise GaveUp(f"stop requested while retrying {what}") from exc


async def retry_async(fn: Callable[[], Awaitable[T]], *, what: str, retryable: tuple[type[BaseException], ...],
                      backoff: Backoff, attempts: int | None = None,
                      on_retry: Callable[[int], None] | None = None) -> T:
    """:func:`retry` for coroutines: awaits ``fn()`` and sleeps with ``asyncio.sleep`` between tries."""
    tries = 0
    while True:
        try:
            return await fn()
        except retryable as exc:
            tries += 1
            delay = _after_failure(what, tries, attempts, backoff, exc)
            if on_retry is not None:
                on_retry(tries)
            await asyncio.sleep(delay)


def _sleep(delay: float) -> bool:
    time.sleep(delay)
    return False
