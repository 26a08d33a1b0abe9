"""Engine fixtures: no database, real storage (a temporary folder, or a local S3 server)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.repository import Repository
from engine.storage.local import LocalStorage
from tests.engine.helpers import BLOCK, PASSPHRASE, SMALL_PACK, backup, make_image  # noqa: F401  (shared)
from tests.peers import free_port, require_peer


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "repo")


@pytest.fixture
def repository(storage: LocalStorage) -> Repository:
    repository = Repository.init(storage, PASSPHRASE, block_size=BLOCK)
    repository.pack_target = SMALL_PACK
    return repository


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
