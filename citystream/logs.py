"""Structured logging: key=value lines (or JSON) on stderr, one logger per module.

Values in key=value lines are quoted (JSON string escapes) whenever they contain a space, ``=``, a
quote or a control character, so an untrusted value (a dead letter's detail) cannot forge fields or
lines. Third-party clients log through the same handler: librdkafka through the ``librdkafka``
logger (``KafkaSettings.client_config`` passes it to every client), aiokafka/faust/mode through their
own; their repeated lines are rate-limited (``RateLimit``), because a broker outage makes them repeat
the same error thousands of times per second.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable

import orjson

from citystream.settings import LogSettings

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_PLAIN = re.compile(r"[^\s=\"'\\\x00-\x1f\x7f]+")
RATE_LIMITED = ("librdkafka", "aiokafka", "faust", "mode", "kafka")


def kv_value(value: object) -> str:
    """A value as it appears after ``key=``: bare when harmless, else a JSON string."""
    text = value if isinstance(value, str) else str(value)
    return text if _PLAIN.fullmatch(text) else orjson.dumps(text).decode()


class RateLimit(logging.Filter):
    """Let at most ``burst`` records per (logger, message template) through every ``period_s``.

    The first record after a quiet period carries ``suppressed=N``: how many were dropped before it.
    """

    def __init__(self, prefixes: tuple[str, ...] = RATE_LIMITED, burst: int = 5, period_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.burst = burst
        self.period_s = period_s
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int, int]] = {}  # key -> (window start, passed, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        """True to emit ``record``."""
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg)[:200])
        now = self.clock()
        with self._lock:
            start, passed, dropped = self._seen.get(key, (now, 0, 0))
            if now - start >= self.period_s:
                if dropped:
                    record.suppressed = dropped
                start, passed, dropped = now, 0, 0
            if passed >= self.burst:
                self._seen[key] = (start, passed, dropped + 1)
                return False
            if len(self._seen) > 10_000:  # bounded: forget old keys
                self._seen.clear()
            self._seen[key] = (start, passed + 1, dropped)
        return True


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..." key=value`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={orjson.dumps(record.getMessage()).decode()}"]
        for key, value in vars(record).items():
            if key not in _RESERVED:
                parts.append(f"{key}={kv_value(value)}")
        if record.exc_info:
            parts.append(f"exc={orjson.dumps(self.formatException(record.exc_info)).decode()}")
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        doc = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage()}
        doc.update({k: v for k, v in vars(record).items() if k not in _RESERVED})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


def setup_logging(settings: LogSettings) -> None:
    """Configure the root logger once for this process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.json_format else KeyValueFormatter())
    handler.addFilter(RateLimit())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("aiokafka", "faust", "mode", "urllib3", "librdkafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
