"""Encryption at rest for credentials: Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`.

MultiFernet encrypts with the first key of settings.CREDENTIAL_KEYS and decrypts with any of them, so keys
rotate without downtime: prepend a new key, run `manage.py rotate_credentials`, then drop the old key.
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialDecryptionError(Exception):
    """A stored secret cannot be decrypted with any configured key (wrong or missing key)."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _current() -> MultiFernet:
    return _fernet(tuple(settings.CREDENTIAL_KEYS))


def encrypt(plaintext: str) -> str:
    return _current().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _current().decrypt(token.encode("ascii")).decode("utf-8")
    except InvalidToken:
        raise CredentialDecryptionError(
            "a stored credential cannot be decrypted with the configured BULWARK_CREDENTIAL_KEYS"
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a stored secret with the current first key."""
    try:
        return _current().rotate(token.encode("ascii")).decode("ascii")
    except InvalidToken:
        raise CredentialDecryptionError("a stored credential cannot be decrypted for rotation") from None
