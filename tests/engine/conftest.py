"""Engine fixtures: no database, real storage (a temporary folder, or a local S3 server)."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.image import ImageWriter
from engine.repository import Repository, Snapshot
from engine.storage.local import LocalStorage
from tests.conftest import free_port, require_peer

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


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "repo")


@pytest.fixture
def repository(storage: LocalStorage) -> Repository:
    repository = Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    return repository


def backup(
    repository: Repository, image: bytes | bytearray, *, parent: Snapshot | None = None, machine: str = "vm-1"
) -> Snapshot:
    writer = ImageWriter(repository, machine=machine, parent=parent)
    writer.write_disk("disk-0", io.BytesIO(bytes(image)), size=len(image))
    return writer.commit()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free port, stopped by its own PID at the end of the session."""
    server = Path(sys.executable).with_name("moto_server")
    require_peer(server.exists(), "moto_server is not installed (make test installs the dev dependencies)")
    port = free_port()
    process = subprocess.Popen(
        [str(server), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)  # noqa: S310 (a local test server)
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    yield endpoint
    process.terminate()
    process.wait(timeout=10)
