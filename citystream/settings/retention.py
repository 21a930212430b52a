"""Retention by purpose (PDPA: keep personal data only as long as its purpose needs): days kept per table."""

from __future__ import annotations

from pydantic import Field, field_validator

from citystream.settings.base import Section

# Days, 0 = forever. Raw tables by their purpose; rollups longer than the rows they count (trends), except
# vehicles_1h, whose uniq states are built from plate pseudonyms and so live no longer than plate_reads.
DEFAULT_TABLE_DAYS: dict[str, int] = {
    "sensor_readings": 730,
    "plate_reads": 90,
    "face_matches": 30,
    "alerts": 730,
    "device_status": 180,
    "frame_index": 30,
    "dead_letters": 30,
    "sensor_1m": 90,
    "sensor_1h": 1825,
    "vehicles_1h": 90,
    "alerts_1d": 1825,
    "audit_log": 0,
}
PURPOSES: dict[str, str] = {
    "sensor_readings": "air quality and water level history, open-data reports",
    "plate_reads": "traffic counts and repeat-vehicle analysis by keyed pseudonym",
    "face_matches": "watchlist face hits for the control room",
    "alerts": "incident history of the control room",
    "device_status": "device health and gap diagnosis",
    "frame_index": "evidence frames with detections (claim-check index; the JPEG files expire with it)",
    "dead_letters": "diagnosis of rejected input (original bytes kept for replay)",
    "sensor_1m": "dashboards: sensor minutes",
    "sensor_1h": "trends: sensor hours",
    "vehicles_1h": "traffic trends: reads and distinct vehicles per camera and hour",
    "alerts_1d": "trends: alerts per district and day",
    "audit_log": "record of processing: data-subject requests and who handled them",
}


class RetentionSettings(Section):
    """How long each table keeps rows (TTL), and how long a dead letter keeps a camera image."""

    tables: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_TABLE_DAYS),
                                   description="table -> days kept (TTL on its time column), 0 = forever; "
                                               "tables left out keep the default")
    dead_letter_image_days: int = Field(1, ge=1, description="a dead letter holding a camera frame loses the "
                                        "image after this many days (keep it <= the raw.frames topic's retention)")

    @field_validator("tables")
    @classmethod
    def _known_tables(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = sorted(set(value) - set(DEFAULT_TABLE_DAYS))
        if unknown:
            raise ValueError(f"unknown table(s) {', '.join(unknown)}; tables: {', '.join(DEFAULT_TABLE_DAYS)}")
        negative = sorted(t for t, days in value.items() if days < 0)
        if negative:
            raise ValueError(f"days must be >= 0 (0 = forever): {', '.join(negative)}")
        return {**DEFAULT_TABLE_DAYS, **value}

    def days(self, table: str) -> int:
        """Days ``table`` keeps rows (0 = forever)."""
        return self.tables[table]
