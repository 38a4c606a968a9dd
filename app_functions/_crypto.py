"""AES-256-GCM for secrets at rest, with a key ring read from `RUNTIME_SECRETS_KEY`.

`RUNTIME_SECRETS_KEY` is either one base64 32-byte key (its key id is "default") or a
comma-separated list of `kid:base64key`. The first key is current and encrypts; every listed
key decrypts the rows that name its id. To rotate: put the new key first, keep the old one
after it, run `secrets.reencrypt`, then drop the old one. (Going from a bare key to a list,
name the old key `default:`.)

The associated data binds a ciphertext to its tenant and name: copied to another row or
tenant it fails to decrypt instead of revealing the value there. Nothing here puts a key or
a value into an exception message.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from runtime import RuntimeFailure

ENV = "RUNTIME_SECRETS_KEY"
DEFAULT_KID = "default"
NONCE_BYTES = 12
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class SecretsUnavailable(RuntimeFailure):
    """Secrets cannot be encrypted or decrypted."""


@dataclass(frozen=True)
class Sealed:
    ciphertext: str  # base64
    nonce: str  # base64
    key_id: str


@dataclass(frozen=True)
class KeyRing:
    current: str
    keys: dict[str, AESGCM]


def keyring() -> KeyRing:
    return _parse(os.environ.get(ENV, "").strip())


@functools.lru_cache(maxsize=4)
def _parse(raw: str) -> KeyRing:
    if not raw:
        raise SecretsUnavailable(f"{ENV} is not set: secrets cannot be stored or read")
    entries = [e.strip() for e in raw.split(",")]
    keys: dict[str, AESGCM] = {}
    order: list[str] = []
    for position, entry in enumerate(entries, 1):
        if ":" in entry:
            kid, encoded = entry.split(":", 1)
        elif len(entries) == 1:
            kid, encoded = DEFAULT_KID, entry
        else:
            raise SecretsUnavailable(f"{ENV} entry {position} needs a key id (`kid:base64key`)")
        if not _KID.fullmatch(kid) or kid in keys:
            raise SecretsUnavailable(
                f"{ENV} entry {position}: key ids must be unique, 1-64 of [A-Za-z0-9._-]"
            )
        try:
            key = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32:
            raise SecretsUnavailable(f"{ENV} entry {position} is not base64 of a 32-byte key")
        keys[kid] = AESGCM(key)
        order.append(kid)
    return KeyRing(order[0], keys)


def _associated_data(tenant_id: str, name: str) -> bytes:
    return json.dumps(["swarm-secret/v1", tenant_id, name]).encode()


def seal(tenant_id: str, name: str, value: str) -> Sealed:
    ring = keyring()
    nonce = os.urandom(NONCE_BYTES)
    data = ring.keys[ring.current].encrypt(nonce, value.encode(), _associated_data(tenant_id, name))
    return Sealed(base64.b64encode(data).decode(), base64.b64encode(nonce).decode(), ring.current)


def unseal(tenant_id: str, name: str, sealed: Sealed) -> str:
    ring = keyring()
    key = ring.keys.get(sealed.key_id)
    if key is None:
        raise SecretsUnavailable(
            f"Secret {name!r} was encrypted with key id {sealed.key_id!r}, "
            f"which {ENV} does not list"
        )
    try:
        plain = key.decrypt(
            base64.b64decode(sealed.nonce),
            base64.b64decode(sealed.ciphertext),
            _associated_data(tenant_id, name),
        )
    except (InvalidTag, binascii.Error, ValueError):
        raise SecretsUnavailable(
            f"Secret {name!r} cannot be decrypted: wrong key or altered ciphertext"
        ) from None
    return plain.decode()


def current_key_id() -> str:
    return keyring().current
