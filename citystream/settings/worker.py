"""Faust worker settings."""

from __future__ import annotations

from pydantic import Field, SecretStr

from citystream.settings.base import Section


class WorkerSettings(Section):
    """Faust processors: app id, vision pool, per-tenant pseudonym keys."""

    app_id: str = Field("citystream-worker", pattern=r"^[A-Za-z0-9_.-]+$")
    vision_processes: int = Field(0, ge=0, description="0 = one per core")
    pseudonym_keys: dict[str, SecretStr] = Field(default_factory=dict, description="tenant -> HMAC key")
    face_threshold: float = Field(0.6, gt=0, lt=2)
