from datetime import UTC, datetime, timedelta

import pytest

from citystream.processors.sensors.sensors import SensorState, SensorWindows, out_of_range
from citystream.schemas.events import Metric, SensorReading, make_event_id
from citystream.settings.worker import DEFAULT_RANGES, DEFAULT_RULES, AlertRule

pytestmark = pytest.mark.unit
T0 = datetime(2026, 1, 15, 6, 0, tzinfo=UTC)


def reading(seq: int, at: datetime, value: float, metric: Metric = Metric.PM25, device: str = "pm-1") -> SensorReading:
    return SensorReading(event_id=make_event_id("gw-1", "reading", seq), tenant="nakhon-rangsit", gateway_id="gw-1",
                         device_id=device, seq=seq, captured_at=at, metric=metric, value=value, district="รังสิต")


def test_windows_by_event_time_with_out_of_order_readings() -> None:
    engine = SensorWindows([], window_s=60, allowed_lateness_s=30)
    state = SensorState()
    at = [T0 + timedelta(seconds=s) for s in (5, 50, 70, 20, 95, 130)]  # 20 s arrives after 70 s (in lateness)
    values = [10.0, 20.0, 100.0, 30.0, 50.0, 7.0]
    closed = []
    for i, (t, v) in enumerate(zip(at, values, strict=True)):
        outcome = engine.apply(state, reading(i, t, v))
        state = SensorState.from_json(state.to_json())
        closed.extend(outcome.closed)
    assert [(w.start - T0.timestamp(), w.count, w.mean) for w in closed] == [(0.0, 3, 20.0)]
    late = engine.apply(state, reading(99, T0 + timedelta(seconds=40), 999.0))  # window 0 already closed
    assert late.late and not late.closed
    final = engine.apply(state, reading(100, T0 + timedelta(seconds=215), 1.0))  # watermark 185 s
    assert [(w.start - T0.timestamp(), w.count, w.mean, w.low, w.high) for w in final.closed] == [
        (60.0, 2, 75.0, 50.0, 100.0), (120.0, 1, 7.0, 7.0, 7.0)]


def test_pm25_episode_raises_exactly_one_alert_and_one_clear() -> None:
    engine = SensorWindows(DEFAULT_RULES, window_s=60, allowed_lateness_s=0)
    state = SensorState()
    # 2 h of one reading every 15 s: clean air, a noisy episode hovering around the threshold, clean again.
    episode = [36.0, 39.0, 38.5, 41.0, 37.0, 44.0, 36.5, 52.0, 40.0, 38.0] * 4
    profile = [12.0] * 20 + episode + [30.0, 20.0] * 5 + [9.0] * 20
    alerts = []
    seq = 0
    for minute, value in enumerate(profile):
        for k in range(4):
            noisy = value + (-2.0, 1.5, 2.5, -2.0)[k]
            alerts.extend(engine.apply(state, reading(seq, T0 + timedelta(seconds=60 * minute + 15 * k), noisy)).alerts)
            seq += 1
    assert [(a.alert_type, a.state) for a in alerts] == [("pm25_high", "raised"), ("pm25_high", "cleared")]
    raised, cleared = alerts
    assert raised.value is not None and raised.value >= 37.6 and raised.threshold == 37.6
    assert "AQI" in raised.message and raised.device_id == "pm-1"
    assert cleared.captured_at > raised.captured_at


def test_alert_ids_are_deterministic_on_replay() -> None:
    def episode() -> list[str]:
        engine, state = SensorWindows(DEFAULT_RULES, 60, 0), SensorState()
        ids = []
        for i, v in enumerate([10.0, 90.0, 90.0, 10.0, 10.0]):
            ids += [a.event_id for a in engine.apply(state, reading(i, T0 + timedelta(minutes=i), v)).alerts]
        return ids
    first = episode()
    assert len(first) == 4 and first == episode()


def test_canal_rise_alert_once_per_episode() -> None:
    rule = AlertRule(metric="water_level_cm", kind="rate", alert_type="water_rise", raise_at=20, clear_at=5,
                     per_minutes=10, severity="critical")
    engine = SensorWindows([rule], window_s=60, allowed_lateness_s=0)
    state = SensorState()
    # flat 150 cm for 15 min, rising 4 cm/min for 15 min (40 cm / 10 min), then flat again for 20 min
    levels = [150.0] * 15 + [150.0 + 4 * i for i in range(1, 16)] + [210.0] * 20
    alerts = []
    for minute, level in enumerate(levels):
        r = reading(minute, T0 + timedelta(minutes=minute, seconds=30), level, Metric.WATER_LEVEL, "canal-1")
        alerts.extend(engine.apply(state, r).alerts)
    assert [(a.alert_type, a.state, a.severity.value) for a in alerts] == [
        ("water_rise", "raised", "critical"), ("water_rise", "cleared", "critical")]
    assert alerts[0].value is not None and alerts[0].value >= 20


def test_rules_only_see_their_metric() -> None:
    engine = SensorWindows(DEFAULT_RULES, 60, 0)
    state = SensorState()
    alerts = []
    for i in range(5):
        alerts += engine.apply(state, reading(i, T0 + timedelta(minutes=i), 95.0, Metric.HUMIDITY)).alerts
    assert alerts == []


def test_range_check() -> None:
    assert out_of_range(reading(0, T0, 35.0), DEFAULT_RANGES) is None
    assert out_of_range(reading(0, T0, 5000.0), DEFAULT_RANGES) is not None
    assert out_of_range(reading(0, T0, 101.0, Metric.HUMIDITY), DEFAULT_RANGES) is not None
