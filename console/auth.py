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
import threading
import time
from collections.abc import Callable
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


class Throttle:
    """Failed logins per login name: after ``limit`` failures within ``window_s`` the name is refused until the
    window has passed (bounded to ``capacity`` names; the oldest are forgotten first)."""

    def __init__(self, limit: int = 5, window_s: float = 300.0, capacity: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.capacity, self.clock = limit, window_s, capacity, clock
        self.failures: dict[str, list[float]] = {}
        self.lock = threading.Lock()

    def _recent(self, login: str) -> list[float]:
        now = self.clock()
        recent = [t for t in self.failures.get(login, []) if now - t < self.window_s]
        if recent:
            self.failures[login] = recent
        else:
            self.failures.pop(login, None)
        return recent

    def allowed(self, login: str) -> bool:
        """Whether another attempt for ``login`` may be checked now."""
        with self.lock:
            return len(self._recent(login)) < self.limit

    def failed(self, login: str) -> None:
        """Count a failed attempt."""
        with self.lock:
            if login not in self.failures and len(self.failures) >= self.capacity:
                del self.failures[next(iter(self.failures))]
            self.failures.setdefault(login, []).append(self.clock())

    def succeeded(self, login: str) -> None:
        """Forget the failures of ``login``."""
        with self.lock:
            self.failures.pop(login, None)
