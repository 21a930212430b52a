"""The local demo's console login: one operator, ``demo``, with a password generated once per stack home.

Only for ``make demo`` on the local stack (``citystream console --demo-login``, used when
``console.users`` is empty): the password is random, kept in ``<stack.home>/console-demo-login.json``
(mode 0600) and printed at the end of the demo with the console's URL. Production sets
``console.users`` with hashes made by ``citystream console --hash-password``.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from citystream.settings import Settings
from citystream.stack.procs import Managed

LOGIN = "demo"
FILE = "console-demo-login.json"
PID_FILE = "console.pid"


def demo_password(settings: Settings) -> str:
    """The demo password of this stack home, created (0600) on first use."""
    path = settings.stack.home / FILE
    try:
        return str(json.loads(path.read_text(encoding="utf-8"))["password"])
    except (OSError, ValueError, KeyError):
        pass
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as out:
        json.dump({"login": LOGIN, "password": password}, out)
    tmp.replace(path)
    return password


def _running(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text(encoding="utf-8").strip()), 0)
    except (OSError, ValueError):
        return False
    return True


def console_line(settings: Settings) -> str:
    """``console: URL  login: demo / PASSWORD`` while the demo console (``<home>/console.pid``) runs, else ''."""
    path: Path = settings.stack.home / FILE
    if not path.is_file() or not _running(settings.stack.home / PID_FILE):
        return ""
    cfg = settings.console
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::") else cfg.host
    scheme = "https" if cfg.tls else "http"
    return (f"console: {scheme}://{host}:{cfg.port}/  login: {LOGIN} / {demo_password(settings)}  "
            "(stop it, the live pipeline and the stack: citystream stack down)")


def stop_console(settings: Settings) -> bool:
    """Stop the demo console that ``make demo`` started (``<home>/console.pid``); True if one was running."""
    home = settings.stack.home.resolve()
    return Managed("console", home / PID_FILE, home / "logs" / "console.log", "console --demo-login").stop()
