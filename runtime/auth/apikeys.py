"""API keys for agents and VMs: generating, parsing and verifying them.

A key reads `swk_<key_id>_<secret>`: `key_id` (16 hex characters) names the row of table
`api_keys` and is not secret; `secret` is 256 random bits (43 base64url characters) and is
shown once, when the key is created. Only `HMAC-SHA256(salt, secret)` is stored, with a
per-key random salt, and it is compared with `hmac.compare_digest`.

Why SHA-256 and not argon2 or bcrypt: a slow key-derivation function protects low-entropy
secrets (passwords a person chose) against offline guessing after a database leak. A
256-bit random secret cannot be guessed, slow hash or not, so argon2 would only add ~50 ms
of CPU to every authenticated call for no security gain. The salt keeps equal secrets from
having equal hashes and rules out precomputed tables; HMAC keeps the construction standard.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

API_KEY_PREFIX = "swk_"
_KEY_ID_BYTES = 8  # 16 hex characters: unique, not secret
_SECRET_BYTES = 32  # 256 bits
_SALT_BYTES = 16
_KEY = re.compile(r"swk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class NewApiKey:
    """A freshly generated key: `token` is shown once; `salt` and `key_hash` are stored."""

    key_id: str
    token: str
    salt: str
    key_hash: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hash_api_key_secret(secret: str, salt: str) -> str:
    """HMAC-SHA256 of the secret keyed with the per-key salt, hex-encoded."""
    return hmac.new(salt.encode("ascii"), secret.encode("ascii"), hashlib.sha256).hexdigest()


def generate_api_key() -> NewApiKey:
    key_id = secrets.token_hex(_KEY_ID_BYTES)
    secret = _b64(secrets.token_bytes(_SECRET_BYTES))
    salt = _b64(secrets.token_bytes(_SALT_BYTES))
    return NewApiKey(
        key_id=key_id,
        token=f"{API_KEY_PREFIX}{key_id}_{secret}",
        salt=salt,
        key_hash=hash_api_key_secret(secret, salt),
    )


def parse_api_key(token: str) -> tuple[str, str] | None:
    """`(key_id, secret)` of a well-formed key, None for anything else."""
    match = _KEY.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def verify_api_key_secret(secret: str, salt: str, key_hash: str) -> bool:
    """Whether `secret` hashes to the stored `key_hash`, compared in constant time."""
    return hmac.compare_digest(hash_api_key_secret(secret, salt), key_hash)
