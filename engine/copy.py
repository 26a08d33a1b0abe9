"""Copy snapshots to another repository (another tier, site or S3 bucket) without re-chunking.

Blocks and file chunks keep their boundaries; each chunk is decrypted, checked, and stored under the
destination's keys (ids are keyed per repository, so they are recomputed: a cheap hash, no chunking).
Chunks the destination already has are not stored again. The manifest is written last, as for a backup.
"""

from __future__ import annotations

import json
from typing import Any

from engine.files import read_tree
from engine.image import TABLE_SPAN, ZERO_ID, load_table
from engine.progress import NullProgress, Progress
from engine.repository import ChunkWriter, Repository, Snapshot, WriteStats


def copy_snapshot(
    source: Repository, destination: Repository, snapshot: Snapshot, *, progress: Progress | None = None
) -> tuple[Snapshot, WriteStats]:
    """Copy one snapshot; returns the destination's snapshot (same id) and what was stored."""
    progress = progress or NullProgress()
    if snapshot.id in destination.snapshot_ids():
        return destination.load_snapshot(snapshot.id), WriteStats()
    with destination.writer() as writer:
        copied = Snapshot(**{**snapshot.__dict__, "disks": [], "tree": None})
        done = 0
        for disk in snapshot.disks:
            table = load_table(source, disk)
            new_table = bytearray()
            for position in range(0, len(table), 32):
                chunk_id = table[position : position + 32]
                if chunk_id == ZERO_ID:
                    new_table += ZERO_ID
                    continue
                data = source.read_chunk(chunk_id)
                new_table += writer.add(data)
                done += len(data)
                progress.step(done, None, f"copying {disk['name']}")
            span = TABLE_SPAN * 32
            tables = [
                writer.add(bytes(new_table[i : i + span]), meta=True).hex()
                for i in range(0, len(new_table), span)
            ]
            copied.disks.append({**disk, "tables": tables})
        if snapshot.tree is not None:
            copied.tree = _copy_tree(source, writer, snapshot.tree)
        writer.flush()
        destination.commit_snapshot(copied)
        return copied, writer.stats


def _copy_tree(source: Repository, writer: ChunkWriter, tree_id: str) -> str:
    entries: list[dict[str, Any]] = []
    for entry in read_tree(source, tree_id):
        if entry["type"] == "dir":
            entry = {**entry, "tree": _copy_tree(source, writer, entry["tree"])}
        elif entry["type"] == "file":
            entry = {
                **entry,
                "chunks": [writer.add(source.read_chunk(bytes.fromhex(c))).hex() for c in entry["chunks"]],
            }
        entries.append(entry)
    entries.sort(key=lambda item: item["name"])
    data = json.dumps({"version": 1, "entries": entries}, sort_keys=True, separators=(",", ":"))
    return writer.add(data.encode(), meta=True).hex()
