"""Structured logging: key=value lines (or JSON) on stderr, one logger per module."""

from __future__ import annotations

import logging
import sys
import time

import orjson

from citystream.settings import LogSettings

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg="..." key=value`` lines."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record."""
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"ts={ts}.{int(record.msecs):03d}Z", f"level={record.levelname.lower()}",
                 f"logger={record.name}", f"msg={orjson.dumps(record.getMessage()).decode()}"]
        for key, value in vars(record).items():
            if key not in _RESERVED:
                parts.append(f"{key}={value}")
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)
    for noisy in ("aiokafka", "faust", "mode", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
