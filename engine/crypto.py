"""Keys and authenticated encryption.

- The master key is 64 random bytes: 32 for encryption, 32 for chunk ids (keyed BLAKE3, so ids of known
  plaintexts cannot be recognised without the key).
- Each key slot wraps the master key with a key derived from a passphrase (scrypt) under AES-256-GCM.
- Every stored object (pack, index, snapshot) carries a random 32-byte salt; its encryption key is
  HKDF-SHA256(master encryption key, salt, purpose). Within one object nonces are counters, so a (key, nonce)
  pair never repeats unless two salts collide (probability 2^-128 per pair of objects).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from engine.errors import IntegrityError

MASTER_KEY_BYTES = 64
SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
# scrypt cost for key slots: about 0.1 s and 32 MiB here; stored per slot so it can be raised later.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1


@dataclass(frozen=True)
class MasterKey:
    encryption: bytes
    chunk_id: bytes

    @classmethod
    def generate(cls) -> MasterKey:
        material = os.urandom(MASTER_KEY_BYTES)
        return cls.from_bytes(material)

    @classmethod
    def from_bytes(cls, material: bytes) -> MasterKey:
        if len(material) != MASTER_KEY_BYTES:
            raise ValueError("master key material must be 64 bytes")
        return cls(encryption=material[:32], chunk_id=material[32:])

    def to_bytes(self) -> bytes:
        return self.encryption + self.chunk_id

    def chunk_id_of(self, data: bytes | memoryview) -> bytes:
        """The id of a chunk: keyed BLAKE3 of its plaintext."""
        return blake3.blake3(data, key=self.chunk_id).digest()

    def object_key(self, salt: bytes, purpose: bytes) -> AESGCM:
        """The AEAD for one stored object, derived from its salt."""
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"bulwark/v1/" + purpose).derive(
            self.encryption
        )
        return AESGCM(derived)


def config_mac(master: MasterKey, config: bytes) -> bytes:
    """HMAC-SHA256 of the repository config under a key derived for that purpose: a config changed by anyone
    without the master key (a flipped bit, a smaller block size) is refused on open."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"bulwark/v1/config").derive(
        master.encryption
    )
    return hmac.new(key, config, hashlib.sha256).digest()


def counter_nonce(counter: int) -> bytes:
    return counter.to_bytes(NONCE_BYTES, "big")


def passphrase_key(
    passphrase: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> AESGCM:
    kek = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    return AESGCM(kek)


def open_sealed(aead: AESGCM, nonce: bytes, ciphertext: bytes | memoryview, aad: bytes, what: str) -> bytes:
    """Decrypt and authenticate, turning a bad tag into an IntegrityError that names the object."""
    try:
        return aead.decrypt(nonce, ciphertext, aad)
    except InvalidTag:
        raise IntegrityError(f"{what}: authentication failed (damaged or tampered)") from None
