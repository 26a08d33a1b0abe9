"""Packs filled by worker threads: counters in order, sizes near the target, every chunk readable."""

from __future__ import annotations

import random

import pytest

from engine import format as fmt
from engine.crypto import TAG_BYTES, MasterKey
from engine.maintenance import verify
from engine.repository import Repository
from tests.engine.helpers import SMALL_PACK


def test_chunks_sealed_on_worker_threads_fill_packs_in_counter_order(repository: Repository) -> None:
    rng = random.Random(5)
    chunks = [rng.randbytes(rng.randrange(1, 40_000)) + bytes(rng.randrange(0, 30_000)) for _ in range(300)]
    with repository.writer(threads=3) as writer:
        ids = [writer.add(chunk) for chunk in chunks]
        writer.flush()
    largest = max(len(chunk) for chunk in chunks) + TAG_BYTES
    packs = [info.key for info in repository.storage.list("data/")]
    assert len(packs) > 3
    for key in packs:
        data = repository.storage.get(key)
        _salt, entries = fmt.read_pack_header(repository.master, data, key)
        assert [entry.counter for entry in entries] == list(range(len(entries)))
        # A pack closes once the chunks already in flight would fill it: never more than one chunk over.
        assert len(data) <= SMALL_PACK + largest + 64 * 1024
    assert [repository.read_chunk(chunk_id) for chunk_id in ids] == chunks
    assert not verify(repository, full=True).problems


def test_a_chunk_placed_out_of_counter_order_is_refused() -> None:
    builder = fmt.PackBuilder(MasterKey.generate())
    first, second = builder.reserve(10), builder.reserve(10)
    blob = fmt.seal_chunk(builder.aead, second, bytes(32), 0, b"x" * 10)
    with pytest.raises(ValueError, match="order"):
        builder.place(bytes(32), 0, blob, 10, second)
    assert first == 0
