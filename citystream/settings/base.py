"""Base class of every settings section."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A settings section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid")


class TlsSettings(Section):
    """TLS options passed to a client as they are."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
