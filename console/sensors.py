"""Sensor panels: PM2.5 / Thai AQI by district with the PCD colour bands, canal levels with trend and thresholds.

Bands and the index come from :mod:`citystream.processors.sensors.aqi`; flood thresholds from the worker's
alert rules (``worker.alert_rules`` on ``water_level_cm``), so the console shows what the pipeline
alerts on. Charts are inline SVG polylines computed here (no JavaScript needed to draw them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from citystream.console import store
from citystream.processors.sensors.aqi import BANDS, TOP_BAND, AqiBand, band_of, thai_aqi
from citystream.schemas.events import Metric
from citystream.settings import Settings

W, H = 300, 80
CSS_COLOURS = {"blue": "#3b9ae1", "green": "#2ecc71", "yellow": "#f1c40f", "orange": "#e67e22", "red": "#e74c3c"}


@dataclass
class Chart:
    """An inline SVG line chart: the polyline points and dashed threshold lines (y in pixels)."""

    points: str
    last: tuple[float, float] | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0


def chart(series: list[tuple[datetime, float]], thresholds: tuple[float, ...] = ()) -> Chart:
    """Scale a series (and thresholds) into a W x H box, y growing upwards."""
    if not series:
        return Chart("")
    values = [v for _t, v in series]
    low, high = min([*values, *thresholds]), max([*values, *thresholds])
    span = (high - low) or 1.0
    n = max(len(series) - 1, 1)

    def y(v: float) -> float:
        return round(H - 4 - (v - low) / span * (H - 8), 1)

    xy = [(round(i / n * W, 1), y(v)) for i, (_t, v) in enumerate(series)]
    return Chart(" ".join(f"{x},{yy}" for x, yy in xy), xy[-1], [(y(t), f"{t:g}") for t in thresholds], low, high)


@dataclass
class AirPanel:
    """One district's PM2.5."""

    district: str
    mean24: float
    aqi: int
    band: AqiBand
    colour: str
    latest: float | None
    chart: Chart


@dataclass
class CanalPanel:
    """One water-level gauge."""

    device_id: str
    latest: float
    rise: float | None
    rise_minutes: int
    rise_limit: float | None
    alarming: bool
    chart: Chart


def air(settings: Settings, tenants: tuple[str, ...]) -> list[AirPanel]:
    """PM2.5 per district: 24-hour mean, its Thai AQI and band, the last hour as a chart."""
    means = store.day_means(settings, Metric.PM25.value, tenants)
    series = store.sensor_series(settings, Metric.PM25.value, tenants)
    panels = []
    for district, mean in means.items():
        band = band_of(max(mean, 0.0))
        points = series.get(district, [])
        panels.append(AirPanel(district, round(mean, 1), thai_aqi(max(mean, 0.0)), band, CSS_COLOURS[band.colour],
                               points[-1][1] if points else None, chart(points)))
    return panels


def canals(settings: Settings, tenants: tuple[str, ...]) -> list[CanalPanel]:
    """Water level per gauge over the last hour, its rise over the alert rule's period and the rule's limits."""
    rules = [r for r in settings.worker.alert_rules if r.metric == Metric.WATER_LEVEL.value]
    rate = next((r for r in rules if r.kind == "rate"), None)
    levels = tuple(r.raise_at for r in rules if r.kind == "threshold")
    panels = []
    for device, points in store.sensor_series(settings, Metric.WATER_LEVEL.value, tenants, by="device_id").items():
        minutes = rate.per_minutes if rate else 10
        rise = None
        if len(points) > 1:
            start = [v for t, v in points if (points[-1][0] - t).total_seconds() <= minutes * 60]
            rise = round(points[-1][1] - start[0], 1)
        alarming = (rate is not None and rise is not None and rise >= rate.raise_at) or any(
            points[-1][1] >= level for level in levels)
        panels.append(CanalPanel(device, round(points[-1][1], 1), rise, minutes, rate.raise_at if rate else None,
                                 alarming, chart(points, levels)))
    return panels


def legend() -> list[tuple[AqiBand, str]]:
    """The PCD bands with their CSS colours, for the legend."""
    return [(b, CSS_COLOURS[b.colour]) for b in (*BANDS, TOP_BAND)]
