"""Control-room console settings: where it listens, who may log in with which role, what the wall shows."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from citystream.settings.base import Section

Role = Literal["operator", "analyst", "privacy_officer", "admin"]
ROLES: tuple[Role, ...] = ("operator", "analyst", "privacy_officer", "admin")
PLATE_TEXT_ROLES: tuple[Role, ...] = ("operator", "privacy_officer", "admin")
HASH_PATTERN = r"^scrypt\$\d+\$\d+\$\d+\$[0-9a-f]{32}\$[0-9a-f]{64}$"


class ConsoleUser(Section):
    """One console login: role, scrypt password hash and the tenants it may see (empty = every tenant)."""

    role: Role
    password_hash: SecretStr = Field(description="scrypt$N$r$p$salt_hex$hash_hex "
                                                 "(citystream console --hash-password prints one)")
    name: str = Field("", max_length=128, description="shown in the console and in the audit log")
    tenants: list[str] = Field(default_factory=list, description="tenants this user sees; empty = all")

    @field_validator("password_hash")
    @classmethod
    def _hash_form(cls, value: SecretStr) -> SecretStr:
        import re

        if not re.fullmatch(HASH_PATTERN, value.get_secret_value()):
            raise ValueError("must be scrypt$N$r$p$salt_hex(16 bytes)$hash_hex(32 bytes); "
                             "make one with: citystream console --hash-password")
        return value


class ConsoleSettings(Section):
    """The web console of the control room (``citystream console``)."""

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535, description="0 = any free port")
    users: dict[str, ConsoleUser] = Field(default_factory=dict, description="login name -> user")
    session_secret: SecretStr = Field(SecretStr(""), description="signs session cookies; empty = a random key per "
                                                                 "process (everyone logs in again after a restart)")
    session_max_age_s: int = Field(8 * 3600, ge=60, description="a login lasts this long (one shift)")
    tls_cert_file: Path | None = Field(None, description="serve HTTPS (cookies then carry Secure)")
    tls_key_file: Path | None = None
    plate_text_roles: list[Role] = Field(default_factory=lambda: list(PLATE_TEXT_ROLES),
                                         description="roles that see the plate text of watchlist hits")
    feed_size: int = Field(500, ge=10, le=100_000, description="live feed items kept in memory")
    feed_backlog: int = Field(50, ge=0, le=10_000, description="recent records per partition read at start")
    camera_offline_s: float = Field(90.0, gt=0, description="a camera whose gateway sent no heartbeat for "
                                                             "this long is shown offline")
    language: Literal["th", "en"] = Field("th", description="labels show this language first")

    @model_validator(mode="after")
    def _tls_pair(self) -> ConsoleSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        return self

    @property
    def tls(self) -> bool:
        """Whether the console serves HTTPS."""
        return self.tls_cert_file is not None
