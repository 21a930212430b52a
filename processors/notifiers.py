"""Notifiers: alerts out to people, chosen by ``type`` — a generic webhook or a LINE Messaging API push.

Every notifier has its own bounded queue and one sender task, so a slow or dead endpoint never
blocks the agent that submits alerts nor the other notifiers. Each send is rate limited by a
token bucket, times out after ``timeout_s`` and is retried ``retries`` times with exponential
backoff on connection errors, timeouts, HTTP 429 and 5xx; other 4xx are not retried.
Outcomes are counted in ``citystream_worker_notifications_total{notifier,outcome}``.

Delivery: best effort, at most once per alert per worker — the queue lives in memory, so alerts
queued when the worker dies are not sent (they stay in the ``alerts`` topic and the store).
The webhook carries ``X-Citystream-Event-Id`` and LINE's ``X-Line-Retry-Key`` (the alert id), so
a receiver can drop retried copies.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from citystream.retry import Backoff, GaveUp, retry_async
from citystream.schemas.events import Alert
from citystream.settings.worker import NotifierSettings

log = logging.getLogger(__name__)
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class PermanentError(Exception):
    """The endpoint refused the alert for good (bad request, auth)."""


class Notifier(Protocol):
    """Formats one alert as an HTTP request for its endpoint."""

    def request(self, alert: Alert) -> tuple[dict[str, str], bytes]:
        """Headers and body for this alert."""
        ...


class WebhookNotifier:
    """POSTs the Alert's JSON as it is."""

    def __init__(self, config: NotifierSettings) -> None:
        self.config = config

    def request(self, alert: Alert) -> tuple[dict[str, str], bytes]:
        """Alert JSON with its id in a header."""
        headers = {"Content-Type": "application/json", "X-Citystream-Event-Id": alert.event_id}
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token.get_secret_value()}"
        return headers, alert.model_dump_json().encode()


def line_text(alert: Alert) -> str:
    """A short text message for a phone, Thai-first labels."""
    icon = {"critical": "🚨", "warning": "⚠️", "info": "ℹ️"}[alert.severity.value]
    state = "แจ้งเตือน" if alert.state == "raised" else "สิ้นสุดแล้ว"
    when = alert.captured_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    where = alert.district or alert.device_id
    return f"{icon} {state} / {alert.state}: {alert.alert_type}\n{alert.message}\n{where} · {when}"[:5000]


class LineNotifier:
    """LINE Messaging API push: ``{"to": ..., "messages": [{"type": "text", "text": ...}]}``."""

    def __init__(self, config: NotifierSettings) -> None:
        self.config = config

    def request(self, alert: Alert) -> tuple[dict[str, str], bytes]:
        """Push-message JSON, bearer token and a retry key so LINE drops retried copies."""
        import orjson

        headers = {"Content-Type": "application/json", "X-Line-Retry-Key": str(uuid.UUID(alert.event_id))}
        if self.config.token is not None:
            headers["Authorization"] = f"Bearer {self.config.token.get_secret_value()}"
        body = {"to": self.config.to, "messages": [{"type": "text", "text": line_text(alert)}]}
        return headers, orjson.dumps(body)


NOTIFIER_TYPES: dict[str, Callable[[NotifierSettings], Notifier]] = {
    "webhook": WebhookNotifier,
    "line": LineNotifier,
}


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.stamp = clock()

    def delay(self) -> float:
        """Take a token; return how long to wait before using it (0 when one was available)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


class Channel:
    """One configured notifier: queue, rate limit, retries and its sender task."""

    def __init__(self, name: str, config: NotifierSettings, counter: Counter) -> None:
        self.name, self.config, self.counter = name, config, counter
        self.notifier = NOTIFIER_TYPES[config.type](config)
        self.queue: asyncio.Queue[Alert] = asyncio.Queue(config.queue_size)
        self.bucket = TokenBucket(config.rate_per_s, config.burst)

    def offer(self, alert: Alert) -> None:
        """Queue an alert without waiting; a full queue drops it (counted and logged)."""
        if SEVERITY_RANK[alert.severity.value] < SEVERITY_RANK[self.config.min_severity]:
            return
        try:
            self.queue.put_nowait(alert)
        except asyncio.QueueFull:
            self.counter.labels(self.name, "dropped").inc()
            log.warning("notifier queue full, alert dropped", extra={"notifier": self.name, "event_id": alert.event_id})

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Send queued alerts one by one until cancelled."""
        while True:
            alert = await self.queue.get()
            try:
                await asyncio.sleep(self.bucket.delay())
                await self.deliver(session, alert)
            finally:
                self.queue.task_done()

    async def deliver(self, session: aiohttp.ClientSession, alert: Alert) -> bool:
        """Send with retries; True when the endpoint accepted it."""
        headers, body = self.notifier.request(alert)
        cfg = self.config
        try:
            await retry_async(lambda: self._post(session, headers, body), what=f"notifier {self.name}",
                              retryable=(aiohttp.ClientError, TimeoutError, OSError),
                              backoff=Backoff(cfg.backoff_s, cfg.backoff_s * 2 ** cfg.retries),
                              attempts=cfg.retries + 1,
                              on_retry=lambda _: self.counter.labels(self.name, "retried").inc())
        except (PermanentError, GaveUp) as exc:
            return self._failed(alert, str(exc))
        self.counter.labels(self.name, "sent").inc()
        return True

    async def _post(self, session: aiohttp.ClientSession, headers: dict[str, str], body: bytes) -> None:
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        async with session.post(self.config.url, data=body, headers=headers, timeout=timeout) as resp:
            await resp.read()
            if resp.status < 300:
                return
            if resp.status in RETRYABLE_STATUS:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            raise PermanentError(f"HTTP {resp.status}")

    def _failed(self, alert: Alert, why: str) -> bool:
        self.counter.labels(self.name, "failed").inc()
        log.warning("notification failed", extra={"notifier": self.name, "event_id": alert.event_id, "error": why})
        return False


class Dispatcher:
    """Fans alerts out to every configured notifier; :meth:`submit` never waits."""

    def __init__(self, configs: list[NotifierSettings], registry: CollectorRegistry) -> None:
        self.counter = Counter("citystream_worker_notifications_total", "Alert notifications by outcome",
                               ["notifier", "outcome"], registry=registry)
        self.channels = [Channel(f"{i}-{c.type}", c, self.counter) for i, c in enumerate(configs)]
        for channel in self.channels:
            for outcome in ("sent", "retried", "failed", "dropped"):
                self.counter.labels(channel.name, outcome)
        self._tasks: list[asyncio.Task[Any]] = []
        self._session: aiohttp.ClientSession | None = None

    def submit(self, alert: Alert) -> None:
        """Queue the alert on every notifier that wants its severity."""
        for channel in self.channels:
            channel.offer(alert)

    async def start(self) -> None:
        """Start one sender task per notifier."""
        if not self.channels or self._tasks:
            return
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(c.run(self._session), name=f"notifier-{c.name}") for c in self.channels]

    async def stop(self, drain_s: float = 5.0) -> None:
        """Give queued alerts up to ``drain_s`` to go out, then stop the senders."""
        if not self._tasks:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*(c.queue.join() for c in self.channels)), drain_s)
        except TimeoutError:
            log.warning("notifier queues not drained before stop",
                        extra={"pending": sum(c.queue.qsize() for c in self.channels)})
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
