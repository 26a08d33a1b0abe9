"""Engine test helpers without pytest, so the crash tests' child processes start fast."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine.image import ImageWriter
from engine.repository import Repository, Snapshot

PASSPHRASE = "correct horse battery staple"
BLOCK = 64 * 1024  # small blocks keep test images small while crossing many block boundaries
SMALL_PACK = 128 * 1024  # many packs from small images


def make_image(size: int, seed: int = 1) -> bytearray:
    """A disk-like image: random (incompressible) runs, text-like (compressible) runs and zero runs."""
    rng = random.Random(seed)
    image = bytearray()
    while len(image) < size:
        kind = rng.random()
        length = rng.randrange(1, 6) * BLOCK + rng.randrange(0, 4096)
        if kind < 0.35:
            image += rng.randbytes(length)
        elif kind < 0.7:
            words = [b"backup", b"restore", b"volume", b"sector", b"inode", b"journal"]
            image += b" ".join(rng.choice(words) for _ in range(length // 6))[:length]
        else:
            image += bytes(length)
    del image[size:]
    return image


def backup(
    repository: Repository, image: bytes | bytearray, *, parent: Snapshot | None = None, machine: str = "vm-1"
) -> Snapshot:
    writer = ImageWriter(repository, machine=machine, parent=parent)
    try:
        writer.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))
        return writer.commit()
    except BaseException:
        writer.abort()
        raise


def engine_cli(root: Path, *args: str, stdin: Any = None) -> subprocess.CompletedProcess[str]:
    """The engine's command line in a process of its own (another proxy, or an admin's shell); `stdin`: what
    it reads on its standard input (a pipe, for an image piped in)."""
    return subprocess.run(
        [sys.executable, "-m", "engine", "--repo", str(root), *args],
        stdin=stdin,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "BULWARK_PASSPHRASE": PASSPHRASE},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
