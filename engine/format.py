"""Byte layouts of packs, sealed objects and index files (engine/FORMAT.md describes them for other readers)."""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass
from typing import Any

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.crypto import NONCE_BYTES, SALT_BYTES, TAG_BYTES, MasterKey, counter_nonce, open_sealed
from engine.errors import IntegrityError

FORMAT_VERSION = 1

# --- flags of a chunk inside a pack -------------------------------------------------------------------------
FLAG_ZSTD = 0x01  # payload is a zstd frame (otherwise stored raw: incompressible data)
FLAG_META = 0x02  # a metadata chunk (an image's block table, a file tree), not user data

# --- sealed objects (index files, snapshot manifests) --------------------------------------------------------
OBJECT_MAGIC = b"BWO1"
KIND_INDEX = b"I"
KIND_SNAPSHOT = b"S"
KIND_PENDING = b"P"  # packs prune took out of the index, waiting out the grace period
KIND_DAMAGED = b"D"  # chunk copies verify found damaged or missing: never deduplicated against, never read
_OBJECT_HEADER = len(OBJECT_MAGIC) + 1 + SALT_BYTES


def _zstd_compress(data: bytes, level: int = 3) -> bytes:
    return zstandard.ZstdCompressor(level=level).compress(data)


_local = threading.local()


def _zstd_decompress(data: bytes, what: str) -> bytes:
    # One decompression context per thread (contexts are not thread-safe, and making one per chunk costs).
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    try:
        return decompressor.decompress(data)
    except zstandard.ZstdError as error:
        raise IntegrityError(f"{what}: cannot decompress: {error}") from None


def seal_object(master: MasterKey, kind: bytes, plaintext: bytes) -> bytes:
    """magic | kind | salt | AES-256-GCM(zstd(plaintext)), the header as associated data."""
    salt = os.urandom(SALT_BYTES)
    header = OBJECT_MAGIC + kind + salt
    aead = master.object_key(salt, b"object/" + kind)
    return header + aead.encrypt(counter_nonce(0), _zstd_compress(plaintext), header)


def open_object(master: MasterKey, kind: bytes, data: bytes, what: str) -> bytes:
    if len(data) < _OBJECT_HEADER + TAG_BYTES or data[:4] != OBJECT_MAGIC:
        raise IntegrityError(f"{what}: not a Bulwark object (bad magic or too short)")
    if data[4:5] != kind:
        raise IntegrityError(f"{what}: holds a {data[4:5]!r} object where {kind!r} was expected")
    header = data[:_OBJECT_HEADER]
    aead = master.object_key(data[5:_OBJECT_HEADER], b"object/" + kind)
    return _zstd_decompress(open_sealed(aead, counter_nonce(0), data[_OBJECT_HEADER:], header, what), what)


# --- packs ----------------------------------------------------------------------------------------------------
PACK_MAGIC = b"BWP1"
PACK_TRAILER_MAGIC = b"BWPE"
PACK_PREFIX = len(PACK_MAGIC) + SALT_BYTES  # magic | salt
HEADER_NONCE = counter_nonce(2 ** (8 * NONCE_BYTES) - 1)  # never used by a chunk (chunks count up from 0)
_TRAILER = struct.Struct(">I4s")  # encrypted header length | magic
ENTRY = struct.Struct(">32sBIIII")  # id | flags | offset | stored length | raw length | nonce counter


@dataclass(frozen=True)
class PackEntry:
    """Where one chunk sits in a pack. stored_length includes the 16-byte tag."""

    chunk_id: bytes
    flags: int
    offset: int
    stored_length: int
    raw_length: int
    counter: int


def pack_aead_purpose() -> bytes:
    return b"pack"


def pack_aead(master: MasterKey, salt: bytes) -> AESGCM:
    return master.object_key(salt, pack_aead_purpose())


def seal_chunk(aead: AESGCM, counter: int, chunk_id: bytes, flags: int, payload: bytes) -> bytes:
    """A chunk's blob in its pack: AES-256-GCM under the pack's key, nonce = its counter, id and flags bound."""
    return aead.encrypt(counter_nonce(counter), payload, chunk_aad(chunk_id, flags))


def chunk_aad(chunk_id: bytes, flags: int) -> bytes:
    # Binds a blob to its id and flags: a blob moved or relabelled inside a pack fails authentication.
    return chunk_id + bytes([flags])


class PackBuilder:
    """Accumulates encrypted chunks for one pack; build() returns the finished bytes and its entries.

    Chunks can be sealed on other threads: reserve() hands out the next nonce counter, seal_chunk() encrypts
    with the pack's `aead` anywhere, and place() appends the sealed blobs in counter order."""

    def __init__(self, master: MasterKey) -> None:
        self.salt = os.urandom(SALT_BYTES)
        self.name = os.urandom(16).hex()
        self.aead = pack_aead(master, self.salt)
        self._parts: list[bytes] = [PACK_MAGIC + self.salt]
        # With a sink, placed blobs are written out at once (a pack streamed to storage) instead of kept.
        self.sink: Any = None
        self.size = PACK_PREFIX
        self.entries: list[PackEntry] = []
        self.reserved = 0
        # The size once every reserved chunk is placed, counting those still in flight at their raw length
        # (an upper bound: a sealed chunk is at most its raw length plus the tag).
        self.projected_size = self.size

    def reserve(self, raw_length: int) -> int:
        """The nonce counter of the next chunk (each is used once: nonces never repeat under this key)."""
        self.reserved += 1
        self.projected_size += raw_length + TAG_BYTES
        return self.reserved - 1

    def place(self, chunk_id: bytes, flags: int, blob: bytes, raw_length: int, counter: int) -> PackEntry:
        if counter != len(self.entries):
            raise ValueError("chunks must be placed in the order their counters were reserved")
        entry = PackEntry(chunk_id, flags, self.size, len(blob), raw_length, counter)
        self._parts.append(blob)
        if self.sink is not None:
            self.sink.write(b"".join(self._parts))
            self._parts.clear()
        self.size += len(blob)
        self.projected_size += len(blob) - raw_length - TAG_BYTES
        self.entries.append(entry)
        return entry

    def add(self, chunk_id: bytes, flags: int, payload: bytes, raw_length: int) -> PackEntry:
        counter = self.reserve(len(payload))
        return self.place(
            chunk_id, flags, seal_chunk(self.aead, counter, chunk_id, flags, payload), raw_length, counter
        )

    def build(self) -> bytes:
        header = b"".join(
            ENTRY.pack(e.chunk_id, e.flags, e.offset, e.stored_length, e.raw_length, e.counter)
            for e in self.entries
        )
        sealed = self.aead.encrypt(HEADER_NONCE, struct.pack(">I", len(self.entries)) + header, PACK_MAGIC)
        return b"".join([*self._parts, sealed, _TRAILER.pack(len(sealed), PACK_TRAILER_MAGIC)])

    def finish_streamed(self) -> tuple[int, bytes]:
        """Write the encrypted header and trailer to the sink; returns the pack's full size and that tail."""
        tail = self.build()  # only the header and trailer remain unwritten
        self.sink.write(tail)
        return self.size + len(tail), tail

    def tail_length(self) -> int:
        """Bytes of the sealed header and trailer at the end of the finished pack."""
        return 4 + len(self.entries) * ENTRY.size + TAG_BYTES + _TRAILER.size


def open_chunk(
    master: MasterKey,
    salt: bytes,
    entry: PackEntry,
    blob: bytes | memoryview,
    what: str,
    *,
    verify_id: bool = True,
    aead: AESGCM | None = None,
) -> bytes:
    """Decrypt, decompress and check one chunk: wrong bytes are never returned. `aead` is the pack's key
    (pack_aead(master, salt)) when the caller opens many chunks of one pack."""
    aead = aead or pack_aead(master, salt)
    payload = open_sealed(
        aead, counter_nonce(entry.counter), blob, chunk_aad(entry.chunk_id, entry.flags), what
    )
    data = _zstd_decompress(payload, what) if entry.flags & FLAG_ZSTD else payload
    if len(data) != entry.raw_length:
        raise IntegrityError(f"{what}: {len(data)} bytes where {entry.raw_length} were recorded")
    if verify_id and master.chunk_id_of(data) != entry.chunk_id:
        raise IntegrityError(f"{what}: content does not match its id")
    return data


def read_pack_header(master: MasterKey, data: bytes, what: str) -> tuple[bytes, list[PackEntry]]:
    """The salt and entries of a whole pack, from its encrypted header."""
    if len(data) < PACK_PREFIX + _TRAILER.size or data[:4] != PACK_MAGIC:
        raise IntegrityError(f"{what}: not a pack (bad magic or too short)")
    sealed_length, magic = _TRAILER.unpack(data[-_TRAILER.size :])
    if magic != PACK_TRAILER_MAGIC or sealed_length > len(data) - PACK_PREFIX - _TRAILER.size:
        raise IntegrityError(f"{what}: pack trailer damaged")
    salt = data[4:PACK_PREFIX]
    sealed = data[-_TRAILER.size - sealed_length : -_TRAILER.size]
    aead = master.object_key(salt, pack_aead_purpose())
    header = open_sealed(aead, HEADER_NONCE, sealed, PACK_MAGIC, f"{what} header")
    (count,) = struct.unpack_from(">I", header)
    if len(header) != 4 + count * ENTRY.size:
        raise IntegrityError(f"{what}: pack header length does not match its entry count")
    entries = [PackEntry(*ENTRY.unpack_from(header, 4 + n * ENTRY.size)) for n in range(count)]
    return salt, entries


# --- index files ------------------------------------------------------------------------------------------------
_INDEX_PACK = struct.Struct(">16s32sQ")  # pack name | salt | pack size
_INDEX_ENTRY = struct.Struct(
    ">32sIBIIII"
)  # id | pack number in this file | flags | offset | stored | raw | counter


@dataclass(frozen=True)
class IndexedPack:
    name: str
    salt: bytes
    size: int


def encode_index(packs: list[tuple[IndexedPack, list[PackEntry]]]) -> bytes:
    parts = [struct.pack(">II", FORMAT_VERSION, len(packs))]
    for pack, _ in packs:
        parts.append(_INDEX_PACK.pack(bytes.fromhex(pack.name), pack.salt, pack.size))
    total = sum(len(entries) for _, entries in packs)
    parts.append(struct.pack(">I", total))
    for number, (_, entries) in enumerate(packs):
        for e in entries:
            parts.append(
                _INDEX_ENTRY.pack(
                    e.chunk_id, number, e.flags, e.offset, e.stored_length, e.raw_length, e.counter
                )
            )
    return b"".join(parts)


def decode_index(data: bytes, what: str) -> list[tuple[IndexedPack, list[PackEntry]]]:
    try:
        version, pack_count = struct.unpack_from(">II", data)
        if version != FORMAT_VERSION:
            raise IntegrityError(f"{what}: index format {version} is not supported")
        position = 8
        packs: list[tuple[IndexedPack, list[PackEntry]]] = []
        for _ in range(pack_count):
            name, salt, size = _INDEX_PACK.unpack_from(data, position)
            packs.append((IndexedPack(name.hex(), salt, size), []))
            position += _INDEX_PACK.size
        (total,) = struct.unpack_from(">I", data, position)
        position += 4
        for _ in range(total):
            chunk_id, number, flags, offset, stored, raw, counter = _INDEX_ENTRY.unpack_from(data, position)
            packs[number][1].append(PackEntry(chunk_id, flags, offset, stored, raw, counter))
            position += _INDEX_ENTRY.size
    except (struct.error, IndexError):
        raise IntegrityError(f"{what}: index file is malformed") from None
    if position != len(data):
        raise IntegrityError(f"{what}: index file has trailing bytes")
    return packs


@dataclass(frozen=True)
class PendingMarker:
    """Packs prune took out of the index. `completed_at` (microseconds, 0 while not yet) is stamped once no
    index file names them any more: only backups whose lease began before it can have deduplicated against
    them, so only those hold up their deletion."""

    marked_at: int
    completed_at: int
    packs: list[tuple[IndexedPack, list[PackEntry]]]


_PENDING_TIMES = struct.Struct(">QQ")


def encode_pending(marker: PendingMarker) -> bytes:
    return _PENDING_TIMES.pack(marker.marked_at, marker.completed_at) + encode_index(marker.packs)


def decode_pending(data: bytes, what: str) -> PendingMarker:
    if len(data) < _PENDING_TIMES.size:
        raise IntegrityError(f"{what}: pending marker is malformed")
    marked_at, completed_at = _PENDING_TIMES.unpack_from(data)
    return PendingMarker(marked_at, completed_at, decode_index(data[_PENDING_TIMES.size :], what))


_DAMAGED = struct.Struct(">32s16s")  # chunk id | pack name


def encode_damaged(pairs: list[tuple[bytes, str]]) -> bytes:
    return b"".join(_DAMAGED.pack(chunk_id, bytes.fromhex(pack)) for chunk_id, pack in pairs)


def decode_damaged(data: bytes, what: str) -> list[tuple[bytes, str]]:
    if len(data) % _DAMAGED.size:
        raise IntegrityError(f"{what}: damaged-chunk record is malformed")
    return [(chunk_id, pack.hex()) for chunk_id, pack in _DAMAGED.iter_unpack(data)]
