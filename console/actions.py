"""What operators do from the console: acknowledge and close alerts, add and remove watchlist entries.

Nothing here writes around the pipeline. Closing an alert publishes a ``cleared`` Alert to the
``alerts`` topic (id derived from the alert, so a retry is the same event; the sink stores it like any
other); watchlist edits go through the same functions as ``citystream watchlist`` (the compacted
``watchlists`` topic). Every action is written to the audit log (:mod:`citystream.audit`, the privacy
tools' log) *before* it is carried out; when the audit log cannot be written the action is refused.
An action that then fails is audited again as ``<action>.failed``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from citystream.console import store
from citystream.console.auth import User
from citystream.console.feed import FeedItem
from citystream.processors.watchlists import watchlists
from citystream.produce import produce_acked
from citystream.schemas import topics
from citystream.schemas.events import Alert, Severity, derived_event_id
from citystream.schemas.wire import to_json
from citystream.settings import Settings

log = logging.getLogger(__name__)


class ActionError(Exception):
    """An action was refused or failed; the message says why (shown to the operator)."""


@dataclass(frozen=True)
class Audit:
    """One audit record as the console writes it."""

    action: str
    subject: str
    reason: str
    legal_basis: str
    tenant: str
    details: dict[str, Any]


def audit(settings: Settings, user: User, entry: Audit) -> None:
    """Write one record to the audit log; ActionError when it cannot be written."""
    try:
        from citystream.audit import AuditEntry, record
    except ImportError as exc:
        raise ActionError("the audit log is not available in this installation; action refused") from exc
    try:
        store.check_reachable(settings)
        record(settings, AuditEntry(actor=f"console:{user.login}", action=entry.action, subject=entry.subject,
                                    reason=entry.reason, legal_basis=entry.legal_basis, tenant=entry.tenant,
                                    details={"role": user.role, "name": user.name, **entry.details}))
    except Exception as exc:
        log.error("console: audit record failed", extra={"action": entry.action, "error": str(exc)[:300]})
        raise ActionError(f"the audit log could not be written ({exc}); action refused") from exc


def _audited(settings: Settings, user: User, entry: Audit, run: Any) -> Any:
    audit(settings, user, entry)
    try:
        return run()
    except (RuntimeError, OSError, ValueError) as exc:
        audit(settings, user, Audit(f"{entry.action}.failed", entry.subject, str(exc)[:500], entry.legal_basis,
                                    entry.tenant, entry.details))
        raise ActionError(str(exc)) from exc


def closing_alert(item: FeedItem, user: User, at: datetime) -> Alert:
    """The ``cleared`` Alert that closes a raised alert from the console (deterministic id)."""
    data = item.data
    return Alert(event_id=derived_event_id(item.id, "alert/closed", 0), tenant=item.tenant,
                 gateway_id=data["gateway_id"], device_id=item.device_id,
                 seq=data["seq"], captured_at=at, district=item.district, alert_type=data["alert_type"],
                 severity=Severity(data["severity"]), state="cleared",
                 message=f"ปิดโดยผู้ปฏิบัติงาน / closed by operator: {user.name}"[:1024],
                 value=data.get("value"), threshold=data.get("threshold"), source_event_id=item.id)


def acknowledge(settings: Settings, user: User, item: FeedItem, reason: str) -> None:
    """Audit an acknowledgement (the console shows who acknowledged; nothing else changes)."""
    audit(settings, user, Audit("alert.acknowledge", item.id, reason or "acknowledged", "", item.tenant,
                                {"alert_type": item.data.get("alert_type", "")}))


def close(settings: Settings, user: User, item: FeedItem, reason: str, now: datetime | None = None) -> Alert:
    """Audit, then publish the alert's ``cleared`` copy to the alerts topic; returns it."""
    cleared = closing_alert(item, user, now or datetime.now(UTC))
    _audited(settings, user, Audit("alert.close", item.id, reason or "closed", "", item.tenant,
                                   {"alert_type": item.data.get("alert_type", ""), "cleared_id": cleared.event_id}),
             lambda: produce_acked(settings, topics.ALERTS, item.device_id, to_json(cleared)))
    return cleared


def add_entry(settings: Settings, user: User, fields: dict[str, Any]) -> watchlists.WatchlistEntry:
    """Validate and publish a watchlist entry (as ``citystream watchlist add-*``), audited."""
    if not user.sees_tenant(str(fields.get("tenant", ""))):
        raise ActionError("this tenant is not yours")
    try:
        entry = watchlists.WatchlistEntry.model_validate({**fields, "created_by": f"console:{user.login}"})
    except ValueError as exc:
        from citystream.schemas.events import error_summary

        raise ActionError(f"invalid entry: {error_summary(exc)}") from exc
    _audited(settings, user, Audit(f"watchlist.add_{entry.kind}", entry.entry_id, entry.reason, entry.legal_basis,
                                   entry.tenant, {"expires_at": entry.expires_at.isoformat(), "label": entry.label}),
             lambda: watchlists.publish(settings, entry))
    return entry


def remove_entry(settings: Settings, user: User, entry: watchlists.WatchlistEntry, reason: str) -> None:
    """Tombstone a watchlist entry (as ``citystream watchlist remove``), audited."""
    if not reason.strip():
        raise ActionError("a reason is required to remove an entry")
    if not user.sees_tenant(entry.tenant):
        raise ActionError("this tenant is not yours")
    _audited(settings, user, Audit(f"watchlist.remove_{entry.kind}", entry.entry_id, reason, entry.legal_basis,
                                   entry.tenant, {}), lambda: watchlists.remove(settings, entry.entry_id))
