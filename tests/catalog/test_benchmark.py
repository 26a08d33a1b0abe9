"""The catalog benchmark runs in CI as --quick: it must finish and print its figures (speed is reported, never
asserted). It needs PostgreSQL (a database of its own), e2fsprogs and restic."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import require_peer

ROOT = Path(__file__).resolve().parents[2]
KEYS = (
    "catalog_files_per_s",
    "catalog_vs_dissect_x",
    "backup_catalog_overhead_x",
    "day2_catalog_x",
    "file_restore_s",
    "file_restore_read_x",
    "file_restore_vs_restic_x",
    "search_p95_ms",
    "sqlite_search_p95_ms",
    "bytes_per_version",
)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_quick_catalog_benchmark_runs_and_prints_its_figures() -> None:
    require_peer(shutil.which("restic") is not None, "restic is missing (make peer-deps installs it)")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.catalog", "--quick", "--versions", "200000"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    figures = dict(item.split("=", 1) for item in last.split())
    assert set(figures) == set(KEYS), last
    sys.stdout.write(done.stdout)  # the figures, in the CI log
