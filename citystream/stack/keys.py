"""The local stack's pseudonym keys: one random HMAC key per tenant (``*`` for the others), rotation.

Current keys live in ``<home>/credentials.json`` (0600): ``pseudonym`` is the ``*`` key, made by the
first ``stack up``; ``pseudonym:<tenant>`` a tenant's own, made for every tenant the settings know
(:func:`known_tenants`: the gateway/simulator tenant, console users' tenants, tenants with configured
keys, provisioned gateways' tenants) by ``stack up``, for a new tenant by ``citystream gateway
provision --tenant T`` (:func:`ensure_tenants`; restart the worker to use it), and replaced by
``citystream stack rotate-key --tenant T``. Every key is ``secrets.token_urlsafe(32)`` (256 random
bits), never a placeholder.
``rotate`` replaces one key, moves the old one to ``<home>/retired-pseudonym-keys.json`` (0600,
with the time it was retired: a data-subject request needs the pseudonyms under every key still
present in the data; destroy it once ``plate_reads`` has expired past it, docs/PRIVACY.md) and
rewrites the stack's settings file. A worker reads its keys at start: restart it after a rotation.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from citystream.schemas.events import TENANT

RETIRED = "retired-pseudonym-keys.json"
PREFIX = "pseudonym:"


def new_key() -> str:
    """A fresh random key (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def fingerprint(key: str) -> str:
    """A short, non-reversible name of a key for logs and output (never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def write_private(path: Path, body: bytes) -> None:
    """Replace a file with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(body)
    os.chmod(path, 0o600)


def current(creds: dict[str, str]) -> dict[str, str]:
    """Tenant (or ``*``) -> key, from the stack's credentials."""
    keys = {name.removeprefix(PREFIX): key for name, key in creds.items() if name.startswith(PREFIX)}
    return {"*": creds["pseudonym"], **keys}


def retired(home: Path) -> list[dict[str, str]]:
    """Keys rotated out of this stack home, oldest first (tenant, key, retired_at)."""
    path = home.resolve() / RETIRED
    if not path.exists():
        return []
    rows: list[dict[str, str]] = orjson.loads(path.read_bytes())
    return rows


def managed(configured: dict[str, str], creds: dict[str, str], home: Path) -> bool:
    """Whether configured keys are this stack's own (current or retired), not keys an operator set."""
    known = set(current(creds).values()) | {row["key"] for row in retired(home)}
    return bool(configured) and set(configured.values()) <= known


def known_tenants(settings: Any, home: Path) -> list[str]:
    """Tenants this stack's settings and registry know: they get a key of their own at ``stack up``."""
    from citystream.stack import identities

    tenants = {settings.gateway.tenant, *(t for t in settings.worker.pseudonym_keys if t != "*"),
               *(t for user in settings.console.users.values() for t in user.tenants),
               *(g.tenant for g in identities.load(home))}
    return sorted(t for t in tenants if re.fullmatch(TENANT, t))


def ensure_tenants(home: Path, creds: dict[str, str], tenants: list[str], config: Path | None = None
                   ) -> dict[str, str]:
    """Give each tenant without one a new random key (credentials 0600, and the settings file if its keys are
    the stack's own); returns the credentials. Keys already there are never changed."""
    missing = [t for t in tenants if PREFIX + t not in creds]
    if not missing:
        return creds
    home = home.resolve()
    added = {PREFIX + t: new_key() for t in missing}
    updated = {**creds, **added}
    write_private(home / "credentials.json", orjson.dumps(updated))
    if config is not None and config.exists():
        doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        configured = (doc.get("worker") or {}).get("pseudonym_keys") or {}
        if not configured or managed(configured, creds, home):
            doc.setdefault("worker", {})["pseudonym_keys"] = current(updated)
            _write_config(config, doc)
    return updated


def _write_config(config: Path, doc: dict[str, Any]) -> None:
    header = "# Written by 'citystream stack up': settings for processes using the local stack.\n"
    write_private(config, (header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)).encode())


def rotate(home: Path, creds: dict[str, str], tenant: str, config: Path | None) -> dict[str, Any]:
    """Give ``tenant`` (or ``*``) a new key; retire the old one; update the settings file if there is one."""
    if tenant != "*" and not re.fullmatch(TENANT, tenant):
        raise ValueError(f"tenant {tenant!r}: must be '*' or match {TENANT}")
    home = home.resolve()
    name = "pseudonym" if tenant == "*" else PREFIX + tenant
    old = creds.get(name)
    key = new_key()
    if old:
        rows = [*retired(home), {"tenant": tenant, "key": old,
                                 "retired_at": datetime.now(UTC).isoformat(timespec="seconds")}]
        write_private(home / RETIRED, orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    write_private(home / "credentials.json", orjson.dumps({**creds, name: key}))
    if config is not None and config.exists():
        doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
        worker = doc.setdefault("worker", {})
        worker["pseudonym_keys"] = {**(worker.get("pseudonym_keys") or {}), tenant: key}
        _write_config(config, doc)
    return {"tenant": tenant, "fingerprint": fingerprint(key), "previous": fingerprint(old) if old else None,
            "retired_file": str(home / RETIRED) if old else None}
