"""The bulwark-engine command line, run as a separate process the way an operator runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.engine.helpers import make_image

ROOT = Path(__file__).resolve().parents[2]


def engine(repo: Path, *args: str, passphrase: str = "cli passphrase") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", "--repo", str(repo), *args],
        cwd=ROOT,
        env={**os.environ, "BULWARK_PASSPHRASE": passphrase},
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_a_day_of_operations_on_the_command_line(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(make_image(1024 * 1024, seed=2)))
    ok(engine(repo, "init", "--block-size", "65536", "--json"))
    first = ok(engine(repo, "backup-image", str(image), "--machine", "vm-1", "--json"))
    data = bytearray(image.read_bytes())
    data[70_000:80_000] = b"z" * 10_000
    image.write_bytes(bytes(data))
    (tmp_path / "areas.json").write_text(json.dumps([[70_000, 10_000]]))
    second = ok(
        engine(
            repo,
            "backup-image",
            str(image),
            "--machine",
            "vm-1",
            "--parent",
            "latest",
            "--changed-areas",
            str(tmp_path / "areas.json"),
            "--json",
        )
    )
    assert second["new_bytes"] < first["new_bytes"]
    ok(engine(repo, "restore", "latest", str(tmp_path / "out.img"), "--json"))
    assert (tmp_path / "out.img").read_bytes() == bytes(data)

    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("alpha")
    files = ok(engine(repo, "backup-dir", str(tmp_path / "tree"), "--machine", "fs-1", "--json"))
    ok(engine(repo, "restore", files["snapshot"], str(tmp_path / "tree-out"), "--json"))
    assert (tmp_path / "tree-out" / "a.txt").read_text() == "alpha"

    simulated = ok(engine(repo, "forget", "--keep-last", "1", "--dry-run", "--json"))
    assert [item["id"] for item in simulated["forget"]] == [first["snapshot"]]
    assert {item["id"] for item in simulated["keep"]} == {second["snapshot"], files["snapshot"]}
    assert len(ok(engine(repo, "snapshots", "--json"))) == 3  # a dry run forgets nothing
    ok(engine(repo, "forget", "--keep-last", "1", "--json"))
    pruned = ok(engine(repo, "prune", "--grace-minutes", "0", "--json"))
    assert pruned["marked_packs"] or pruned["repacked_packs"] or pruned["used_chunks"]
    assert ok(engine(repo, "verify", "--full", "--json"))["ok"] is True

    archive = tmp_path / "archive"
    ok(engine(archive, "init", "--json", passphrase="archive passphrase"))
    copy = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine",
            "--repo",
            str(repo),
            "copy",
            "latest",
            "--to",
            str(archive),
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "BULWARK_PASSPHRASE": "cli passphrase",
            "BULWARK_DESTINATION_PASSPHRASE": "archive passphrase",
        },
    )
    assert ok(copy)["new_bytes"] > 0


def test_errors_are_one_clear_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    missing = engine(tmp_path / "nothing", "snapshots")
    assert (
        missing.returncode == 2 and "no repository at" in missing.stderr and "Traceback" not in missing.stderr
    )
    ok(engine(tmp_path / "repo", "init", "--json"))
    wrong = engine(tmp_path / "repo", "snapshots", passphrase="not it")
    assert wrong.returncode == 2 and "passphrase" in wrong.stderr
    bad = engine(tmp_path / "repo", "backup-image", str(tmp_path / "absent.img"), "--machine", "m")
    assert bad.returncode == 2 and "absent.img" in bad.stderr and "Traceback" not in bad.stderr
