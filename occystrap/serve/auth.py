"""HTTP Basic authentication against an htpasswd file of bcrypt hashes (`htpasswd -B`).

bcrypt is slow on purpose (tens of milliseconds a check), and a pull sends dozens of
requests with the same header: a header that passed once is remembered (by its
sha256, never in clear), checks run in worker threads so the event loop keeps serving,
and only a few run at once so a flood of bad passwords cannot take every core.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections import OrderedDict
from pathlib import Path

import bcrypt

from occystrap.errors import UsageError

REALM = "occystrap"
_BCRYPT_PREFIXES = (b"$2a$", b"$2b$", b"$2y$")
_REMEMBERED = 1024
_CONCURRENT_CHECKS = 2


def parse_htpasswd(text: str, where: str) -> dict[str, bytes]:
    users: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise UsageError(f"{where}:{number}: expected user:hash")
        encoded = hashed.encode()
        if not encoded.startswith(_BCRYPT_PREFIXES):
            raise UsageError(f"{where}:{number}: {user}'s hash is not bcrypt (make it with htpasswd -B)")
        users[user] = encoded
    if not users:
        raise UsageError(f"{where} names no users")
    return users


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) from `Authorization: Basic …`; None when absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class Htpasswd:
    def __init__(self, users: dict[str, bytes]) -> None:
        self._users = users
        # Unknown users are checked against this, so a wrong name costs what a wrong password does.
        self._decoy = bcrypt.hashpw(b"decoy", bcrypt.gensalt(rounds=10))
        self._passed: OrderedDict[bytes, None] = OrderedDict()
        self._slots = asyncio.Semaphore(_CONCURRENT_CHECKS)

    @classmethod
    def load(cls, path: Path) -> Htpasswd:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        return cls(parse_htpasswd(text, str(path)))

    @property
    def challenge(self) -> str:
        return f'Basic realm="{REALM}"'

    async def allows(self, header: str | None) -> bool:
        credentials = parse_basic(header)
        if credentials is None or header is None:
            return False
        key = hashlib.sha256(header.encode()).digest()
        if key in self._passed:
            self._passed.move_to_end(key)
            return True
        user, password = credentials
        hashed = self._users.get(user)
        async with self._slots:
            ok = await asyncio.to_thread(self._check, password, hashed or self._decoy)
        if ok and hashed is not None:
            self._passed[key] = None
            if len(self._passed) > _REMEMBERED:
                self._passed.popitem(last=False)
            return True
        return False

    def _check(self, password: str, hashed: bytes) -> bool:
        try:
            return bcrypt.checkpw(password.encode(), hashed)
        except ValueError:  # a password over bcrypt's 72 bytes, or a damaged hash
            return False
