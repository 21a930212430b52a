"""The append-only audit log of personal-data processing (PDPA record of processing, issue 16).

Every data-subject action (``citystream privacy search`` / ``erase``, a control-room look-up) is one
:class:`AuditEntry`: who (``actor``), what (``action``), for which tenant and subject, why (``reason``)
and on which legal basis, with free ``details``. :func:`record` appends it to ``audit_log``
(migration 0006); :func:`entries` reads the newest first. There is no update or delete function: the
table is written only by :func:`record`, erasure never touches it, and the read-only query path refuses
writes. A subject is never plate text: plate requests record the keyed pseudonym.

Where the write goes is :func:`citystream.privacy_store.call`'s routing: into the owning sink (token
route ``POST /privacy``) when a sink owns the embedded path, else directly (server DSN, or an embedded
path nobody holds).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from citystream.clickhouse import query_rows
from citystream.privacy_store import AUDIT_COLUMNS, AUDIT_TABLE, call
from citystream.settings import Settings


@dataclass(frozen=True)
class AuditEntry:
    """One audited action on personal data."""

    actor: str
    action: str
    subject: str
    reason: str
    legal_basis: str = ""
    tenant: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def record(settings: Settings, entry: AuditEntry) -> None:
    """Append ``entry`` to the audit log (through the owning sink when one holds the embedded store)."""
    if not entry.actor.strip() or not entry.action.strip():
        raise ValueError("an audit entry needs an actor and an action")
    call(settings, "audit", {"entry": asdict(entry)})


def entries(settings: Settings, limit: int = 1000) -> list[dict[str, Any]]:
    """The newest ``limit`` audit entries, newest first; ``details`` parsed back into a dict."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    db = settings.clickhouse.database
    rows = query_rows(settings, f"SELECT {', '.join(AUDIT_COLUMNS)} FROM `{db}`.{AUDIT_TABLE} "
                                f"ORDER BY at DESC LIMIT {int(limit)}")
    for row in rows:
        try:
            row["details"] = orjson.loads(row["details"] or "{}")
        except orjson.JSONDecodeError:
            row["details"] = {"unparsed": row["details"]}
    return rows
