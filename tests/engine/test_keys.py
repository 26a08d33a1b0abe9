"""Key slots: passphrases open the repository; adding, removing or changing one never rewrites data."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from engine.errors import EngineError, IntegrityError, RepositoryExists, RepositoryNotFound, WrongPassphrase
from engine.repository import Repository
from engine.storage.local import LocalStorage
from tests.engine.helpers import PASSPHRASE, backup, make_image


def data_objects(storage: LocalStorage) -> dict[str, bytes]:
    return {
        info.key: storage.get(info.key)
        for prefix in ("data/", "index/", "snapshots/")
        for info in storage.list(prefix)
    }


def test_wrong_passphrase_and_missing_repository(storage: LocalStorage, tmp_path) -> None:  # type: ignore[no-untyped-def]
    Repository.init(storage, PASSPHRASE)
    with pytest.raises(WrongPassphrase, match="no key"):
        Repository.open(storage, "not it")
    with pytest.raises(RepositoryExists):
        Repository.init(storage, "again")
    with pytest.raises(RepositoryNotFound):
        Repository.open(LocalStorage(tmp_path / "nothing"), PASSPHRASE)


def test_slots_change_without_rewriting_data(repository: Repository) -> None:
    snapshot = backup(repository, make_image(512 * 1024))
    before = data_objects(repository.storage)  # type: ignore[arg-type]

    second = repository.add_key("second passphrase", label="dr-site")
    assert {slot.label for slot in repository.key_slots()} == {"initial", "dr-site"}
    Repository.open(repository.storage, "second passphrase").load_snapshot(snapshot.id)

    repository.change_passphrase("new passphrase")
    with pytest.raises(WrongPassphrase):
        Repository.open(repository.storage, PASSPHRASE)
    reopened = Repository.open(repository.storage, "new passphrase")
    assert reopened.load_snapshot(snapshot.id).id == snapshot.id

    reopened.remove_key(second)
    with pytest.raises(WrongPassphrase):
        Repository.open(repository.storage, "second passphrase")
    with pytest.raises(ValueError, match="last key"):
        reopened.remove_key(reopened.opened_with)
    assert data_objects(repository.storage) == before  # type: ignore[arg-type]


def test_no_bit_flip_in_the_config_opens_silently(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    Repository.init(storage, PASSPHRASE, block_size=65536)
    original = storage.get("config")
    rng = random.Random(5)
    positions = rng.sample(range(len(original) * 8), min(120, len(original) * 8))
    for bit in positions:
        flipped = bytearray(original)
        flipped[bit // 8] ^= 1 << (bit % 8)
        storage.put("config", bytes(flipped))
        with pytest.raises(EngineError):
            Repository.open(storage, PASSPHRASE)
    storage.put("config", original)
    assert Repository.open(storage, PASSPHRASE).config.block_size == 65536


def test_a_config_with_an_impossible_block_size_is_refused_even_without_a_mac(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "repo")
    repository = Repository.init(storage, PASSPHRASE, block_size=65536)
    for info in storage.list("keys/"):  # a slot written before slots vouched for the config
        slot = json.loads(storage.get(info.key))
        del slot["config_mac"]
        storage.put(info.key, json.dumps(slot).encode())
    assert Repository.open(storage, PASSPHRASE).config.id == repository.config.id
    config = json.loads(storage.get("config"))
    storage.put("config", json.dumps({**config, "block_size": 65535}, indent=1).encode())
    with pytest.raises(IntegrityError, match="block size"):
        Repository.open(storage, PASSPHRASE)
