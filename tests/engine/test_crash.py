"""Kill a process that backs up, forgets and prunes at random moments: the repository stays consistent.

CI runs 50 kill points (BULWARK_CRASH_POINTS raises it: the long mode runs 500).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.image import restore_image
from engine.locks import unlock
from engine.maintenance import verify
from engine.prune import prune
from engine.repository import Repository
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, PASSPHRASE, SMALL_PACK, backup, make_image

ROOT = Path(__file__).resolve().parents[2]
POINTS = int(os.environ.get("BULWARK_CRASH_POINTS", "50"))
ROUNDS = 5  # each round: one child killed after a random delay, several points per child process start


def run_and_kill(repository_root: Path, image: Path, seed: int, delay: float) -> list[tuple[str, str]]:
    """Start a child, let it work for `delay` seconds after it is ready, SIGKILL it; return what it committed
    (digest) and what it started forgetting (digest "forgotten")."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.engine.crash_child", str(repository_root), str(image), str(seed)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready", process.stderr.read() if process.stderr else ""
    committed: list[tuple[str, str]] = []
    deadline = time.monotonic() + delay
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([process.stdout], [], [], remaining)
        if readable:
            line = process.stdout.readline()
            if line.startswith("committed"):
                _, snapshot_id, digest = line.split()
                committed.append((snapshot_id, digest))
            elif line.startswith("forgetting"):
                committed.append((line.split()[1], "forgotten"))
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    # Lines written just before the kill still count: the manifest existed when they were printed.
    for line in process.stdout.read().splitlines():
        if line.startswith("committed"):
            _, snapshot_id, digest = line.split()
            committed.append((snapshot_id, digest))
        elif line.startswith("forgetting"):
            committed.append((line.split()[1], "forgotten"))
    return committed


@pytest.mark.slow
def test_random_kills_leave_a_consistent_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    repository = Repository.init(LocalStorage(root), PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    image_path = tmp_path / "disk.img"
    image_path.write_bytes(bytes(make_image(1024 * 1024, seed=21)))
    rng = random.Random(2026)
    committed: dict[str, str] = {}
    kills = 0
    # A worker that keeps the repository open throughout (a proxy), backing up content that shares chunks
    # with what the killed processes forget and prune.
    stale = Repository.open(LocalStorage(root), PASSPHRASE)
    stale.pack_target = SMALL_PACK
    stale_image = bytearray(image_path.read_bytes())
    while kills < POINTS:
        # Short and long delays: some kills land inside the first backup, some after several commits.
        delay = rng.choice([rng.uniform(0.0, 0.15), rng.uniform(0.1, 0.8)])
        for snapshot_id, digest in run_and_kill(root, image_path, rng.randrange(1 << 30), delay):
            committed[snapshot_id] = digest
        kills += 1
        if kills % 5 == 0:
            offset = rng.randrange(0, len(stale_image) - 40_000)
            stale_image[offset : offset + 40_000] = rng.randbytes(40_000)
            snapshot = backup(stale, stale_image, machine="stale-worker")
            committed[snapshot.id] = hashlib.sha256(stale_image).hexdigest()

        fresh = Repository.open(LocalStorage(root), PASSPHRASE)
        report = verify(fresh)
        assert report.ok, f"after kill {kills}: " + "; ".join(str(p) for p in report.errors)
        # Nothing committed and not forgotten is lost. (A manifest stored just before the kill, whose
        # "committed" line never came out, may exist too: verify above has shown it complete.)
        alive = {snapshot_id for snapshot_id, digest in committed.items() if digest != "forgotten"}
        assert alive <= set(fresh.snapshot_ids())

    fresh = Repository.open(LocalStorage(root), PASSPHRASE)
    assert verify(fresh, full=True).ok
    restore_dir = tmp_path / "restored"
    restore_dir.mkdir()
    assert any(digest == "forgotten" for digest in committed.values()), "no forget/prune round ran"
    survivors = sorted((i, d) for i, d in committed.items() if d != "forgotten" and i in fresh.snapshot_ids())
    assert survivors, "no snapshot survived to restore"
    for snapshot_id, digest in rng.sample(survivors, min(10, len(survivors))):
        target = restore_dir / snapshot_id
        restore_image(fresh, fresh.load_snapshot(snapshot_id), "disk-0", target)
        assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    # The next backup completes and reuses what killed runs already stored.
    stored_before = sum(info.size for info in fresh.storage.list("data/"))
    image = make_image(1024 * 1024, seed=21)
    snapshot = backup(fresh, image)
    assert snapshot.stats["reused_bytes"] > 0
    assert sum(info.size for info in fresh.storage.list("data/")) - stored_before < len(image)
    assert len(committed) > 0


class Killed(BaseException):
    """The process died here: nothing after it runs, not even a lease's release."""


class KillAfter(LocalStorage):
    """A storage whose process dies right after its `limit`-th change (put or delete), and stays dead."""

    def __init__(self, root: Path, limit: int) -> None:
        super().__init__(root)
        self.limit = limit
        self.changes = 0

    def _change(self) -> None:
        if self.changes >= self.limit:
            raise Killed
        self.changes += 1

    def put(self, key: str, data: bytes, **options: Any) -> None:
        self._change()
        super().put(key, data, **options)

    def delete(self, key: str) -> None:
        self._change()
        super().delete(key)


def _prune_scene(root: Path) -> tuple[dict[str, bytes], Repository]:
    """Snapshots of which some are forgotten, some packs set aside and some ripe: every step of a prune has
    work (mark, repack, resurrect-or-delete, orphans)."""
    repository = Repository.init(LocalStorage(root), PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    images = {}
    image = make_image(512 * 1024, seed=41)
    for day in range(4):
        image[day * 100_000 : day * 100_000 + 80_000] = make_image(80_000, seed=50 + day)
        images[backup(repository, image).id] = bytes(image)
    first, second, *_ = images  # in the order they were taken
    repository.forget_snapshot(first)
    del images[first]
    prune(repository, grace=datetime.timedelta(0))  # a marker that is ripe for the next prune
    repository.forget_snapshot(second)
    del images[second]
    return images, repository


@pytest.mark.slow
def test_a_prune_killed_at_any_step_leaves_a_clean_repository_and_the_next_one_finishes(
    tmp_path: Path,
) -> None:
    # How many changes a whole prune makes on this scene.
    _prune_scene(tmp_path / "count")
    counting = KillAfter(tmp_path / "count", limit=10**9)
    prune(Repository.open(counting, PASSPHRASE), grace=datetime.timedelta(0))
    steps = counting.changes
    assert steps >= 6
    for limit in range(steps):
        root = tmp_path / f"kill-{limit}"
        images, _ = _prune_scene(root)
        with pytest.raises(Killed):
            prune(Repository.open(KillAfter(root, limit), PASSPHRASE), grace=datetime.timedelta(0))
        storage = LocalStorage(root)
        assert unlock(storage).removed == []  # the dead prune's lease is live: of this very process
        unlock(storage, force=True)
        report = verify(Repository.open(storage, PASSPHRASE), full=True)
        assert report.ok, f"killed after change {limit}: " + "; ".join(str(p) for p in report.errors)
        prune(Repository.open(storage, PASSPHRASE), grace=datetime.timedelta(0))
        prune(Repository.open(storage, PASSPHRASE), grace=datetime.timedelta(0))
        fresh = Repository.open(storage, PASSPHRASE)
        assert verify(fresh, full=True).ok
        assert set(fresh.snapshot_ids()) == set(images)
        for snapshot_id, content in images.items():
            target = tmp_path / f"restore-{limit}-{snapshot_id}"
            restore_image(fresh, fresh.load_snapshot(snapshot_id), "disk-0", target)
            assert target.read_bytes() == content, f"killed after change {limit}"
