"""Child process for the crash tests: backs images up into a repository until it is killed.

Usage: python -m tests.engine.crash_child <repository folder> <image> <seed>
Writes one line "committed <snapshot id> <image sha256>" per committed snapshot to stdout (flushed), so the
parent knows which snapshots must survive the kill.
"""

from __future__ import annotations

import hashlib
import random
import sys

from engine.repository import Repository
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
    parent = None
    say("ready")
    while True:
        # Each round changes a few areas, so every backup stores new packs (more places to be killed in).
        for _ in range(3):
            offset = rng.randrange(0, len(image) - 40_000)
            image[offset : offset + 40_000] = rng.randbytes(40_000)
        parent = backup(repository, image, parent=parent)
        say(f"committed {parent.id} {hashlib.sha256(image).hexdigest()}")


if __name__ == "__main__":
    main()
