"""Child process for the crash tests: backs images up into a repository until it is killed.

Usage: python -m tests.engine.crash_child <repository folder> <image> <seed>
Writes one line "committed <snapshot id> <image sha256>" per committed snapshot to stdout (flushed), so the
parent knows which snapshots must survive the kill.
"""

from __future__ import annotations

import datetime
import hashlib
import random
import sys

from engine.prune import prune
from engine.repository import Repository
from engine.retention import RetentionSpec, plan_retention
from engine.storage.local import LocalStorage
from tests.engine.helpers import PASSPHRASE, SMALL_PACK, backup


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    root, image_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(seed)
    image = bytearray(open(image_path, "rb").read())  # noqa: SIM115
    repository = Repository.open(LocalStorage(root), PASSPHRASE)
    repository.pack_target = SMALL_PACK
    repository.lease_seconds = 2  # a killed child's lease lapses fast, so later prunes really delete
    parent = None
    say("ready")
    rounds = 0
    while True:
        rounds += 1
        if rounds % 3 == 0:
            # Forget all but the newest two, announcing each before its manifest goes, then prune.
            decisions = plan_retention(repository.snapshots(), RetentionSpec(last=2))
            for decision in decisions:
                if not decision.keep:
                    say(f"forgetting {decision.snapshot.id}")
                    repository.forget_snapshot(decision.snapshot.id)
            prune(repository, grace=datetime.timedelta(0))
            repository = Repository.open(LocalStorage(root), PASSPHRASE)
            repository.pack_target = SMALL_PACK
            repository.lease_seconds = 2
            parent = None
        # Each round changes a few areas, so every backup stores new packs (more places to be killed in).
        for _ in range(3):
            offset = rng.randrange(0, len(image) - 40_000)
            image[offset : offset + 40_000] = rng.randbytes(40_000)
        parent = backup(repository, image, parent=parent)
        say(f"committed {parent.id} {hashlib.sha256(image).hexdigest()}")


if __name__ == "__main__":
    main()
