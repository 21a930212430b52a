"""Alert events for watchlist hits, with a per-camera cooldown so one sighting gives one alert.

Sensor alerts come from :mod:`citystream.processors.sensors.sensors` (hysteresis per episode); this
module builds the ``plate_watchlist`` and ``face_watchlist`` alerts and suppresses repeats: a
watchlisted car standing in front of a camera for a minute is one alert, not one per frame.
The cooldown runs on event time and lives in worker memory, so after a restart or rebalance a
sighting in progress may alert once more. Alert ids derive from the source event, so a replay of
the same frame gives the same id (the sink keeps one copy).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from citystream.processors.watchlists.watchlists import WatchlistEntry
from citystream.schemas.events import Alert, FaceMatch, PlateRead, Severity, derived_event_id


class Cooldown:
    """Remembers the last alert per (camera, entry) and lets a new one through after ``period``."""

    def __init__(self, period: timedelta = timedelta(seconds=60), capacity: int = 10_000) -> None:
        self.period = period
        self.capacity = capacity
        self.last: dict[tuple[str, str, str], datetime] = {}

    def allow(self, tenant: str, device_id: str, entry_id: str, at: datetime) -> bool:
        """True when no alert for this camera and entry was let through within the period before ``at``."""
        key = (tenant, device_id, entry_id)
        previous = self.last.get(key)
        if previous is not None and previous <= at < previous + self.period:
            return False
        if len(self.last) >= self.capacity:
            oldest = min(self.last, key=self.last.__getitem__)
            del self.last[oldest]
        self.last[key] = at
        return True


def _where(district: str, device_id: str) -> str:
    return f"{district} ({device_id})" if district else device_id


def plate_alert(read: PlateRead, entry: WatchlistEntry) -> Alert:
    """A critical alert for a plate on the watchlist; names the entry (label and id), never the plate text.

    The control room resolves the entry in the watchlist (``citystream watchlist list``), which holds
    the registration its owner entered under a legal basis; alerts are kept for years, plates are not.
    """
    label = f"{entry.label} " if entry.label else ""
    return Alert(event_id=derived_event_id(read.event_id, "alert/plate_watchlist", 0), tenant=read.tenant,
                 gateway_id=read.gateway_id, device_id=read.device_id, seq=read.seq, captured_at=read.captured_at,
                 district=read.district, alert_type="plate_watchlist", severity=Severity.CRITICAL,
                 message=(f"ทะเบียนในบัญชีเฝ้าระวัง / watchlisted plate: {label}(entry {entry.entry_id}) "
                          f"at {_where(read.district, read.device_id)}")[:1024],
                 value=read.confidence, source_event_id=read.event_id)


def face_alert(face: FaceMatch, entry: WatchlistEntry, threshold: float) -> Alert:
    """A critical alert for a face that matched a watchlist template."""
    label = entry.label or entry.entry_id
    return Alert(event_id=derived_event_id(face.event_id, "alert/face_watchlist", 0), tenant=face.tenant,
                 gateway_id=face.gateway_id, device_id=face.device_id, seq=face.seq, captured_at=face.captured_at,
                 district=face.district, alert_type="face_watchlist", severity=Severity.CRITICAL,
                 message=(f"ใบหน้าในบัญชีเฝ้าระวัง / watchlisted face: {label} "
                          f"at {_where(face.district, face.device_id)}")[:1024],
                 value=round(face.distance, 4), threshold=threshold, source_event_id=face.event_id)
