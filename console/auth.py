"""Console logins: scrypt password hashes, roles and what each may do, CSRF tokens bound to the session.

Sessions are Starlette's signed cookies (HttpOnly, SameSite=Strict, Secure on TLS); the session holds
only the login name and a CSRF token. Every POST carries that token in a form field or the
``X-CSRF-Token`` header and is refused (403) without it. Unknown users and wrong passwords take the
same scrypt time, so the answer does not tell which one it was.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from citystream.settings.console import ROLES, ConsoleSettings, Role

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1

# permission -> roles that have it
PERMISSIONS: dict[str, frozenset[Role]] = {
    "view": frozenset(ROLES),
    "frames": frozenset({"operator", "privacy_officer", "admin"}),
    "alerts.act": frozenset({"operator", "admin"}),
    "watchlist.view": frozenset({"operator", "privacy_officer", "admin"}),
    "watchlist.edit": frozenset({"privacy_officer", "admin"}),
}


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` of a password (a fresh 16-byte salt unless one is given)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password` (constant-time compare)."""
    try:
        _scheme, n, r, p, salt_hex, hash_hex = encoded.split("$")
        digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
                                dklen=len(hash_hex) // 2, maxmem=128 * int(n) * int(r) * int(p) + 2**20)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest.hex(), hash_hex)


_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)


@dataclass(frozen=True)
class User:
    """A logged-in console user."""

    login: str
    role: Role
    name: str
    tenants: tuple[str, ...]
    plate_text: bool

    def can(self, permission: str) -> bool:
        """Whether the user's role has ``permission``."""
        return self.role in PERMISSIONS[permission]

    def sees_tenant(self, tenant: str) -> bool:
        """Whether the user may see data of ``tenant``."""
        return not self.tenants or tenant in self.tenants


def user_of(settings: ConsoleSettings, login: str) -> User | None:
    """The configured user named ``login``, or None."""
    spec = settings.users.get(login)
    if spec is None:
        return None
    return User(login=login, role=spec.role, name=spec.name or login, tenants=tuple(spec.tenants),
                plate_text=spec.role in settings.plate_text_roles)


def authenticate(settings: ConsoleSettings, login: str, password: str) -> User | None:
    """The user when ``login`` and ``password`` match a configured user, else None."""
    spec = settings.users.get(login)
    encoded = spec.password_hash.get_secret_value() if spec is not None else _DUMMY_HASH
    ok = verify_password(password, encoded)
    return user_of(settings, login) if ok and spec is not None else None


def new_csrf_token() -> str:
    """A random token for one session."""
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """Whether the token sent with a POST is the session's (constant-time)."""
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
