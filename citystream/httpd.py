"""The small HTTP handler base the processes' own endpoints share (metrics/health, the sink's query path)."""

from __future__ import annotations

import logging
from http.server import BaseHTTPRequestHandler
from typing import Any

log = logging.getLogger(__name__)


class Handler(BaseHTTPRequestHandler):
    """Request lines go to the debug log, not stderr; ``reply`` sends one complete response."""

    def log_message(self, format: str, *args: Any) -> None:
        """Log the request line at debug level."""
        log.debug("http " + format, *args)

    def reply(self, code: int, body: bytes, ctype: str) -> None:
        """Send status, content type and length, then the body."""
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
