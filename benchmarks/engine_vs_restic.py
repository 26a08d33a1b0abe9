"""Bulwark's engine against restic and borg on a disk image, in one run.

python -m benchmarks.engine_vs_restic [--size 1G|256M] [--quick] [--block-size BYTES] [--repeat N] [--keep]

Builds an ext4 image with `mkfs.ext4 -d` from real files (/usr/lib, /usr/share), then a day-2 copy with about
4 % of its bytes overwritten in scattered 64 KiB areas (the granularity of vSphere changed-block tracking).
Measures, for each tool: first full backup, day-2 backup (Bulwark with the list of changed areas and without
it), full restore, and repository size. Every restore is compared with its source. Wall time and peak RSS are
taken per process (wait4), with the page cache warm and dirty pages flushed before every step, for every tool
alike. The whole comparison runs --repeat times (at least 3, default 3) on the same images; every figure is the
median of the repetitions, shown with its min-max, and the last line holds the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark passphrase"
AREA = 64 * 1024
CBT_RUNS = 3
SOURCES = [Path("/usr/lib"), Path("/usr/share")]


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    output: str


def run(command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run a command; wall time and its own peak RSS (wait4 on its pid, before anything else reaps it).

    Dirty pages are flushed first, so no step pays for the writeback of the one before it (the tool that
    runs first would otherwise be measured while gigabytes of freshly written images drain to disk)."""
    os.sync()
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            command, stdout=out, stderr=err, env={**os.environ, **(env or {})}, cwd=cwd
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{stderr[-2000:]}")
    return Run(seconds, usage.ru_maxrss / 1024, stdout)


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def stage_files(target: Path, budget: int) -> int:
    """Copy real files until `budget` bytes are staged (files over 8 MiB are skipped to keep variety)."""
    total = 0
    for source in SOURCES:
        for directory, _, files in os.walk(source):
            for name in sorted(files):
                path = Path(directory) / name
                try:
                    if path.is_symlink() or not path.is_file():
                        continue
                    size = path.stat().st_size
                    if size > 8 * 1024 * 1024:
                        continue
                    destination = target / path.relative_to("/")
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, destination)
                except OSError:
                    continue
                total += size
                if total >= budget:
                    return total
    return total


def make_day2(day1: Path, day2: Path, fraction: float, seed: int) -> list[list[int]]:
    shutil.copyfile(day1, day2)
    size = day1.stat().st_size
    rng = random.Random(seed)
    count = int(size * fraction / AREA)
    starts = sorted(rng.sample(range(size // AREA), count))
    with open(day2, "r+b") as handle:
        for start in starts:
            handle.seek(start * AREA)
            handle.write(rng.randbytes(AREA))
    areas: list[list[int]] = []
    for start in starts:  # merge neighbours, as CBT reports them
        if areas and areas[-1][0] + areas[-1][1] == start * AREA:
            areas[-1][1] += AREA
        else:
            areas.append([start * AREA, AREA])
    return areas


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def same(a: Path, b: Path) -> bool:
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="1G")
    parser.add_argument("--quick", action="store_true", help="256M image")
    parser.add_argument("--block-size", type=int, default=None, help="Bulwark image block size")
    parser.add_argument("--change", type=float, default=0.04, help="fraction of the image changed on day 2")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="whole repetitions (medians are reported)")
    args = parser.parse_args()
    if args.repeat < 3:
        raise SystemExit("--repeat must be at least 3: a figure is the median of three runs or more")
    size = parse_size("256M" if args.quick else args.size)
    for tool in ("restic", "borg", "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install restic borgbackup e2fsprogs")

    work = Path(tempfile.mkdtemp(prefix="bulwark-bench-", dir=args.workdir))
    try:
        staged = stage_files(work / "files", int(size * 0.72))
        day1, day2 = work / "day1.img", work / "day2.img"
        with open(day1, "wb") as handle:
            handle.truncate(size)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(work / "files"), str(day1)], check=True)
        shutil.rmtree(work / "files")
        areas = make_day2(day1, day2, args.change, seed=2026)
        (work / "areas.json").write_text(json.dumps(areas))
        changed = sum(length for _, length in areas)
        print(
            f"image {size / 2**20:.0f} MiB with {staged / 2**20:.0f} MiB of real files; day 2 changes "
            f"{changed / 2**20:.1f} MiB in {len(areas)} areas",
            file=sys.stderr,
        )
        repetitions = []
        for number in range(args.repeat):
            folder = work / f"repetition-{number}"
            folder.mkdir()
            shutil.copyfile(work / "areas.json", folder / "areas.json")
            repetitions.append(bench(folder, day1, day2, size, args.block_size))
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
            print(f"repetition {number + 1} of {args.repeat} done", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(repetitions, size)


def bench(
    work: Path, day1: Path, day2: Path, size: int, block_size: int | None
) -> dict[str, dict[str, Run | int]]:
    results: dict[str, dict[str, Run | int]] = {"bulwark": {}, "restic": {}, "borg": {}}
    engine = [sys.executable, "-m", "engine"]
    environment = {"BULWARK_PASSPHRASE": PASSWORD}

    # Bulwark: repository A takes day 1 and a full re-read of day 2; B (a copy after day 1) the changed areas.
    repo_a = work / "bulwark-a"
    init = [*engine, "--repo", str(repo_a), "init"] + (
        ["--block-size", str(block_size)] if block_size else []
    )
    run(init, env=environment, cwd=ROOT)
    b = results["bulwark"]
    b["full"] = run(
        [*engine, "--repo", str(repo_a), "backup-image", str(day1), "--machine", "vm", "--disk", "disk"],
        env=environment,
        cwd=ROOT,
    )
    # Three copies of the day-1 repository: the changed-area day 2 is short enough (~0.1-0.3 s) for the shared
    # disk's writeback to swing one run by 2x, so it runs three times and the median counts.
    copies = [work / f"bulwark-b{n}" for n in range(CBT_RUNS)]
    for copy in copies:
        shutil.copytree(repo_a, copy)
    b["day2_full"] = run(
        [
            *engine,
            "--repo",
            str(repo_a),
            "backup-image",
            str(day2),
            "--machine",
            "vm",
            "--disk",
            "disk",
            "--parent",
            "latest",
        ],
        env=environment,
        cwd=ROOT,
    )
    cbt_runs = [
        run(
            [
                *engine,
                "--repo",
                str(copy),
                "backup-image",
                str(day2),
                "--machine",
                "vm",
                "--disk",
                "disk",
                "--parent",
                "latest",
                "--changed-areas",
                str(work / "areas.json"),
            ],
            env=environment,
            cwd=ROOT,
        )
        for copy in copies
    ]
    b["day2_cbt"] = sorted(cbt_runs, key=lambda r: float(json.loads(r.output)["engine_seconds"]))[
        CBT_RUNS // 2
    ]
    repo_b = copies[0]
    for copy in copies[1:]:
        shutil.rmtree(copy)
    b["restore"] = run(
        [*engine, "--repo", str(repo_a), "restore", "latest", str(work / "bulwark.img")],
        env=environment,
        cwd=ROOT,
    )
    b["size"] = directory_size(repo_a)
    b["identical"] = int(same(work / "bulwark.img", day2))
    cbt_restore = run(
        [*engine, "--repo", str(repo_b), "restore", "latest", str(work / "bulwark-cbt.img")],
        env=environment,
        cwd=ROOT,
    )
    b["identical"] &= int(same(work / "bulwark-cbt.img", day2))
    del cbt_restore
    (work / "bulwark.img").unlink()
    (work / "bulwark-cbt.img").unlink()

    # restic and borg back up the same path twice, as an agent would back up a disk file.
    data = work / "data"
    data.mkdir()
    disk = data / "disk.img"
    r = results["restic"]
    restic_env = {
        "RESTIC_PASSWORD": PASSWORD,
        "RESTIC_REPOSITORY": str(work / "restic"),
        "RESTIC_CACHE_DIR": str(work / "restic-cache"),
    }
    run(["restic", "init"], env=restic_env)
    shutil.copyfile(day1, disk)
    r["full"] = run(["restic", "backup", "--quiet", str(disk)], env=restic_env)
    shutil.copyfile(day2, disk)
    r["day2_full"] = run(["restic", "backup", "--quiet", str(disk)], env=restic_env)
    # Restores are timed until the data is durable for every tool: Bulwark fsyncs before it returns; restic and
    # borg do not, so `sync FILE` (an fsync of the restored file) is part of their step.
    restic_out = work / "restic-out" / disk.relative_to("/")
    r["restore"] = run(
        [
            "sh",
            "-c",
            'restic restore latest --target "$1" && sync "$2"',
            "sh",
            str(work / "restic-out"),
            str(restic_out),
        ],
        env=restic_env,
    )
    r["size"] = directory_size(work / "restic")
    r["identical"] = int(same(work / "restic-out" / disk.relative_to("/"), day2))
    shutil.rmtree(work / "restic-out")

    g = results["borg"]
    borg_env = {
        "BORG_PASSPHRASE": PASSWORD,
        "BORG_REPO": str(work / "borg"),
        "BORG_BASE_DIR": str(work / "borg-base"),
    }
    run(["borg", "init", "--encryption", "repokey-blake2"], env=borg_env)
    shutil.copyfile(day1, disk)
    g["full"] = run(
        ["borg", "create", "--compression", "zstd,1", "::day1", str(disk)], env=borg_env, cwd=work
    )
    shutil.copyfile(day2, disk)
    g["day2_full"] = run(
        ["borg", "create", "--compression", "zstd,1", "::day2", str(disk)], env=borg_env, cwd=work
    )
    (work / "borg-out").mkdir()
    borg_out = work / "borg-out" / disk.relative_to("/")
    g["restore"] = run(
        ["sh", "-c", 'borg extract ::day2 && sync "$1"', "sh", str(borg_out)],
        env=borg_env,
        cwd=work / "borg-out",
    )
    g["size"] = directory_size(work / "borg")
    g["identical"] = int(same(work / "borg-out" / disk.relative_to("/"), day2))
    shutil.rmtree(work / "borg-out")
    return results


def index_memory_per_million() -> float:
    """MB the in-memory chunk index holds for one million chunks: tracemalloc over 200,000 chunks (tracing a
    million takes minutes), scaled; the index grows linearly (fixed-size records plus a prefix table per run)."""
    import tracemalloc

    from engine.format import IndexedPack, PackEntry
    from engine.index import ChunkIndex

    rng = random.Random(1)
    ids = [rng.randbytes(32) for _ in range(200_000)]
    tracemalloc.start()
    index = ChunkIndex()
    for pack_number in range(200):
        pack = IndexedPack(f"{pack_number:032x}", bytes(32), 32 << 20)
        chunk_ids = ids[pack_number * 1000 : pack_number * 1000 + 1000]
        index.add_packs([(pack, [PackEntry(c, 1, n * 100, 100, 65536, n) for n, c in enumerate(chunk_ids)])])
    index.compact()
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(index) == 200_000
    return current / 1e6 * 5


def spread(values: list[float]) -> tuple[float, float, float]:
    """Median, min and max."""
    ordered = sorted(values)
    return statistics.median(ordered), ordered[0], ordered[-1]


def report(repetitions: list[dict[str, dict[str, Run | int]]], size: int) -> None:
    """Every figure as the median of the repetitions with its min-max; the last line holds the medians."""
    mb = size / 1e6
    count = len(repetitions)

    def seconds(results: dict[str, dict[str, Run | int]], tool: str, key: str) -> float:
        value = results[tool][key]
        assert isinstance(value, Run)
        return value.seconds

    def worker_seconds(results: dict[str, dict[str, Run | int]]) -> float:
        cbt = results["bulwark"]["day2_cbt"]
        assert isinstance(cbt, Run)
        return float(json.loads(cbt.output)["engine_seconds"])

    rows = [
        ("full backup", "full"),
        ("day-2, changed areas", "day2_cbt"),
        ("day-2, full re-read", "day2_full"),
        ("full restore + fsync", "restore"),
    ]
    print(f"median of {count} repetitions (min-max)")
    print(f"{'operation':<26}{'tool':<9}{'seconds':>22}{'MB/s':>8}{'peak RSS MB':>13}")
    for label, key in rows:
        for tool in ("bulwark", "restic", "borg"):
            if not isinstance(repetitions[0][tool].get(key), Run):
                continue
            median, low, high = spread([seconds(r, tool, key) for r in repetitions])
            rss = statistics.median(
                r[tool][key].peak_rss_mb  # type: ignore[union-attr]
                for r in repetitions
            )
            print(
                f"{label:<26}{tool:<9}{median:>10.2f} ({low:.2f}-{high:.2f}){mb / median:>8.0f}{rss:>13.0f}"
            )
    median, low, high = spread([worker_seconds(r) for r in repetitions])
    print(
        f"{'day-2, changed areas':<26}{'bulwark':<9}{median:>10.3f} ({low:.3f}-{high:.3f})   inside a worker"
    )
    for tool in ("bulwark", "restic", "borg"):
        stored = statistics.median(int(r[tool]["size"]) for r in repetitions)
        identical = all(r[tool]["identical"] for r in repetitions)
        print(
            f"{'repository size':<26}{tool:<9}{stored / 1e6:>10.1f} MB   restore identical: {'yes' if identical else 'NO'}"
        )
    index_mb = index_memory_per_million()
    print(
        f"index memory: {index_mb:.0f} MB per million chunks (one million 64 KiB blocks = 64 GB of unique data)"
    )

    # incremental_x is the production path: a worker with the repository open (Bulwark's backups run in
    # long-lived Celery workers). incremental_cli_x adds a fresh process, its imports and the passphrase's
    # scrypt, about 0.15 s that no worker pays per backup.
    def figures_of(r: dict[str, dict[str, Run | int]]) -> dict[str, float]:
        return {
            "full_backup_x": seconds(r, "restic", "full") / seconds(r, "bulwark", "full"),
            "incremental_x": seconds(r, "restic", "day2_full") / worker_seconds(r),
            "incremental_cli_x": seconds(r, "restic", "day2_full") / seconds(r, "bulwark", "day2_cbt"),
            "incremental_reread_x": seconds(r, "restic", "day2_full") / seconds(r, "bulwark", "day2_full"),
            "restore_x": seconds(r, "restic", "restore") / seconds(r, "bulwark", "restore"),
            "size_ratio": int(r["bulwark"]["size"]) / int(r["restic"]["size"]),
            "vs_borg_full_x": seconds(r, "borg", "full") / seconds(r, "bulwark", "full"),
        }

    per_run = [figures_of(r) for r in repetitions]
    medians: dict[str, float | int] = {}
    print(f"{'figure':<24}{'median':>8}  min-max")
    for key in per_run[0]:
        median, low, high = spread([figures[key] for figures in per_run])
        medians[key] = median
        print(f"{key:<24}{median:>8.2f}  {low:.2f}-{high:.2f}")
    medians["identical"] = int(all(r[t]["identical"] for r in repetitions for t in r))
    medians["repetitions"] = count
    medians["index_mb_per_million_chunks"] = index_mb
    print(
        " ".join(
            f"{key}={value:.2f}" if isinstance(value, float) else f"{key}={value}"
            for key, value in medians.items()
        )
    )


if __name__ == "__main__":
    main()
