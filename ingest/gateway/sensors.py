"""Sensor plugins (chosen by ``type``): simulated series with daily patterns and anomalies, file replay.

A plugin implements :class:`SensorSource`: ``read(now)`` returns ``(captured_at, metric, value)`` or
``None`` when a finite source is exhausted, and raises :class:`BadReading` for one unusable record
(skipped and counted). A serial or Modbus reader is one more small class with the same method.

Simulated patterns (Pathum Thani flavour): PM2.5 worst at night/early morning and in the evening
rush, temperature peaking mid-afternoon (~27-35 °C), humidity opposite to temperature, canal water
level with a semi-diurnal tide, road noise following traffic. An :class:`AnomalySpec` adds a smooth
episode (a PM2.5 haze episode, a canal level rise) ``start_s`` after the sensor started.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson

from citystream.schemas.events import Metric
from citystream.settings.gateway import ReplaySensor, SensorSpec, SimulatedSensor

ICT = timedelta(hours=7)  # Indochina Time: daily patterns follow local hours

Sample = tuple[datetime, Metric, float]


class BadReading(Exception):
    """One record of a replay file is unusable; the source continues with the next."""


class SensorSource(Protocol):
    """What the gateway needs from a sensor plugin."""

    def read(self, now: datetime) -> Sample | None:
        """The next reading, or None when the source has nothing more."""
        ...


# baseline, daily amplitude, hour of the daily peak, noise sigma, lower bound, upper bound
PATTERNS: dict[Metric, tuple[float, float, float, float, float, float]] = {
    Metric.PM25: (28.0, 12.0, 6.0, 2.5, 1.0, 500.0),
    Metric.PM10: (45.0, 18.0, 6.0, 4.0, 2.0, 800.0),
    Metric.TEMPERATURE: (30.0, 4.0, 15.0, 0.3, 15.0, 45.0),
    Metric.HUMIDITY: (70.0, 15.0, 4.0, 1.5, 20.0, 100.0),
    Metric.WATER_LEVEL: (180.0, 25.0, 2.0, 1.0, 0.0, 600.0),
    Metric.NOISE: (62.0, 8.0, 18.0, 2.0, 30.0, 110.0),
    Metric.RAIN: (0.5, 0.5, 16.0, 0.3, 0.0, 200.0),
}


class SimulatedSensorSource:
    """A plausible daily pattern plus Gaussian noise plus configured anomaly episodes."""

    def __init__(self, spec: SimulatedSensor, started: datetime) -> None:
        self.spec = spec
        self.started = started
        self.rng = random.Random(spec.seed if spec.seed is not None else spec.device_id)

    def value_at(self, when: datetime) -> float:
        """The noiseless pattern plus anomalies at ``when`` (for tests and plots)."""
        base, amplitude, peak_hour, _sigma, low, high = PATTERNS[self.spec.metric]
        local = when + ICT
        hour = local.hour + local.minute / 60 + local.second / 3600
        period = 12.0 if self.spec.metric is Metric.WATER_LEVEL else 24.0
        value = base + amplitude * math.cos(2 * math.pi * (hour - peak_hour) / period)
        elapsed = (when - self.started).total_seconds()
        for episode in self.spec.anomalies:
            into = elapsed - episode.start_s
            if 0 <= into <= episode.duration_s:
                value += episode.magnitude * math.sin(math.pi * into / episode.duration_s)
        return min(max(value, low), high)

    def read(self, now: datetime) -> Sample | None:
        """A reading at ``now``."""
        sigma, low, high = PATTERNS[self.spec.metric][3:]
        value = self.value_at(now) + self.rng.gauss(0.0, sigma)
        return now, self.spec.metric, round(min(max(value, low), high), 2)


def _records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8", newline="") as handle:
        if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
            for line in handle:
                if line.strip():
                    try:
                        record = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        record = {"_bad": line[:80]}
                    yield record if isinstance(record, dict) else {"_bad": line[:80]}
        else:
            yield from csv.DictReader(handle)


class ReplaySensorSource:
    """Rows of a CSV (header ``metric,value[,captured_at]``) or JSON-lines file, one per interval."""

    def __init__(self, spec: ReplaySensor) -> None:
        if not spec.path.is_file():
            raise FileNotFoundError(f"replay file not found: {spec.path}")
        self.spec = spec
        self._rows = _records(spec.path)

    def _next_record(self) -> dict[str, Any] | None:
        record = next(self._rows, None)
        if record is None and self.spec.loop:
            self._rows = _records(self.spec.path)
            record = next(self._rows, None)
        return record

    def read(self, now: datetime) -> Sample | None:
        """The next row; BadReading for a row that is not a valid reading."""
        record = self._next_record()
        if record is None:
            return None
        try:
            metric = Metric(str(record.get("metric") or self.spec.metric))
            value = float(record["value"])
            if not math.isfinite(value):
                raise ValueError("value is not finite")
            when = now
            if record.get("captured_at"):
                when = datetime.fromisoformat(str(record["captured_at"]))
                when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        except (KeyError, ValueError, TypeError) as exc:
            raise BadReading(f"{self.spec.path.name}: {exc!r} in {str(record)[:120]}") from exc
        return when, metric, value


def open_sensor(spec: SensorSpec, started: datetime) -> SensorSource:
    """Open the plugin for ``spec``."""
    if isinstance(spec, ReplaySensor):
        return ReplaySensorSource(spec)
    return SimulatedSensorSource(spec, started)
