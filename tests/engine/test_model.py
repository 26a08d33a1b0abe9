"""A seeded model-based test of the repository: two long-lived Repository objects on one storage (two workers
that keep it open), backups of images and trees that share content, some held open across other steps,
forgets, prunes with and without grace, rebuild-index and verify. After every step the live snapshots equal the
model's, both ways, and every one restores to the model's bytes.

`make test` runs a few seeds; `make test-model-long` runs more seeds and steps (BULWARK_MODEL_SEEDS,
BULWARK_MODEL_STEPS)."""

from __future__ import annotations

import datetime
import io
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.errors import LockedError
from engine.files import FileTreeWriter, restore_tree
from engine.image import ImageReader, ImageWriter
from engine.maintenance import rebuild_index, verify
from engine.prune import prune
from engine.repository import Repository, Snapshot, SnapshotWriter
from engine.storage.local import LocalStorage
from tests.engine.helpers import PASSPHRASE

BLOCK = 4096
BLOCKS = 12
SEEDS = [int(seed) for seed in os.environ.get("BULWARK_MODEL_SEEDS", "1,2,3").split(",")]
STEPS = int(os.environ.get("BULWARK_MODEL_STEPS", "120"))


@dataclass
class Model:
    """What the repository must hold: snapshot id -> the bytes of its disk, or its files."""

    images: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, dict[str, bytes]] = field(default_factory=dict)
    machine_of: dict[str, str] = field(default_factory=dict)

    def ids(self) -> set[str]:
        return set(self.images) | set(self.trees)


@dataclass
class InFlight:
    writer: SnapshotWriter
    machine: str
    content: bytes | dict[str, bytes]
    tree: str | None = None


class Run:
    def __init__(self, seed: int, root: Path) -> None:
        self.rng = random.Random(seed)
        self.root = root
        self.storage = LocalStorage(root / "repo")
        Repository.init(self.storage, PASSPHRASE, block_size=BLOCK)
        self.workers = [self._open(), self._open()]
        # Few distinct blocks: images share most of their chunks with each other.
        self.pool = [bytes(BLOCK)] + [self.rng.randbytes(BLOCK) for _ in range(10)]
        self.texts = [self.rng.randbytes(self.rng.randrange(1, 9000)) for _ in range(8)]
        self.model = Model()
        self.inflight: list[InFlight] = []
        self.log: list[str] = []

    def _open(self) -> Repository:
        repository = Repository.open(self.storage, PASSPHRASE)
        repository.pack_target = 3 * BLOCK  # many small packs: prune and repack have work
        return repository

    def worker(self) -> Repository:
        return self.rng.choice(self.workers)

    # --- steps ----------------------------------------------------------------------------------------------
    def image_content(self, parent: bytes | None) -> tuple[bytes, list[tuple[int, int]] | None]:
        if parent is None or self.rng.random() < 0.3:
            return b"".join(self.rng.choice(self.pool) for _ in range(BLOCKS)), None
        blocks = [parent[n * BLOCK : (n + 1) * BLOCK] for n in range(BLOCKS)]
        changed = self.rng.sample(range(BLOCKS), self.rng.randrange(1, 4))
        for number in changed:
            blocks[number] = self.rng.choice(self.pool)
        return b"".join(blocks), [(number * BLOCK, BLOCK) for number in sorted(changed)]

    def latest(self, machine: str, kind: dict[str, object]) -> str | None:
        ids = [i for i in kind if self.model.machine_of[i] == machine]
        return max(ids) if ids else None

    def begin_image(self) -> InFlight:
        repository = self.worker()
        machine = self.rng.choice(["vm-a", "vm-b"])
        parent_id = self.latest(machine, self.model.images)
        parent = repository.load_snapshot(parent_id) if parent_id else None
        content, areas = self.image_content(self.model.images[parent_id] if parent_id else None)
        writer = ImageWriter(repository, machine=machine, parent=parent if areas else None)
        if areas is None:
            writer.write_disk("disk-0", io.BytesIO(content), size=len(content))
        else:
            writer.write_disk_areas("disk-0", io.BytesIO(content), size=len(content), areas=areas)
        self.log.append(f"begin image {machine} parent={parent_id if areas else None} areas={areas}")
        return InFlight(writer, machine, content)

    def begin_tree(self) -> InFlight:
        repository = self.worker()
        machine = self.rng.choice(["host-a", "host-b"])
        source = self.root / "sources" / machine
        source.mkdir(parents=True, exist_ok=True)
        for name in ("a", "b", "c", "d"):
            path = source / name
            if not path.exists() or self.rng.random() < 0.4:
                path.write_bytes(self.rng.choice(self.texts))
        parent_id = self.latest(machine, self.model.trees)
        parent = repository.load_snapshot(parent_id) if parent_id else None
        writer = FileTreeWriter(repository, machine=machine, parent=parent)
        content = {path.name: path.read_bytes() for path in source.iterdir()}
        tree = writer.store(source)
        self.log.append(f"begin tree {machine} parent={parent_id}")
        return InFlight(writer, machine, content, tree)

    def commit(self, flight: InFlight) -> None:
        if isinstance(flight.writer, FileTreeWriter):
            assert flight.tree is not None
            snapshot: Snapshot = flight.writer.commit(flight.tree)
            assert isinstance(flight.content, dict)
            self.model.trees[snapshot.id] = flight.content
        else:
            assert isinstance(flight.writer, ImageWriter) and isinstance(flight.content, bytes)
            snapshot = flight.writer.commit()
            self.model.images[snapshot.id] = flight.content
        self.model.machine_of[snapshot.id] = flight.machine
        self.log.append(f"commit {snapshot.id}")

    def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.25:
            self.commit(self.begin_image() if self.rng.random() < 0.6 else self.begin_tree())
        elif roll < 0.4 and len(self.inflight) < 2:
            self.inflight.append(self.begin_image() if self.rng.random() < 0.6 else self.begin_tree())
        elif roll < 0.5 and self.inflight:
            self.commit(self.inflight.pop(self.rng.randrange(len(self.inflight))))
        elif roll < 0.65 and self.model.ids():
            victim = self.rng.choice(sorted(self.model.ids()))
            self.worker().forget_snapshot(victim)
            self.model.images.pop(victim, None)
            self.model.trees.pop(victim, None)
            self.log.append(f"forget {victim}")
        elif roll < 0.88:
            grace = datetime.timedelta(0) if self.rng.random() < 0.8 else datetime.timedelta(hours=1)
            try:
                report = prune(self.worker(), grace=grace)
                self.log.append(
                    f"prune grace={grace} marked={len(report.marked_packs)} deleted={len(report.deleted_packs)} "
                    f"resurrected={len(report.resurrected_packs)} orphans={len(report.deleted_orphans)}"
                )
            except LockedError:
                pass
        elif roll < 0.95:
            rebuild_index(self.worker())
            self.log.append("rebuild-index")
        else:
            report = verify(self._open(), full=True)
            assert report.ok, [str(problem) for problem in report.errors]
            self.log.append("verify --full")

    # --- the check after every step -------------------------------------------------------------------------
    def check(self, number: int) -> None:
        reader = self.rng.choice([*self.workers, self._open()])  # long-lived or fresh
        stored = set(reader.snapshot_ids())
        assert stored == self.model.ids(), self.explain(number)
        for snapshot_id, content in self.model.images.items():
            disk = reader.load_snapshot(snapshot_id).disk("disk-0")
            reader_file = ImageReader(reader, disk)
            assert reader_file.read() == content, self.explain(number, snapshot_id)
        for snapshot_id, files in self.model.trees.items():
            target = self.root / "restored"
            shutil.rmtree(target, ignore_errors=True)
            restore_tree(reader, reader.load_snapshot(snapshot_id), target)
            got = {path.name: path.read_bytes() for path in target.iterdir()}
            assert got == files, self.explain(number, snapshot_id)

    def explain(self, number: int, snapshot_id: str | None = None) -> str:
        return f"after step {number} ({snapshot_id or 'snapshot list'}); last steps:\n" + "\n".join(
            self.log[-15:]
        )


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_the_repository_matches_its_model_after_every_step(seed: int, tmp_path: Path) -> None:
    run = Run(seed, tmp_path)
    for number in range(STEPS):
        run.step()
        run.check(number)
    for flight in run.inflight:
        run.commit(flight)
    prune(run._open(), grace=datetime.timedelta(0))
    prune(run._open(), grace=datetime.timedelta(0))
    run.check(STEPS)
    report = verify(run._open(), full=True)
    assert report.ok, [str(problem) for problem in report.errors]
