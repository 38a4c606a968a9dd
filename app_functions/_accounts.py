"""Accounts: argon2id password hashes, email normalisation and the public view of a user.

Hashing and verifying cost ~50 ms of CPU each on purpose, so they run in a worker thread
(`hash_password`/`verify_password` are coroutines) and never inside a transaction body that
may be retried. For an unknown email the password is checked against a dummy hash, so a
missing account takes as long to refuse as a wrong password.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile (the library default)

USER_FIELDS = (
    "_id",
    "_creation_time",
    "tenant_id",
    "email",
    "name",
    "role",
    "active",
    "last_login_at",
)


def normalize_email(email: str) -> str:
    return email.strip().lower()


@functools.cache
def _dummy_hash() -> str:
    """Made on first use (not at import: a reload must stay fast), with today's parameters,
    so checking it costs what checking a real user's hash costs."""
    return _hasher.hash("swarm-runtime dummy password: never matches")


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def _needs_rehash(password_hash: str) -> bool:
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return False


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; always spends one verification, even with no hash."""
    return await asyncio.to_thread(_verify, password_hash, password)


async def rehash_if_outdated(password_hash: str, password: str) -> str | None:
    """A fresh hash when the stored one used weaker parameters than today's, else None."""
    if not _needs_rehash(password_hash):
        return None
    return await hash_password(password)


def public_user(row: dict[str, Any]) -> dict[str, Any]:
    """A user row without its password hash."""
    user = {key: row.get(key) for key in USER_FIELDS}
    user["active"] = row.get("active") is not False
    return user
