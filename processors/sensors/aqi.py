"""Thai AQI from PM2.5 (Pollution Control Department bands, revised 2023).

Concentration is rounded to 0.1 µg/m³ (as the PCD reports it), its band found, and the index
interpolated linearly within the band: ``I = Ilo + (Ihi - Ilo) / (Chi - Clo) * (C - Clo)``.
Above 75.0 µg/m³ the PCD defines no upper breakpoint; the index continues with the slope of the
101–200 band (project choice), so it stays monotonic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AqiBand:
    """One PCD band: concentration and index ranges, meaning and colour."""

    c_low: float
    c_high: float
    i_low: int
    i_high: int
    name: str
    name_th: str
    colour: str


BANDS: tuple[AqiBand, ...] = (
    AqiBand(0.0, 15.0, 0, 25, "very good", "ดีมาก", "blue"),
    AqiBand(15.1, 25.0, 26, 50, "good", "ดี", "green"),
    AqiBand(25.1, 37.5, 51, 100, "moderate", "ปานกลาง", "yellow"),
    AqiBand(37.6, 75.0, 101, 200, "starting to affect health", "เริ่มมีผลกระทบต่อสุขภาพ", "orange"),
)
TOP_BAND = AqiBand(75.1, float("inf"), 201, 10**6, "affects health", "มีผลกระทบต่อสุขภาพ", "red")
_TOP_SLOPE = (BANDS[-1].i_high - BANDS[-1].i_low) / (BANDS[-1].c_high - BANDS[-1].c_low)


def band_of(pm25_ug_m3: float) -> AqiBand:
    """The PCD band of a PM2.5 concentration (negative values are an error)."""
    if pm25_ug_m3 < 0:
        raise ValueError(f"PM2.5 cannot be negative: {pm25_ug_m3}")
    c = round(pm25_ug_m3, 1)
    for band in BANDS:
        if c <= band.c_high:
            return band
    return TOP_BAND


def thai_aqi(pm25_ug_m3: float) -> int:
    """Thai AQI (integer) of a PM2.5 concentration in µg/m³."""
    band = band_of(pm25_ug_m3)
    c = round(pm25_ug_m3, 1)
    if band is TOP_BAND:
        return round(band.i_low + _TOP_SLOPE * (c - band.c_low))
    slope = (band.i_high - band.i_low) / (band.c_high - band.c_low)
    return round(band.i_low + slope * (c - band.c_low))
