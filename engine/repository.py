"""A repository: config, key slots, packs, index files and snapshot manifests on one Storage.

Write order makes every crash safe: packs are stored first, then the index file naming them, then the
snapshot manifest last. A manifest therefore only references chunks in packs already stored; a crash leaves at
worst packs (or an index) that no snapshot uses, which verify reports and prune removes after a grace period.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine import format as fmt
from engine.crypto import (
    SCRYPT_N,
    SCRYPT_P,
    SCRYPT_R,
    MasterKey,
    config_mac,
    counter_nonce,
    open_sealed,
    passphrase_key,
)
from engine.errors import (
    EngineError,
    IntegrityError,
    ObjectMissing,
    RepositoryExists,
    RepositoryNotFound,
    StorageError,
    WrongPassphrase,
)
from engine.index import ChunkIndex, Location
from engine.locks import LEASE_SECONDS, LeaseHolder
from engine.progress import NullProgress, Progress
from engine.storage import Storage

CONFIG = "config"
KEYS = "keys/"
DATA = "data/"
INDEX = "index/"
SNAPSHOTS = "snapshots/"
PENDING = "pending/"
DAMAGED = "damaged/"

logger = logging.getLogger(__name__)

# Chosen by benchmarks/engine_vs_restic.py (see engine/FORMAT.md, "Sizes").
DEFAULT_BLOCK_SIZE = 64 * 1024
MAX_BLOCK_SIZE = 16 * 1024 * 1024
PACK_TARGET = 32 * 1024 * 1024
COMPRESSION_LEVEL = 1
# Store raw when zstd saves less than this fraction (already compressed or encrypted data).
INCOMPRESSIBLE_RATIO = 0.97
# Chunks this large are first tested on SAMPLE_COUNT slices of SAMPLE_BYTES (see _looks_incompressible).
SAMPLE_MIN_CHUNK = 32 * 1024
SAMPLE_COUNT = 8
SAMPLE_BYTES = 1024
UPLOAD_ATTEMPTS = 4


def now_utc() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_object_name() -> str:
    return os.urandom(16).hex()


def pack_key(name: str) -> str:
    return f"{DATA}{name[:2]}/{name}"


@dataclass(frozen=True)
class RepositoryConfig:
    version: int
    id: str
    block_size: int
    created: str

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def parse(cls, data: bytes, where: str) -> RepositoryConfig:
        """The config as stored, checked field by field: a damaged one is refused with the reason, never used
        with a wrong block size."""
        try:
            fields = json.loads(data)
            if not isinstance(fields, dict) or set(fields) != {"version", "id", "block_size", "created"}:
                raise ValueError("fields are not version, id, block_size, created")
            config = cls(**fields)
            if not isinstance(config.version, int) or not isinstance(config.block_size, int):
                raise ValueError("version and block_size must be numbers")
            if config.version != fmt.FORMAT_VERSION:
                raise RepositoryNotFound(
                    f"repository format {config.version} is not supported by this version"
                )
            if not (isinstance(config.id, str) and len(config.id) == 32 and int(config.id, 16) >= 0):
                raise ValueError("id is not 32 hex digits")
            if not 4096 <= config.block_size <= MAX_BLOCK_SIZE or config.block_size & (config.block_size - 1):
                raise ValueError(f"block size {config.block_size} is not a power of two from 4 KiB to 16 MiB")
            datetime.datetime.fromisoformat(config.created)
        except (ValueError, TypeError) as error:
            raise IntegrityError(f"the config of the repository at {where} is damaged: {error}") from None
        return config


@dataclass(frozen=True)
class KeySlot:
    id: str
    label: str
    created: str


@dataclass
class WriteStats:
    new_chunks: int = 0
    new_bytes: int = 0  # plaintext bytes of chunks stored for the first time
    stored_bytes: int = 0  # what they take in packs (compressed, encrypted)
    reused_chunks: int = 0
    reused_bytes: int = 0
    zero_bytes: int = 0  # all-zero blocks, not stored at all


@dataclass
class Snapshot:
    """A committed recovery point: the manifest, as stored under snapshots/<id>."""

    id: str
    kind: str  # "image" or "files"
    time: str
    hostname: str
    machine: str
    tags: list[str]
    parent: str | None
    disks: list[dict[str, Any]] = field(default_factory=list)
    tree: str | None = None  # hex id of the root tree chunk, for file snapshots
    stats: dict[str, int] = field(default_factory=dict)
    version: int = fmt.FORMAT_VERSION
    # What went wrong without stopping the backup (a disk that ended early, files that could not be read): a
    # snapshot committed "with warnings" says so wherever it is shown.
    warnings: list[str] = field(default_factory=list)

    @property
    def taken_at(self) -> datetime.datetime:
        return datetime.datetime.fromisoformat(self.time)

    def disk(self, name: str) -> dict[str, Any]:
        for disk in self.disks:
            if disk["name"] == name:
                return disk
        raise KeyError(f"snapshot {self.id} has no disk {name!r}")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Snapshot:
        return cls(**json.loads(data))


def new_snapshot_id(when: datetime.datetime) -> str:
    # Sortable by time, unique without coordination.
    return f"{when:%Y%m%dT%H%M%S}Z-{os.urandom(4).hex()}"


class Repository:
    def __init__(self, storage: Storage, master: MasterKey, config: RepositoryConfig, slot: str) -> None:
        self.storage = storage
        self.master = master
        self.config = config
        self.opened_with = slot
        # Size at which a pack is closed; tests lower it to get many packs from small images.
        self.pack_target = PACK_TARGET
        # Pack uploads that fail are retried UPLOAD_ATTEMPTS times, waiting this long, doubled each time.
        self.upload_retry_delay = 0.5
        # How long a backup's lease lives without a refresh (a killed backup blocks prune at most this long).
        self.lease_seconds = LEASE_SECONDS
        # During a long backup, an index file naming the packs stored so far is written at most this often, so
        # a backup killed half-way leaves its chunks findable: the next one reuses them instead of storing again.
        self.index_checkpoint_seconds = 60.0
        # Immutable copies: packs and manifests are stored with an Object Lock retention this long (on the
        # storage's clock). Index files are not locked: they can always be rebuilt from the packs.
        self.retain_for: datetime.timedelta | None = None
        # The chunk index as loaded from the index files named in `_index_files` (one view, replaced whole when
        # a prune or rebuild removed index files since it was loaded).
        self._index: ChunkIndex | None = None
        self._index_files: set[str] = set()
        self._index_lock = threading.Lock()
        self._pending: ChunkIndex | None = None
        self._damaged: set[tuple[bytes, str]] | None = None
        # How many times the index was reloaded because index files disappeared (a prune or rebuild elsewhere).
        self.index_generation = 0
        # Objects that could not be read and were skipped (named, so verify and the logs can say which).
        self.unreadable: dict[str, str] = {}

    # --- creation and keys ------------------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        storage: Storage,
        passphrase: str,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        label: str = "initial",
    ) -> Repository:
        if storage.stat(CONFIG) is not None:
            raise RepositoryExists(f"a repository exists already at {storage.describe()}")
        if not 4096 <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1):
            raise ValueError("block size must be a power of two from 4096 bytes to 16 MiB")
        master = MasterKey.generate()
        config = RepositoryConfig(fmt.FORMAT_VERSION, uuid.uuid4().hex, block_size, now_utc().isoformat())
        repository = cls(storage, master, config, "")
        slot = repository.add_key(passphrase, label=label)
        repository.opened_with = slot
        storage.put(CONFIG, config.to_json())  # last: a repository exists once it has a config and a key
        return repository

    @classmethod
    def open(cls, storage: Storage, passphrase: str) -> Repository:
        try:
            config_data = storage.get(CONFIG)
        except ObjectMissing:
            raise RepositoryNotFound(f"no repository at {storage.describe()}") from None
        config = RepositoryConfig.parse(config_data, storage.describe())
        unreadable = []
        for info in storage.list(KEYS):
            try:
                slot = json.loads(storage.get(info.key))
                salt, wrapped = base64.b64decode(slot["salt"]), base64.b64decode(slot["wrapped"])
                n, r, p = int(slot["n"]), int(slot["r"]), int(slot["p"])
                if not (2 <= n <= 2**22 and n & (n - 1) == 0 and 1 <= r <= 64 and 1 <= p <= 16):
                    raise ValueError("scrypt parameters out of range")
            except (ValueError, KeyError, TypeError, ObjectMissing) as error:
                # A damaged or stray file must not lock everyone out: name it, try the other slots.
                logger.warning("skipping unreadable key slot %s: %s", info.key, error)
                unreadable.append(info.key)
                continue
            aead = passphrase_key(passphrase, salt, n, r, p)
            try:
                material = open_sealed(aead, counter_nonce(0), wrapped, config.id.encode(), "key slot")
            except IntegrityError:
                continue
            master = MasterKey.from_bytes(material)
            mac = slot.get("config_mac")
            if mac is not None and not hmac.compare_digest(
                base64.b64decode(str(mac)), config_mac(master, config_data)
            ):
                raise IntegrityError(
                    f"the config of the repository at {storage.describe()} was changed since it was created "
                    "(it no longer matches what its key slots vouch for): refusing to use it"
                )
            return cls(storage, master, config, info.key[len(KEYS) :])
        skipped = (
            f" ({len(unreadable)} unreadable key slot(s) skipped: {', '.join(unreadable)})"
            if unreadable
            else ""
        )
        raise WrongPassphrase(
            f"no key of the repository at {storage.describe()} opens with this passphrase{skipped}"
        )

    def key_slots(self) -> list[KeySlot]:
        slots = []
        for info in self.storage.list(KEYS):
            try:
                slot = json.loads(self.storage.get(info.key))
                slots.append(KeySlot(info.key[len(KEYS) :], str(slot["label"]), str(slot["created"])))
            except (ValueError, KeyError, TypeError, ObjectMissing):
                slots.append(KeySlot(info.key[len(KEYS) :], "(unreadable)", ""))
        return slots

    def add_key(self, passphrase: str, *, label: str) -> str:
        """Wrap the master key with a new passphrase in a new slot; no data is rewritten."""
        if not passphrase:
            raise ValueError("a passphrase must not be empty")
        salt = os.urandom(32)
        aead = passphrase_key(passphrase, salt)
        wrapped = aead.encrypt(counter_nonce(0), self.master.to_bytes(), self.config.id.encode())
        slot_id = new_object_name()
        slot = {
            "kdf": "scrypt",
            "n": SCRYPT_N,
            "r": SCRYPT_R,
            "p": SCRYPT_P,
            "salt": base64.b64encode(salt).decode(),
            "wrapped": base64.b64encode(wrapped).decode(),
            "label": label,
            "created": now_utc().isoformat(),
            # Vouches for the config: a key slot can only be written by someone holding the master key.
            "config_mac": base64.b64encode(config_mac(self.master, self.config.to_json())).decode(),
        }
        self.storage.put(KEYS + slot_id, json.dumps(slot, indent=1).encode())
        return slot_id

    def remove_key(self, slot_id: str) -> None:
        if slot_id not in {slot.id for slot in self.key_slots()}:
            raise KeyError(f"no key slot {slot_id!r} in this repository")
        others = [slot for slot in self.key_slots() if slot.id != slot_id and slot.label != "(unreadable)"]
        if not others:
            raise ValueError("refusing to remove the last key: the repository would become unreadable")
        self.storage.delete(KEYS + slot_id)

    def change_passphrase(self, new_passphrase: str, *, label: str = "changed") -> str:
        """Replace the slot this repository was opened with by one for the new passphrase."""
        new_slot = self.add_key(new_passphrase, label=label)
        old_slot, self.opened_with = self.opened_with, new_slot
        self.storage.delete(KEYS + old_slot)
        return new_slot

    # --- index --------------------------------------------------------------------------------------------------
    @property
    def index(self) -> ChunkIndex:
        with self._index_lock:
            if self._index is None:
                self._index, self._index_files = self._load_view()
            return self._index

    def refresh_index(self) -> ChunkIndex:
        """The index as the index files stand now: files written since the last look are added, and when any
        file loaded before has gone (a prune or rebuild replaced it), the whole index is reloaded, so packs
        that prune has set aside or deleted are never deduplicated against again."""
        with self._index_lock:
            self._pending = None  # prune's markers and verify's damage records may have changed too
            self._damaged = None
            if self._index is None:
                self._index, self._index_files = self._load_view()
                return self._index
            listed = {info.key for info in self.storage.list(INDEX)}
            if not self._index_files <= listed:
                self._index, self._index_files = self._load_view(listed)
                self.index_generation += 1
                return self._index
            for key in sorted(listed - self._index_files):
                self._add_index_file(self._index, key)
                self._index_files.add(key)
            return self._index

    def forget_cached_index(self) -> None:
        """Drop the in-memory index; the next use reloads it from the index files."""
        with self._index_lock:
            self._index = None
            self._index_files = set()
            self._pending = None
            self._damaged = None

    def _load_view(self, keys: set[str] | None = None) -> tuple[ChunkIndex, set[str]]:
        index = ChunkIndex()
        keys = {info.key for info in self.storage.list(INDEX)} if keys is None else keys
        for key in sorted(keys):
            self._add_index_file(index, key)
        return index, set(keys)

    def _add_index_file(self, index: ChunkIndex, key: str) -> None:
        """One index file into `index`; an unreadable one is skipped and named (its chunks are stored again by
        the next backup that needs them; verify reports it, rebuild-index replaces it)."""
        try:
            index.add_packs(self.read_index_file(key))
        except ObjectMissing:
            return  # removed between the listing and the read: the next refresh notices
        except IntegrityError as error:
            if key not in self.unreadable:
                logger.warning("skipping unreadable index file %s: %s", key, error)
            self.unreadable[key] = str(error)

    def read_index_file(self, key: str) -> list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]]:
        data = self.storage.get(key)
        return fmt.decode_index(fmt.open_object(self.master, fmt.KIND_INDEX, data, key), key)

    def write_index_file(self, packs: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]]) -> str:
        key = INDEX + new_object_name()
        sealed = fmt.seal_object(self.master, fmt.KIND_INDEX, fmt.encode_index(packs))
        self.storage.put(key, sealed)
        self.confirm_stored(key, len(sealed), sealed[-64:])
        with self._index_lock:
            if self._index is not None:  # else the next load reads this file with the others
                self._index.add_packs(packs)
                self._index_files.add(key)
        return key

    # --- chunks -------------------------------------------------------------------------------------------------
    def read_pending(self) -> list[tuple[str, fmt.PendingMarker]]:
        """Prune's pending markers, by key."""
        markers = []
        for info in self.storage.list(PENDING):
            try:
                data = fmt.open_object(self.master, fmt.KIND_PENDING, self.storage.get(info.key), info.key)
            except ObjectMissing:
                continue  # removed by a prune between the listing and the read
            markers.append((info.key, fmt.decode_pending(data, info.key)))
        return markers

    def write_pending(self, key: str, marker: fmt.PendingMarker) -> None:
        self.storage.put(key, fmt.seal_object(self.master, fmt.KIND_PENDING, fmt.encode_pending(marker)))

    def pending_index(self) -> ChunkIndex:
        """Chunks in packs prune has set aside but not yet deleted (cached until the next refresh)."""
        with self._index_lock:
            if self._pending is None:
                pending = ChunkIndex()
                try:
                    for _, marker in self.read_pending():
                        pending.add_packs(marker.packs)
                except EngineError as error:
                    logger.warning("skipping unreadable pending markers: %s", error)
                self._pending = pending
            return self._pending

    # --- damaged copies ------------------------------------------------------------------------------------------
    def damaged_locations(self) -> set[tuple[bytes, str]]:
        """(chunk id, pack name) of every copy verify found damaged or missing: never deduplicated against (the
        next backup that meets the chunk stores it again) and never read while another copy exists."""
        with self._index_lock:
            if self._damaged is None:
                self._damaged = set()
                for _, pairs in self.read_damaged():
                    self._damaged.update(pairs)
            return self._damaged

    def read_damaged(self) -> list[tuple[str, list[tuple[bytes, str]]]]:
        records = []
        for info in self.storage.list(DAMAGED):
            try:
                data = fmt.open_object(self.master, fmt.KIND_DAMAGED, self.storage.get(info.key), info.key)
                records.append((info.key, fmt.decode_damaged(data, info.key)))
            except ObjectMissing:
                continue
            except IntegrityError as error:
                if info.key not in self.unreadable:
                    logger.warning("skipping unreadable damage record %s: %s", info.key, error)
                self.unreadable[info.key] = str(error)
        return records

    def record_damaged(self, pairs: Iterable[tuple[bytes, str]]) -> int:
        """Remember damaged or missing copies (verify's findings); returns how many were new."""
        new = sorted(set(pairs) - self.damaged_locations())
        if new:
            self.write_damaged(new)
        return len(new)

    def write_damaged(self, pairs: list[tuple[bytes, str]]) -> str:
        """One damage record holding these copies; returns its key."""
        key = DAMAGED + new_object_name()
        self.storage.put(key, fmt.seal_object(self.master, fmt.KIND_DAMAGED, fmt.encode_damaged(pairs)))
        with self._index_lock:
            self._damaged = None
        return key

    def good_location(
        self,
        chunk_id: bytes,
        index: ChunkIndex | None = None,
        damaged: set[tuple[bytes, str]] | None = None,
    ) -> Location | None:
        """Where to read (or deduplicate against) a chunk: a copy not recorded as damaged (`damaged`: the
        records as the caller read them, else as they are now)."""
        index = index if index is not None else self.index
        location = index.lookup(chunk_id)
        bad = damaged if damaged is not None else self.damaged_locations()
        if location is None or not bad or (chunk_id, location.pack.name) not in bad:
            return location
        for candidate in index.lookup_all(chunk_id):
            if (chunk_id, candidate.pack.name) not in bad:
                return candidate
        return None

    def locate(self, chunk_id: bytes) -> Location:
        location = self.good_location(chunk_id)
        if location is None:
            location = self.good_location(chunk_id, self.refresh_index())
        if location is None:
            # A pack prune has set aside but not yet deleted still holds good data (a backup that started
            # before prune marked it may have used it).
            location = self.pending_index().lookup(chunk_id)
        if location is None:
            raise ObjectMissing(f"chunk {chunk_id.hex()} is not in the index")
        return location

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """The plaintext of a chunk, authenticated and checked against its id. When its pack has gone or moved
        (another process repacked or pruned since the index was loaded), the index is refreshed and the chunk
        read from where it is now."""
        location = self.locate(chunk_id)
        try:
            return self._read_at(chunk_id, location)
        except (ObjectMissing, IntegrityError):
            index = self.refresh_index()
            # Moved since (a repack elsewhere), or another copy of it (a damaged one healed by a later backup).
            for candidate in [self.locate(chunk_id), *index.lookup_all(chunk_id)]:
                if candidate != location:
                    try:
                        return self._read_at(chunk_id, candidate)
                    except (ObjectMissing, IntegrityError):
                        continue
            raise

    def _read_at(self, chunk_id: bytes, location: Location) -> bytes:
        key = pack_key(location.pack.name)
        blob = self.storage.get(key, location.entry.offset, location.entry.stored_length)
        return fmt.open_chunk(
            self.master, location.pack.salt, location.entry, blob, f"chunk {chunk_id.hex()} in {key}"
        )

    # --- snapshots ----------------------------------------------------------------------------------------------
    def snapshot_ids(self) -> list[str]:
        return sorted(info.key[len(SNAPSHOTS) :] for info in self.storage.list(SNAPSHOTS))

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        key = SNAPSHOTS + snapshot_id
        data = self.storage.get(key)
        plaintext = fmt.open_object(self.master, fmt.KIND_SNAPSHOT, data, key)
        try:
            snapshot = Snapshot.from_json(plaintext)
            if not isinstance(snapshot.disks, list) or not isinstance(snapshot.time, str):
                raise TypeError("disks must be a list and time a string")
            snapshot.taken_at  # noqa: B018  (a time that parses)
        except (ValueError, TypeError, KeyError) as error:
            raise IntegrityError(f"{key}: not a valid manifest: {error}") from None
        if snapshot.id != snapshot_id:
            raise IntegrityError(f"{key}: manifest names itself {snapshot.id}")
        return snapshot

    def snapshots(self) -> list[Snapshot]:
        """Every snapshot whose manifest reads; the others are skipped and named in `unreadable` (verify
        reports them; `forget <id>` removes one)."""
        snapshots = []
        for snapshot_id in self.snapshot_ids():
            try:
                snapshots.append(self.load_snapshot(snapshot_id))
            except ObjectMissing:
                continue  # forgotten since the listing
            except IntegrityError as error:
                if SNAPSHOTS + snapshot_id not in self.unreadable:
                    logger.warning("skipping unreadable snapshot %s: %s", snapshot_id, error)
                self.unreadable[SNAPSHOTS + snapshot_id] = str(error)
        return snapshots

    def retain_until(self) -> datetime.datetime | None:
        return self.storage.now() + self.retain_for if self.retain_for else None

    def commit_snapshot(self, snapshot: Snapshot) -> None:
        """Write a manifest: the last step of a backup, after its packs and index are stored."""
        sealed = fmt.seal_object(self.master, fmt.KIND_SNAPSHOT, snapshot.to_json())
        self.storage.put(SNAPSHOTS + snapshot.id, sealed, retain_until=self.retain_until())
        self.confirm_stored(SNAPSHOTS + snapshot.id, len(sealed), sealed)

    def confirm_stored(self, key: str, size: int, tail: bytes) -> None:
        """A write is trusted only once read back: the object exists with its size and ends with `tail` (a
        pack's sealed header, or a whole small object). Storage that drops a write or keeps zero bytes (restic
        #3646, #2191) is caught here, before any index or manifest names the object."""
        info = self.storage.stat(key)
        problem = None
        if info is None:
            problem = "it is not there"
        elif info.size != size:
            problem = f"{info.size} bytes are there, not {size}"
        else:
            try:
                if self.storage.get(key, size - len(tail), len(tail)) != tail:
                    problem = "it reads back different from what was written"
            except ObjectMissing as error:
                problem = str(error)
        if problem is not None:
            raise StorageError(f"{key} was not stored intact on {self.storage.describe()}: {problem}")

    def forget_snapshot(self, snapshot_id: str) -> None:
        self.storage.delete(SNAPSHOTS + snapshot_id)

    def writer(
        self, *, threads: int = 2, progress: Progress | None = None, lease: bool = True
    ) -> ChunkWriter:
        """A chunk writer; `lease=False` when the caller already holds a backup lease that covers it (an agent's
        session, renewed across its calls)."""
        return ChunkWriter(self, threads=threads, progress=progress, lease=lease)


_worker_state = threading.local()


def _compress_and_seal(
    aead: AESGCM, counter: int, chunk_id: bytes, flags: int, data: bytes, compressed: bytes | None = None
) -> tuple[int, bytes]:
    """On a worker thread: zstd (kept raw when it saves too little), then encryption. Both release the GIL.
    A zstd frame compressed elsewhere (an agent's, checked to decompress to `data`) is sealed as it is."""
    if compressed is not None:
        if len(compressed) < len(data) * INCOMPRESSIBLE_RATIO:
            flags, data = flags | fmt.FLAG_ZSTD, compressed
        return flags, fmt.seal_chunk(aead, counter, chunk_id, flags, data)
    compressor = getattr(_worker_state, "compressor", None)
    if compressor is None:  # one context per thread: they are not thread-safe, and cost to make
        compressor = _worker_state.compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
    if not _looks_incompressible(compressor, data):
        compressed = compressor.compress(data)
        if len(compressed) < len(data) * INCOMPRESSIBLE_RATIO:
            flags, data = flags | fmt.FLAG_ZSTD, compressed
    return flags, fmt.seal_chunk(aead, counter, chunk_id, flags, data)


# A pool task seals a group of chunks: this many bytes, or this many chunks, whichever comes first.
GROUP_BYTES = 1024 * 1024
GROUP_CHUNKS = 16


@dataclass(eq=False)
class _InFlight:
    """A chunk on its way into a pack: reserved in `pack` at `counter`, sealed by its group's task."""

    pack: fmt.PackBuilder
    chunk_id: bytes
    counter: int
    flags: int
    data: bytes
    compressed: bytes | None
    future: Future[list[tuple[int, bytes]]] | None = None
    position: int = 0


def _seal_group(group: list[_InFlight]) -> list[tuple[int, bytes]]:
    """On a worker thread: compress and seal each chunk of a group (one hand-off for many chunks)."""
    return [
        _compress_and_seal(
            item.pack.aead, item.counter, item.chunk_id, item.flags, item.data, item.compressed
        )
        for item in group
    ]


def _looks_incompressible(compressor: zstandard.ZstdCompressor, data: bytes) -> bool:
    """True when evenly spread samples of a large chunk do not compress at all (encrypted, compressed or
    random data): compressing the whole chunk would cost its full zstd time for nothing. A chunk with any
    compressible sample is compressed whole (the same idea as borg's "auto" compression)."""
    if len(data) < SAMPLE_MIN_CHUNK:
        return False
    step = len(data) // SAMPLE_COUNT
    sample = b"".join(data[i * step : i * step + SAMPLE_BYTES] for i in range(SAMPLE_COUNT))
    return len(compressor.compress(sample)) >= len(sample) * INCOMPRESSIBLE_RATIO


class ChunkWriter:
    """Stores chunks for one backup: deduplicates, compresses on a thread pool, fills packs, uploads them in
    the background, and writes an index file on flush(). Memory stays bounded: a fixed number of chunks in
    flight and at most two packs waiting for upload."""

    def __init__(
        self, repository: Repository, *, threads: int, progress: Progress | None, lease: bool = True
    ) -> None:
        self.repository = repository
        self.progress = progress or NullProgress()
        self.stats = WriteStats()
        # The lease first, then the index: every pack this writer deduplicates against was in an index file
        # after its lease began, so prune (which deletes only packs set aside before every live lease began)
        # cannot delete it while this writer may still reference it. See FORMAT.md, "The prune invariant".
        self._lease = (
            LeaseHolder(repository.storage, "backup", seconds=repository.lease_seconds).acquire()
            if lease
            else None
        )
        self._index = repository.refresh_index()
        # Copies verify found damaged: a chunk whose only copies are these is stored again (healed).
        self._damaged = repository.damaged_locations()
        # Chunks prune has set aside (in no index, not deleted yet): ids inherited from a parent snapshot that
        # fall in here are stored again, since the pack may be deleted before this snapshot commits.
        self._pending = repository.pending_index()
        self._pending_ids: frozenset[bytes] | None = None
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="compress")
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload")
        # Chunks being compressed and sealed, in the order they are placed into their packs.
        self._inflight: deque[_InFlight] = deque()
        self._inflight_bytes = 0
        # Chunks go to the pool in groups (one task per ~1 MiB, not per 64 KiB block: fewer thread hand-offs);
        # at most this many bytes are being compressed and sealed at once.
        self._max_inflight_bytes = max(1, threads) * 8 * GROUP_BYTES
        self._group: list[_InFlight] = []
        self._group_bytes = 0
        self._streaming: dict[str, fmt.PackBuilder] = {}  # packs being written to storage, not yet committed
        self._session: set[bytes] = set()
        self._pack: fmt.PackBuilder | None = None
        self._uploads: deque[Future[tuple[fmt.IndexedPack, list[fmt.PackEntry]]]] = deque()
        self._stored: list[tuple[fmt.IndexedPack, list[fmt.PackEntry]]] = []
        self._closed = False
        self._last_index = time.monotonic()
        self._pack_opened = time.monotonic()

    def add(
        self,
        data: bytes,
        *,
        meta: bool = False,
        force: bool = False,
        compressed: bytes | None = None,
        chunk_id: bytes | None = None,
    ) -> bytes:
        """Store a chunk unless the repository has it already; returns its id. `force` stores it again even
        if the index has it (prune copying live chunks out of a mostly unused pack). `compressed`: a zstd frame
        the caller has checked decompresses to `data`, stored instead of compressing again. `chunk_id`: the id
        the caller computed already with this repository's key (the engine's own readers hash on threads)."""
        chunk_id = chunk_id or self.repository.master.chunk_id_of(data)
        if chunk_id in self._session or (not force and self._stored_well(chunk_id)):
            self.stats.reused_chunks += 1
            self.stats.reused_bytes += len(data)
            return chunk_id
        self._session.add(chunk_id)
        if self._pack is None:
            self._pack = fmt.PackBuilder(self.repository.master)
            self._pack_opened = time.monotonic()
            open_writer = getattr(self.repository.storage, "open_writer", None)
            if open_writer is not None:  # a storage that takes an object piece by piece: stream the pack
                self._pack.sink = open_writer(pack_key(self._pack.name))
                self._streaming[self._pack.name] = self._pack
        pack = self._pack
        counter = pack.reserve(len(data))
        old = time.monotonic() - self._pack_opened >= self.repository.index_checkpoint_seconds
        if pack.projected_size >= self.repository.pack_target or old:
            # Full once the chunks in flight land (or open for a checkpoint interval already: a slow backup
            # still gets its data into stored, indexed packs): later chunks open a new pack.
            self._pack = None
        flags = fmt.FLAG_META if meta else 0
        item = _InFlight(pack, chunk_id, counter, flags, data, compressed)
        self._inflight.append(item)
        self._inflight_bytes += len(data)
        self._group.append(item)
        self._group_bytes += len(data)
        if self._group_bytes >= GROUP_BYTES or len(self._group) >= GROUP_CHUNKS:
            self._submit_group()
        if old:
            # A checkpoint is due: seal this pack now rather than when the chunks in flight behind it drain,
            # so a slow backup killed later still leaves its data stored and indexed.
            self._submit_group()
            while self._inflight:  # all of this pack's chunks, and any of older packs ahead of them
                self._place_oldest()
        while self._inflight_bytes > self._max_inflight_bytes and len(self._inflight) > 1:
            self._place_oldest()
        return chunk_id

    def _stored_well(self, chunk_id: bytes) -> bool:
        """The repository has a copy of this chunk that is not recorded as damaged."""
        return self.repository.good_location(chunk_id, self._index, self._damaged) is not None

    def inherit(self, chunk_id: bytes) -> bytes:
        """A chunk id taken over from the parent snapshot without reading its data (an unchanged block or
        file). When prune has set its pack aside since, the chunk is copied into this backup's own packs:
        the set-aside pack may be deleted before this snapshot commits."""
        if chunk_id not in self.pending_ids():
            return chunk_id
        location = self._pending.lookup(chunk_id)
        if location is not None and chunk_id not in self._session and self._index.lookup(chunk_id) is None:
            data = self.repository._read_at(chunk_id, location)
            self.add(data, meta=bool(location.entry.flags & fmt.FLAG_META), force=True, chunk_id=chunk_id)
        return chunk_id

    def pending_ids(self) -> frozenset[bytes]:
        """The ids of chunks in packs prune has set aside (usually few, often none): an inherited id outside
        this set needs no inherit() call."""
        if self._pending_ids is None:
            self._pending_ids = frozenset(location.entry.chunk_id for location in self._pending.locations())
        return self._pending_ids

    def check_lease(self) -> None:
        """Before a manifest names what this writer deduplicated against: its lease must have been held the
        whole time (a process stopped for longer than the lease could have let a prune delete those packs)."""
        if self._lease is not None:
            self._lease.check_held()

    def _submit_group(self) -> None:
        if not self._group:
            return
        group, self._group, self._group_bytes = self._group, [], 0
        future = self._pool.submit(_seal_group, group)
        for position, item in enumerate(group):
            item.future, item.position = future, position

    def _place_oldest(self) -> None:
        item = self._inflight.popleft()
        if item.future is None:
            self._submit_group()  # its group was still filling
        assert item.future is not None
        flags, blob = item.future.result()[item.position]
        pack, chunk_id, counter, raw_length = item.pack, item.chunk_id, item.counter, len(item.data)
        self._inflight_bytes -= raw_length
        item.data = item.compressed = None  # type: ignore[assignment]  # sealed: the plaintext can go
        entry = pack.place(chunk_id, flags, blob, raw_length, counter)
        self.stats.new_chunks += 1
        self.stats.new_bytes += raw_length
        self.stats.stored_bytes += entry.stored_length
        if pack is not self._pack and len(pack.entries) == pack.reserved:
            self._seal_pack(pack)  # a closed pack's last chunk in flight has landed
        while self._uploads and self._uploads[0].done():
            self._collect_upload()  # note stored packs as they land (and checkpoint the index in time)

    def _seal_pack(self, pack: fmt.PackBuilder) -> None:
        if not pack.entries:
            return
        # At most two packs wait for upload: the writer slows down rather than buffer without bound.
        while len(self._uploads) >= 2:
            self._collect_upload()
        self._uploads.append(self._uploader.submit(self._upload, pack))

    def _upload(self, pack: fmt.PackBuilder) -> tuple[fmt.IndexedPack, list[fmt.PackEntry]]:
        """On the upload thread: a streamed pack gets its header and is committed (fsync, rename); another is
        joined (tens of MiB of copying the writer need not wait for) and stored, retrying."""
        if pack.sink is not None:
            size, tail = pack.finish_streamed()
            pack.sink.commit()
            self.repository.confirm_stored(pack_key(pack.name), size, tail)
            return fmt.IndexedPack(pack.name, pack.salt, size), pack.entries
        data = pack.build()
        indexed, entries = fmt.IndexedPack(pack.name, pack.salt, len(data)), pack.entries
        key = pack_key(indexed.name)
        tail = data[-pack.tail_length() :]
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                self.repository.storage.put(key, data, retain_until=self.repository.retain_until())
                self.repository.confirm_stored(key, len(data), tail)
                return indexed, entries
            except StorageError:
                if attempt == UPLOAD_ATTEMPTS:
                    raise
                time.sleep(min(self.repository.upload_retry_delay * 2 ** (attempt - 1), 8))
        raise AssertionError("unreachable")

    def _collect_upload(self) -> None:
        stored = self._uploads.popleft().result()  # raises the upload's StorageError
        self._streaming.pop(stored[0].name, None)
        self._stored.append(stored)
        now = time.monotonic()
        if now - self._last_index >= self.repository.index_checkpoint_seconds:
            self.repository.write_index_file(self._stored)
            self._stored = []
            self._last_index = now

    def store_packs(self) -> None:
        """Wait until every chunk added so far sits in a pack confirmed stored (no index file yet)."""
        while self._inflight:
            self._place_oldest()
        if self._pack is not None:
            pack, self._pack = self._pack, None
            self._seal_pack(pack)
        while self._uploads:
            self._collect_upload()

    def flush(self) -> None:
        """Store everything added so far and write the index file naming it."""
        self.store_packs()
        if self._stored:
            self.repository.write_index_file(self._stored)
            self._stored = []

    def abort(self) -> None:
        """Give up, keeping what is stored: packs already confirmed stored get an index file, so the next
        backup reuses their chunks instead of storing them again (and prune sees them as unused, not orphans)."""
        if self._closed:
            return
        try:
            while self._uploads and self._uploads[0].done() and self._uploads[0].exception() is None:
                self._collect_upload()
            if self._stored:
                self.repository.write_index_file(self._stored)
                self._stored = []
        except EngineError:
            logger.warning(
                "could not index the packs of an aborted backup; prune removes them", exc_info=True
            )
        finally:
            self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._uploader.shutdown(wait=True, cancel_futures=True)
            for pack in self._streaming.values():  # never committed (an abort): no half-written pack stays
                if pack.sink is not None and getattr(pack.sink, "descriptor", None) is not None:
                    pack.sink.abort()
            if self._lease is not None:
                self._lease.release()

    def __enter__(self) -> ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def hostname() -> str:
    return socket.gethostname()


class SnapshotWriter:
    """What every backup shares: a chunk writer, and a commit that stores the last chunks and the index
    before the manifest (from then on the snapshot exists), or an abort that writes no manifest."""

    def __init__(
        self,
        repository: Repository,
        *,
        machine: str,
        parent: Snapshot | None = None,
        tags: Iterable[str] = (),
        threads: int = 2,
        progress: Progress | None = None,
    ) -> None:
        self.repository = repository
        self.machine = machine
        self.parent = parent
        self.tags = list(tags)
        self.progress = progress or NullProgress()
        self.warnings: list[str] = []
        self.chunks = repository.writer(threads=threads, progress=self.progress)
        # The parent is read before this writer's lease: if it was forgotten (and pruned) in between, its
        # chunks may be gone, and nothing may be taken over from it.
        if parent is not None and repository.storage.stat(SNAPSHOTS + parent.id) is None:
            self.chunks.close()
            raise ObjectMissing(
                f"the parent snapshot {parent.id} was forgotten as this backup started; read every block"
            )

    def _commit(self, kind: str, stats: dict[str, int], **content: Any) -> Snapshot:
        self.chunks.flush()
        self.chunks.check_lease()
        when = now_utc()
        snapshot = Snapshot(
            id=new_snapshot_id(when),
            kind=kind,
            time=when.isoformat(),
            hostname=hostname(),
            machine=self.machine,
            tags=self.tags,
            parent=self.parent.id if self.parent else None,
            stats={
                "new_bytes": self.chunks.stats.new_bytes,
                "stored_bytes": self.chunks.stats.stored_bytes,
                "reused_bytes": self.chunks.stats.reused_bytes,
                **stats,
            },
            warnings=list(self.warnings),
            **content,
        )
        self.repository.commit_snapshot(snapshot)
        self.chunks.close()
        return snapshot

    def abort(self) -> None:
        """Give up: no snapshot is written; chunks already stored are indexed (a later backup reuses them)."""
        self.chunks.abort()
