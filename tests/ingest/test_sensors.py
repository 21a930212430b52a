"""Sensor plugins: plausible simulated series, anomaly episodes, CSV / JSON-lines replay."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from citystream.ingest.gateway.sensors import (
    BadReading,
    ReplaySensorSource,
    SimulatedSensorSource,
    open_sensor,
)
from citystream.schemas.events import Metric
from citystream.settings.gateway import AnomalySpec, ReplaySensor, SensorSpec, SimulatedSensor

pytestmark = pytest.mark.unit

START = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # 07:00 in Bangkok
# (low, high) a Pathum Thani sensor plausibly reports on an ordinary day
PLAUSIBLE = {
    Metric.PM25: (1, 80),
    Metric.PM10: (2, 120),
    Metric.TEMPERATURE: (22, 40),
    Metric.HUMIDITY: (35, 100),
    Metric.WATER_LEVEL: (120, 240),
    Metric.NOISE: (40, 90),
    Metric.RAIN: (0, 10),
}


def day_of(source: SimulatedSensorSource, step_min: int = 10) -> list[float]:
    values = []
    for i in range(0, 24 * 60, step_min):
        sample = source.read(START + timedelta(minutes=i))
        assert sample is not None
        values.append(sample[2])
    return values


@pytest.mark.parametrize("metric", list(Metric))
def test_simulated_day_is_plausible_and_varies(metric: Metric) -> None:
    source = SimulatedSensorSource(SimulatedSensor(device_id="s1", metric=metric, seed=1), START)
    values = day_of(source)
    low, high = PLAUSIBLE[metric]
    assert low <= min(values) and max(values) <= high
    assert statistics.pstdev(values) > 0.1  # a daily pattern and noise, not a constant


def test_sample_carries_time_and_metric() -> None:
    source = SimulatedSensorSource(SimulatedSensor(device_id="s1", metric=Metric.NOISE), START)
    when = START + timedelta(hours=3)
    sample = source.read(when)
    assert sample is not None
    assert sample[:2] == (when, Metric.NOISE)


def test_temperature_peaks_in_the_afternoon_local_time() -> None:
    source = SimulatedSensorSource(SimulatedSensor(device_id="t1", metric=Metric.TEMPERATURE), START)
    at = {hour: source.value_at(START + timedelta(hours=hour - 7)) for hour in (4, 15)}  # local hours
    assert at[15] - at[4] > 5


def test_same_seed_gives_the_same_series() -> None:
    spec = SimulatedSensor(device_id="s1", metric=Metric.PM25, seed=42)
    assert day_of(SimulatedSensorSource(spec, START)) == day_of(SimulatedSensorSource(spec, START))
    other = SimulatedSensor(device_id="s1", metric=Metric.PM25, seed=43)
    assert day_of(SimulatedSensorSource(spec, START)) != day_of(SimulatedSensorSource(other, START))


def test_pm25_episode_rises_inside_its_window_only() -> None:
    spec = SimulatedSensor(device_id="pm", metric=Metric.PM25,
                           anomalies=[AnomalySpec(start_s=3600, duration_s=7200, magnitude=120)])
    plain = SimulatedSensorSource(spec.model_copy(update={"anomalies": []}), START)
    haze = SimulatedSensorSource(spec, START)
    for minutes, extra in ((30, 0.0), (60 + 60, 120.0), (60 + 120 + 30, 0.0)):
        when = START + timedelta(minutes=minutes)
        assert haze.value_at(when) - plain.value_at(when) == pytest.approx(extra, abs=0.01)
    peak = max(haze.read(START + timedelta(minutes=m))[2] for m in range(60, 180, 5))  # type: ignore[index]
    assert peak > 120  # well above the "unhealthy" 75 µg/m³ line


def test_canal_level_rise_is_bounded_by_the_sensor_range() -> None:
    spec = SimulatedSensor(device_id="wl", metric=Metric.WATER_LEVEL,
                           anomalies=[AnomalySpec(start_s=0, duration_s=600, magnitude=10_000)])
    source = SimulatedSensorSource(spec, START)
    assert source.value_at(START + timedelta(seconds=300)) == 600.0


def test_sensor_without_type_is_simulated() -> None:
    spec = TypeAdapter(SensorSpec).validate_python({"device_id": "pm1", "metric": "pm25_ug_m3"})
    assert isinstance(spec, SimulatedSensor)
    assert isinstance(open_sensor(spec, START), SimulatedSensorSource)
    with pytest.raises(ValidationError, match="metric"):
        TypeAdapter(SensorSpec).validate_python({"device_id": "pm1", "metric": "radiation"})


def test_csv_replay_reads_rows_in_order_and_skips_bad_ones(tmp_path: Path) -> None:
    path = tmp_path / "canal.csv"
    path.write_text("metric,value,captured_at\n"
                    "water_level_cm,181.5,2026-11-25T01:00:00+07:00\n"
                    "water_level_cm,not-a-number,\n"
                    "water_level_cm,nan,\n"
                    "co2_ppm,400,\n"
                    ",183.0,\n"
                    "water_level_cm,184.25,2026-11-25T01:02:00\n", encoding="utf-8")
    spec = TypeAdapter(SensorSpec).validate_python(
        {"type": "replay", "device_id": "wl1", "path": str(path), "metric": "water_level_cm"})
    source = open_sensor(spec, START)
    assert isinstance(source, ReplaySensorSource)
    now = START + timedelta(hours=1)
    assert source.read(now) == (datetime(2026, 11, 24, 18, 0, tzinfo=UTC), Metric.WATER_LEVEL, 181.5)
    for _ in range(3):
        with pytest.raises(BadReading):
            source.read(now)
    assert source.read(now) == (now, Metric.WATER_LEVEL, 183.0)  # metric from the spec, time from the caller
    assert source.read(now) == (datetime(2026, 11, 25, 1, 2, tzinfo=UTC), Metric.WATER_LEVEL, 184.25)
    assert source.read(now) is None


def test_jsonl_replay_loops_and_reports_garbage_lines(tmp_path: Path) -> None:
    path = tmp_path / "pm.jsonl"
    path.write_text('{"metric": "pm25_ug_m3", "value": 12}\n'
                    "this is not json\n"
                    "[1, 2]\n"
                    "\n"
                    '{"metric": "pm10_ug_m3", "value": 30.5}\n', encoding="utf-8")
    source = ReplaySensorSource(ReplaySensor(type="replay", device_id="pm1", path=path, loop=True))
    got = []
    for _ in range(8):
        try:
            sample = source.read(START)
        except BadReading as exc:
            got.append(f"bad: {'pm.jsonl' in str(exc)}")
            continue
        assert sample is not None
        got.append(f"{sample[1].value}={sample[2]}")
    assert got == ["pm25_ug_m3=12.0", "bad: True", "bad: True", "pm10_ug_m3=30.5",
                   "pm25_ug_m3=12.0", "bad: True", "bad: True", "pm10_ug_m3=30.5"]


def test_missing_replay_file_fails_at_open(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="replay file not found"):
        ReplaySensorSource(ReplaySensor(type="replay", device_id="pm1", path=tmp_path / "nope.csv"))
