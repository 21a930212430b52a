"""A ``citystream sink`` that SIGKILLs itself after its Nth window is inserted, before dead letters and commit.

The fault tests' crash point, kept out of the production settings: ``python -m tests.sinks.crashing_sink
CONFIG N`` runs the real sink (same settings file, same code) with :meth:`Sink.inserted` overridden.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from citystream.logs import setup_logging
from citystream.settings import Settings, load_settings
from citystream.sinks.batch import Window
from citystream.sinks.clickhouse import Sink

log = logging.getLogger(__name__)
CRASH_MESSAGE = "crash point reached: SIGKILL after the insert, before the commit"


class CrashingSink(Sink):
    """The sink, killed by itself right after its ``after``-th window is inserted."""

    def __init__(self, settings: Settings, after: int) -> None:
        super().__init__(settings, CollectorRegistry())
        self.after = after
        self.windows_inserted = 0

    def inserted(self, window: Window) -> None:
        """Count inserted windows; SIGKILL this process at the ``after``-th."""
        self.windows_inserted += 1
        if self.windows_inserted >= self.after:
            log.warning(CRASH_MESSAGE, extra={"rows": window.rows})
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    """Run a crashing sink on the settings file ``argv[1]``, crashing after ``argv[2]`` windows."""
    settings = load_settings(Path(argv[1]))
    setup_logging(settings.log)
    return CrashingSink(settings, int(argv[2])).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
