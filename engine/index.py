"""The chunk index in memory: chunk id -> (pack, entry), compact enough for millions of chunks.

Loaded index files become sorted runs of fixed 53-byte records with a 65,536-slot table on the first two id
bytes (ids are uniform, so a lookup scans a handful of records). New entries wait in a small dict that is
folded into a run every 64k entries. About 53 bytes per chunk plus 256 KiB per run, against ~250 bytes for a
dict of tuples.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from engine.format import IndexedPack, PackEntry

RECORD = struct.Struct(">32sIBIIII")  # id | pack number | flags | offset | stored | raw | counter
PREFIX_SLOTS = 65536
RECENT_LIMIT = 65536
# Batches smaller than this join the dict of recent entries instead of becoming a sorted run.
SMALL_BATCH = 16384


@dataclass(frozen=True)
class Location:
    pack: IndexedPack
    entry: PackEntry


class _Run:
    """An immutable sorted block of records."""

    __slots__ = ("count", "records", "starts")

    def __init__(self, rows: list[tuple[bytes, int, PackEntry]]) -> None:
        rows.sort(key=lambda row: row[0])
        self.records = b"".join(
            RECORD.pack(i, n, e.flags, e.offset, e.stored_length, e.raw_length, e.counter) for i, n, e in rows
        )
        self.count = len(rows)
        self.starts = array("I", [0]) * (PREFIX_SLOTS + 1)
        slot = 0
        for position, (chunk_id, _, _) in enumerate(rows):
            prefix = chunk_id[0] << 8 | chunk_id[1]
            while slot <= prefix:
                self.starts[slot] = position
                slot += 1
        while slot <= PREFIX_SLOTS:
            self.starts[slot] = self.count
            slot += 1

    def find(self, chunk_id: bytes) -> tuple[int, PackEntry] | None:
        prefix = chunk_id[0] << 8 | chunk_id[1]
        low, high = self.starts[prefix], self.starts[prefix + 1]
        records, size = self.records, RECORD.size
        while low < high:  # binary search over the packed records themselves
            middle = (low + high) // 2
            candidate = records[middle * size : middle * size + 32]
            if candidate < chunk_id:
                low = middle + 1
            elif candidate > chunk_id:
                high = middle
            else:
                _, number, flags, offset, stored, raw, counter = RECORD.unpack_from(records, middle * size)
                return number, PackEntry(chunk_id, flags, offset, stored, raw, counter)
        return None

    def find_all(self, chunk_id: bytes) -> list[tuple[int, PackEntry]]:
        """Every record of this id (a run can hold one id more than once: two packs with the same chunk)."""
        prefix = chunk_id[0] << 8 | chunk_id[1]
        low, high = self.starts[prefix], self.starts[prefix + 1]
        records, size = self.records, RECORD.size
        while low < high:  # the leftmost record not below the id
            middle = (low + high) // 2
            if records[middle * size : middle * size + 32] < chunk_id:
                low = middle + 1
            else:
                high = middle
        found = []
        while low < self.count and records[low * size : low * size + 32] == chunk_id:
            _, number, flags, offset, stored, raw, counter = RECORD.unpack_from(records, low * size)
            found.append((number, PackEntry(chunk_id, flags, offset, stored, raw, counter)))
            low += 1
        return found

    def rows(self) -> Iterator[tuple[bytes, int, PackEntry]]:
        for position in range(self.count):
            chunk_id, number, flags, offset, stored, raw, counter = RECORD.unpack_from(
                self.records, position * RECORD.size
            )
            yield chunk_id, number, PackEntry(chunk_id, flags, offset, stored, raw, counter)


class ChunkIndex:
    def __init__(self) -> None:
        self.packs: list[IndexedPack] = []
        self._numbers: dict[str, int] = {}
        self._runs: list[_Run] = []
        self._recent: dict[bytes, tuple[int, PackEntry]] = {}
        # Further copies of ids already in _recent (a chunk stored again, to heal a damaged copy).
        self._extra: dict[bytes, list[tuple[int, PackEntry]]] = {}

    def _number(self, pack: IndexedPack) -> int:
        number = self._numbers.get(pack.name)
        if number is None:
            number = len(self.packs)
            self.packs.append(pack)
            self._numbers[pack.name] = number
        return number

    def _remember(self, chunk_id: bytes, number: int, entry: PackEntry) -> None:
        known = self._recent.setdefault(chunk_id, (number, entry))
        if known != (number, entry):
            self._extra.setdefault(chunk_id, []).append((number, entry))

    def add_pack(self, pack: IndexedPack, entries: Iterable[PackEntry]) -> None:
        number = self._number(pack)
        for entry in entries:
            self._remember(entry.chunk_id, number, entry)
        if len(self._recent) >= RECENT_LIMIT:
            self._fold()

    def add_packs(self, packs: Iterable[tuple[IndexedPack, list[PackEntry]]]) -> None:
        rows: list[tuple[bytes, int, PackEntry]] = []
        for pack, entries in packs:
            number = self._number(pack)
            rows.extend((entry.chunk_id, number, entry) for entry in entries)
        if len(rows) < SMALL_BATCH:
            # A backup's own index file (a day 2 names a few hundred chunks): into the small dict, not a run
            # of its own (a run's prefix table alone costs ~8 ms to build).
            for chunk_id, number, entry in rows:
                self._remember(chunk_id, number, entry)
            if len(self._recent) >= RECENT_LIMIT:
                self._fold()
        else:
            self._runs.append(_Run(rows))
        if len(self._runs) > 16:
            self.compact()

    def _fold(self) -> None:
        if self._recent:
            rows = [(i, n, e) for i, (n, e) in self._recent.items()]
            rows.extend((i, n, e) for i, copies in self._extra.items() for n, e in copies)
            self._runs.append(_Run(rows))
            self._recent, self._extra = {}, {}

    def compact(self) -> None:
        """Merge every run into one (fewer lookups per id)."""
        self._fold()
        if len(self._runs) > 1:
            rows = [row for run in self._runs for row in run.rows()]
            self._runs = [_Run(rows)]

    def lookup(self, chunk_id: bytes) -> Location | None:
        found = self._recent.get(chunk_id)
        if found is None:
            for run in self._runs:
                found = run.find(chunk_id)
                if found is not None:
                    break
        if found is None:
            return None
        return Location(self.packs[found[0]], found[1])

    def lookup_all(self, chunk_id: bytes) -> list[Location]:
        """Every place this chunk is stored (a chunk stored again to heal a damaged copy has two)."""
        found = [self._recent[chunk_id]] if chunk_id in self._recent else []
        found.extend(self._extra.get(chunk_id, ()))
        for run in self._runs:
            found.extend(run.find_all(chunk_id))
        return [Location(self.packs[number], entry) for number, entry in found]

    def __contains__(self, chunk_id: object) -> bool:
        return isinstance(chunk_id, bytes) and self.lookup(chunk_id) is not None

    def __len__(self) -> int:
        return sum(run.count for run in self._runs) + len(self._recent) + sum(map(len, self._extra.values()))

    def locations(self) -> Iterator[Location]:
        for run in self._runs:
            for _, number, entry in run.rows():
                yield Location(self.packs[number], entry)
        for number, entry in self._recent.values():
            yield Location(self.packs[number], entry)
        for copies in self._extra.values():
            for number, entry in copies:
                yield Location(self.packs[number], entry)

    def memory_bytes(self) -> int:
        """Approximate memory held by the index itself (records, prefix tables, id lists)."""
        per_run = sum(len(run.records) + len(run.starts) * 4 for run in self._runs)
        return per_run + len(self._recent) * 250
