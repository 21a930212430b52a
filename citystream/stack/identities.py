"""Provisioned gateway identities of a stack home: one MQTT login per gateway, pinned to its tenant.

The registry is ``<home>/gateways.json`` (mode 0600). It holds, per gateway, the Mosquitto password
hash (PBKDF2-SHA512 as written by ``mosquitto_passwd``), never the password: the password is shown
once, when the gateway is provisioned. ``stack up`` and ``gateway provision | revoke`` render the
broker's password file and ACL from it (``citystream.stack.mosquitto``).

A gateway's username is ``{tenant}.{gateway}``: tenants cannot contain ``.`` (``schemas.events.TENANT``),
so the first dot splits it unambiguously, and the shared logins (``bridge``, ``gateway``) never
contain one. Its ACL allows publishing only the topic map's device streams under
``{root}/{tenant}/{gateway}/`` and reading only its own confirmations and the bridges' readiness.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson

from citystream.schemas.events import NAME, TENANT
from citystream.schemas.topics import FAMILY_STREAMS, bridge_confirm_topic, bridge_ready_topic

REGISTRY = "gateways.json"


class IdentityError(Exception):
    """A gateway identity cannot be created, found or stored; the message says why."""


@dataclass(frozen=True)
class GatewayIdentity:
    """One provisioned gateway: who it is, where it may publish, its password hash."""

    tenant: str
    gateway: str
    root: str
    password_hash: str
    provisioned_at: str

    @property
    def username(self) -> str:
        """The MQTT username of this gateway."""
        return username_of(self.tenant, self.gateway)

    @property
    def topic_prefix(self) -> str:
        """Every topic this gateway may publish starts with this (then ``/``)."""
        return f"{self.root}/{self.tenant}/{self.gateway}"

    def acl(self) -> str:
        """This gateway's block of the Mosquitto ACL file."""
        writes = [f"topic write {self.topic_prefix}/{family}/+/{stream}" for family, stream in sorted(FAMILY_STREAMS)]
        return "\n".join([
            f"user {self.username}", *writes,
            f"topic read {bridge_confirm_topic(self.root, self.tenant, self.gateway)}",
            f"topic read {bridge_ready_topic(self.root)}", ""])

    def public(self) -> dict[str, str]:
        """What ``gateway list`` shows (no hash)."""
        return {"tenant": self.tenant, "gateway": self.gateway, "username": self.username,
                "topic_prefix": self.topic_prefix, "provisioned_at": self.provisioned_at}


def username_of(tenant: str, gateway: str) -> str:
    """The MQTT username of a provisioned gateway; IdentityError for names outside the contract."""
    if not re.fullmatch(TENANT, tenant):
        raise IdentityError(f"tenant {tenant!r}: must match {TENANT}")
    if not re.fullmatch(NAME, gateway):
        raise IdentityError(f"gateway {gateway!r}: must match {NAME}")
    return f"{tenant}.{gateway}"


def is_identity_username(username: str) -> bool:
    """Whether a password-file username belongs to a provisioned gateway (shared logins have no dot)."""
    return "." in username


def registry_path(home: Path) -> Path:
    """The registry file of a stack home."""
    return home.resolve() / REGISTRY


def load(home: Path) -> list[GatewayIdentity]:
    """The provisioned gateways of a stack home (none when the registry does not exist)."""
    path = registry_path(home)
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except orjson.JSONDecodeError as exc:
        raise IdentityError(f"{path}: not JSON ({exc})") from exc
    try:
        return [GatewayIdentity(**entry) for entry in raw["gateways"]]
    except (KeyError, TypeError) as exc:
        raise IdentityError(f"{path}: unexpected content ({exc})") from exc


def save(home: Path, identities: list[GatewayIdentity]) -> None:
    """Replace the registry atomically, mode 0600."""
    path = registry_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = orjson.dumps({"gateways": [asdict(i) for i in sorted(identities, key=lambda i: i.username)]},
                        option=orjson.OPT_INDENT_2)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".gateways.")  # mkstemp creates it 0600
    with os.fdopen(fd, "wb") as out:
        out.write(body)
    os.replace(tmp, path)


@contextmanager
def locked(home: Path) -> Iterator[None]:
    """Hold the registry's lock (one provision/revoke at a time per stack home)."""
    lock = registry_path(home).with_suffix(".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def password_hash(username: str, password: str) -> str:
    """The Mosquitto password-file hash of a password (``$7$...``, made by ``mosquitto_passwd``)."""
    binary = shutil.which("mosquitto_passwd")
    if binary is None:
        raise IdentityError("mosquitto_passwd not found: install the Debian package 'mosquitto' (make setup)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "passwd"
        # the password travels on the command line of a short-lived local process (as in stack up)
        subprocess.run([binary, "-c", "-b", str(path), username, password], check=True, capture_output=True)
        user, _, hashed = path.read_text().strip().partition(":")
    if user != username or not hashed.startswith("$"):
        raise IdentityError(f"mosquitto_passwd wrote an unexpected line for {username!r}")
    return hashed
