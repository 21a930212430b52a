"""Sensor readings: range checks, per-sensor tumbling windows by event time, alerts with hysteresis.

Windows: each reading falls in the tumbling window ``floor(captured_at / window_s)``. A sensor's
watermark is the latest event time it has sent minus ``allowed_lateness_s``; a window closes
when the watermark passes its end. Out-of-order readings inside the lateness still land in their
own window; readings for an already closed window are *late*: counted and dropped. Windows close
on event time only, so a sensor that falls silent keeps its last window open until it speaks.

Alerts are evaluated on each closed window's mean (noise in single readings does not flap them):
``threshold`` rules raise at ``raise_at`` and clear only at ``clear_at`` (hysteresis), ``rate``
rules compare the mean with the mean ``per_minutes`` earlier. One episode gives one ``raised``
and one ``cleared`` alert. Alert ids are deterministic over sensor, rule, state and window, so a
replay after a crash produces the same ids (the sink removes the copies).

The per-sensor state is plain JSON data (:meth:`SensorState.to_json`) kept in a Faust table by
the worker; this module has no Faust or Kafka in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from citystream.processors.sensors.aqi import band_of, thai_aqi
from citystream.schemas.events import Alert, SensorReading, Severity, derived_event_id
from citystream.settings.worker import AlertRule, MetricRange


@dataclass
class SensorState:
    """What the worker remembers about one sensor between readings."""

    watermark: float = float("-inf")
    last_closed: float = float("-inf")
    open: dict[float, list[float]] = field(default_factory=dict)  # start -> [count, sum, min, max]
    closed: list[tuple[float, float]] = field(default_factory=list)  # (start, mean), oldest first
    active: dict[str, bool] = field(default_factory=dict)  # alert_type -> raised and not cleared

    def to_json(self) -> dict[str, Any]:
        """JSON-able form for a Faust table."""
        return {"watermark": self.watermark if self.watermark != float("-inf") else None,
                "last_closed": self.last_closed if self.last_closed != float("-inf") else None,
                "open": [[s, *agg] for s, agg in self.open.items()],
                "closed": [list(c) for c in self.closed], "active": self.active}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> SensorState:
        """Inverse of :meth:`to_json` (None gives a fresh state)."""
        if not data:
            return cls()
        neg = float("-inf")
        return cls(watermark=neg if data.get("watermark") is None else float(data["watermark"]),
                   last_closed=neg if data.get("last_closed") is None else float(data["last_closed"]),
                   open={float(row[0]): [float(x) for x in row[1:]] for row in data.get("open", [])},
                   closed=[(float(s), float(m)) for s, m in data.get("closed", [])],
                   active={str(k): bool(v) for k, v in data.get("active", {}).items()})


@dataclass(frozen=True)
class ClosedWindow:
    """Aggregate of one closed window."""

    start: float
    count: int
    mean: float
    low: float
    high: float


@dataclass
class Outcome:
    """What one reading caused."""

    late: bool = False
    closed: list[ClosedWindow] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)


def out_of_range(reading: SensorReading, ranges: dict[str, MetricRange]) -> str | None:
    """A reason when the value is physically implausible for its metric, else None."""
    bounds = ranges.get(reading.metric.value)
    if bounds is not None and not bounds.low <= reading.value <= bounds.high:
        return f"{reading.metric.value}={reading.value} outside [{bounds.low}, {bounds.high}]"
    return None


class SensorWindows:
    """Applies readings to a sensor's state: windows, lateness, alert rules."""

    def __init__(self, rules: list[AlertRule], window_s: int = 60, allowed_lateness_s: float = 120.0) -> None:
        self.rules = rules
        self.window_s = window_s
        self.lateness = allowed_lateness_s
        rate_minutes = [r.per_minutes for r in rules if r.kind == "rate"]
        self.history_s = max(rate_minutes, default=0) * 60 + window_s

    def apply(self, state: SensorState, reading: SensorReading) -> Outcome:
        """Add one reading to ``state`` (mutated) and return late flag, closed windows and alerts."""
        ts = reading.captured_at.timestamp()
        start = ts - ts % self.window_s
        if start <= state.last_closed or start + self.window_s <= state.watermark:
            return Outcome(late=True)
        agg = state.open.get(start)
        if agg is None:
            state.open[start] = [1.0, reading.value, reading.value, reading.value]
        else:
            agg[0] += 1
            agg[1] += reading.value
            agg[2] = min(agg[2], reading.value)
            agg[3] = max(agg[3], reading.value)
        state.watermark = max(state.watermark, ts - self.lateness)
        outcome = Outcome()
        for s in sorted(state.open):
            if s + self.window_s > state.watermark:
                break
            count, total, low, high = state.open.pop(s)
            window = ClosedWindow(s, int(count), total / count, low, high)
            state.last_closed = s
            state.closed.append((s, window.mean))
            outcome.closed.append(window)
            outcome.alerts.extend(self._evaluate(state, window, reading))
        state.closed = [(s, m) for s, m in state.closed if s > state.last_closed - self.history_s]
        return outcome

    def _evaluate(self, state: SensorState, window: ClosedWindow, reading: SensorReading) -> list[Alert]:
        alerts: list[Alert] = []
        for rule in self.rules:
            if rule.metric != reading.metric.value:
                continue
            value = window.mean if rule.kind == "threshold" else self._rise(state, window, rule)
            if value is None:
                continue
            active = state.active.get(rule.alert_type, False)
            if not active and value >= rule.raise_at:
                state.active[rule.alert_type] = True
                alerts.append(self._alert(rule, "raised", value, window, reading))
            elif active and value <= rule.clear_at:
                state.active[rule.alert_type] = False
                alerts.append(self._alert(rule, "cleared", value, window, reading))
        return alerts

    def _rise(self, state: SensorState, window: ClosedWindow, rule: AlertRule) -> float | None:
        horizon = window.start - rule.per_minutes * 60
        earlier = [(s, m) for s, m in state.closed if horizon <= s < window.start]
        if not earlier:
            return None
        return window.mean - earlier[0][1]

    def _alert(self, rule: AlertRule, state: str, value: float, window: ClosedWindow,
               reading: SensorReading) -> Alert:
        source = f"{reading.tenant}/{reading.gateway_id}/{reading.device_id}"
        end = datetime.fromtimestamp(window.start + self.window_s, UTC)
        return Alert(
            event_id=derived_event_id(source, f"alert/{rule.alert_type}/{state}", int(window.start)),
            tenant=reading.tenant, gateway_id=reading.gateway_id, device_id=reading.device_id,
            seq=reading.seq, captured_at=end, district=reading.district, alert_type=rule.alert_type,
            severity=Severity(rule.severity), state="raised" if state == "raised" else "cleared",
            message=describe(rule, state, value, window, reading), value=round(value, 3),
            threshold=rule.raise_at if state == "raised" else rule.clear_at, source_event_id=reading.event_id)


def describe(rule: AlertRule, state: str, value: float, window: ClosedWindow, reading: SensorReading) -> str:
    """A short human message (Thai band name where it helps) for a control room."""
    where = reading.district or reading.device_id
    if rule.kind == "rate":
        text = f"{rule.metric} rose {value:.1f} in {rule.per_minutes} min (mean {window.mean:.1f}) at {where}"
    elif rule.metric == "pm25_ug_m3":
        band = band_of(window.mean)
        text = (f"PM2.5 {window.mean:.1f} µg/m³, AQI {thai_aqi(window.mean)} ({band.name_th} / {band.name}) "
                f"at {where}")
    else:
        text = f"{rule.metric} mean {window.mean:.1f} at {where}"
    return f"{state}: {text}"
