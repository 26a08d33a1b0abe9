"""The file catalog of image backups against dissect and restic, in one run.

python -m benchmarks.catalog [--quick] [--repeat N] [--versions N]

Builds an ext4 image (1 GiB; --quick: 256 MiB) with `mkfs.ext4 -d` from real files (/usr/lib, /usr/share) plus
small generated ones (at least 50,000 files; --quick: 20,000) and one 10 MB file, stores it in a fresh
repository as a backup does, and measures:
1. catalog walk: files per second through the stored, encrypted chunks (the sandboxed child, as in production,
   child start included) against dissect's own walk of the raw image file (dissect.extfs in a plain process, the
   same attributes); the whole catalog job (walk + recording the versions) is the "catalog s" row;
2. backup + catalog against backup alone (the engine's ImageWriter over the raw image);
3. day-2 catalog after a day of work done in place with debugfs (4 % of the image rewritten in scattered 64 KiB
   areas of files, whose times move on; 100 small files written, some removed): time and metadata bytes read,
   against the first catalog;
4. single-file restore of the 10 MB file out of the image point: seconds and bytes read from the repository,
   against `restic dump` of the same file from a restic backup of the same tree (restic's best case);
5. search p50/p95 on PostgreSQL over generated file versions (--versions; default 10 M, --quick 1 M) for a name
   substring, a path prefix and a size/time range; SQLite at a tenth of that; catalog bytes per version.
Figures 1-4 are the median of --repeat runs (at least 3) with min-max. Needs e2fsprogs and restic (Debian).
Last line: catalog_files_per_s=... catalog_vs_dissect_x=... backup_catalog_overhead_x=... day2_catalog_x=...
file_restore_s=... file_restore_read_x=... file_restore_vs_restic_x=... search_p95_ms=... sqlite_search_p95_ms=...
bytes_per_version=...
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
SOURCES = [Path("/usr/lib"), Path("/usr/share")]
BIG = "big-10MB.bin"
PASSWORD = "benchmark passphrase"

DISSECT_WALK = r"""
import sys, time
from dissect.extfs import ExtFS
started = time.perf_counter()
fs = ExtFS(open(sys.argv[1], "rb"))
count, stack, seen = 0, [fs.root], set()
while stack:
    node = stack.pop()
    if node.inum in seen:
        continue
    seen.add(node.inum)
    for child in node.iterdir():
        if child.filename in (".", ".."):
            continue
        count += 1
        inode = child.inode
        _ = (child.size, inode.i_mode, inode.i_uid, child.mtime_ns, child.ctime_ns, child.atime_ns)
        if child.filetype == 0o040000:
            stack.append(child)
        elif child.filetype == 0o100000:
            child.dataruns()
print(count, time.perf_counter() - started)
"""


def stage(tree: Path, budget: int, small_files: int) -> int:
    """Real files up to `budget` bytes, `small_files` generated ones in nested folders, one 10 MB file."""
    rng = random.Random(7)
    total = count = 0
    for source in SOURCES:
        for directory, _, names in os.walk(source):
            for name in sorted(names):
                path = Path(directory) / name
                try:
                    if path.is_symlink() or not path.is_file() or path.stat().st_size > 4 * MIB:
                        continue
                    size = path.stat().st_size
                    if total + size > budget:
                        break
                    target = tree / "real" / path.relative_to("/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, target)
                    total += size
                    count += 1
                except OSError:
                    continue
            if total >= budget:
                break
    for number in range(small_files):
        folder = tree / "small" / f"d{number % 97:02d}" / f"e{number % 13:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"f{number:06d}.txt").write_bytes(rng.randbytes(rng.randint(0, 2048)))
    (tree / BIG).write_bytes(rng.randbytes(10 * 1000 * 1000))
    return count + small_files + 1


def median(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def setup_django(database: str, data_dir: str) -> None:
    os.environ.update(
        BULWARK_DATA_DIR=data_dir,
        DATABASE_URL=database,
        BULWARK_EMBEDDED_WATCH="false",
        DJANGO_SETTINGS_MODULE="config.settings",
        CELERY_TASK_ALWAYS_EAGER="false",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def measure_catalog(work: Path, image: Path, files: int, small: int, repeat: int) -> dict[str, Any]:
    from catalog import extract, indexer, repositories
    from catalog.models import FileVersion, RecoveryPoint
    from catalog.services import create_repository
    from engine.image import ImageWriter
    from tests.factories import MachineFactory

    figures: dict[str, list[float]] = {
        k: []
        for k in (
            "walk_fps",
            "dissect_fps",
            "backup_s",
            "catalog_s",
            "day2_s",
            "day2_read",
            "day1_read",
            "restore_s",
            "restore_read",
            "restic_s",
        )
    }
    day2_image = work / "day2.img"
    size = image.stat().st_size
    areas: dict[int, str] = {}
    for attempt in range(repeat):
        repositories.forget_open_repositories()
        repository = create_repository(
            actor=None,
            name=f"bench-{attempt}-{uuid.uuid4().hex[:6]}",
            kind="local",
            path=str(work / f"repo-{attempt}"),
        )
        machine = MachineFactory(name=f"bench-{attempt}-{uuid.uuid4().hex[:6]}")
        engine = repositories.open_repository(repository)
        os.sync()
        started = time.perf_counter()
        writer = ImageWriter(engine, machine=machine.identity)
        with open(image, "rb") as source:
            writer.write_disk("2000", source, size=size)
        snapshot = writer.commit()
        figures["backup_s"].append(time.perf_counter() - started)
        point = image_point(machine, repository, snapshot)
        started = time.perf_counter()
        point = indexer.catalog_point(point)
        seconds = time.perf_counter() - started
        assert point.catalog_state == "complete", point.catalog_detail
        figures["catalog_s"].append(seconds)
        # The walk alone (the sandboxed child reading through the stored chunks), as dissect's walk is timed.
        stored = engine.load_snapshot(snapshot.id)
        started = time.perf_counter()
        walked = indexer.walk_snapshot(engine, stored)
        figures["walk_fps"].append(len(walked.entries) / (time.perf_counter() - started))
        figures["day1_read"].append(point.catalog_read_bytes)
        done = subprocess.run(
            [sys.executable, "-c", DISSECT_WALK, str(image)], capture_output=True, text=True, check=True
        )
        count, dissect_seconds = done.stdout.split()
        figures["dissect_fps"].append(int(count) / float(dissect_seconds))
        if not areas:
            areas = day2_areas(point, size)
            shutil.copyfile(image, day2_image)
            day2_changes(day2_image, areas, work, small)
        # Day 2: the changed image backed up again (unchanged blocks deduplicate), then catalogued.
        writer = ImageWriter(engine, machine=machine.identity, parent=snapshot)
        with open(day2_image, "rb") as source:
            writer.write_disk("2000", source, size=size)
        day2 = writer.commit()
        point2 = image_point(machine, repository, day2)
        RecoveryPoint.objects.filter(pk=point2.pk).update(
            taken_at=point.taken_at.replace(year=point.taken_at.year + 1)
        )
        point2.refresh_from_db()
        started = time.perf_counter()
        point2 = indexer.catalog_point(point2)
        figures["day2_s"].append(time.perf_counter() - started)
        assert point2.catalog_state == "complete", (point2.catalog_state, point2.catalog_detail)
        figures["day2_read"].append(point2.catalog_read_bytes)
        # One 10 MB file out of the first point, through a fresh reader (nothing cached).
        version = FileVersion.objects.get(machine=machine, path__text=f"/{BIG}", first_point=point)
        repositories.forget_open_repositories()
        engine = repositories.open_repository(repository)
        loaded = engine.load_snapshot(point.snapshot_id)
        reads: list[int] = []
        real_read = engine.read_chunk

        def counted(chunk_id: bytes, real_read: Any = real_read, reads: list[int] = reads) -> bytes:
            data = real_read(chunk_id)  # every chunk fetched and decrypted from the repository
            reads.append(len(data))
            return data

        engine.read_chunk = counted  # type: ignore[method-assign]
        try:
            started = time.perf_counter()
            with open(work / "restored.bin", "wb") as out:
                for piece in extract.file_bytes(engine, loaded, version):
                    out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            figures["restore_s"].append(time.perf_counter() - started)
        finally:
            engine.read_chunk = real_read  # type: ignore[method-assign]
        assert (work / "restored.bin").read_bytes() == (work / "tree" / BIG).read_bytes()
        figures["restore_read"].append(sum(reads))
        figures["restic_s"].append(restic_dump(work, attempt))
    return figures


def image_point(machine: Any, repository: Any, snapshot: Any) -> Any:
    from catalog.choices import PointKind
    from catalog.services import record_point

    return record_point(
        machine=machine,
        repository=repository,
        run_id=None,
        snapshot=snapshot,
        kind=PointKind.IMAGE,
        consistent=True,
        disks=[],
    )


def day2_areas(point: Any, size: int) -> dict[int, str]:
    """4 % of the image in scattered 64 KiB areas inside files' data, with the file each one belongs to."""
    from catalog.models import FileVersion

    inside: dict[int, str] = {}
    for path, extents in FileVersion.objects.filter(first_point=point, kind="file").values_list(
        "path__text", "extents"
    ):
        for _, offset, length in extents if isinstance(extents, list) else []:
            first, last = -(-offset // 65536), (offset + length) // 65536
            inside.update((area, path) for area in range(first, last))
    wanted = max(1, size // 65536 * 4 // 100)
    rng = random.Random(4)
    return {area: inside[area] for area in sorted(rng.sample(sorted(inside), min(wanted, len(inside))))}


def day2_changes(image: Path, areas: dict[int, str], work: Path, small: int) -> None:
    """A day of work on the file system, in place: the areas rewritten and their files' times moved on (as a
    write does), 100 of the small files removed and 100 new ones written (debugfs; no mount)."""
    rng = random.Random(4)
    with open(image, "r+b") as disk:
        for area in areas:
            disk.seek(area * 65536)
            disk.write(rng.randbytes(65536))
    commands = []
    for path in sorted(set(areas.values())):
        commands += [f"sif {path} mtime 20270101120000", f"sif {path} ctime 20270101120000"]
    fresh = work / "fresh.txt"
    fresh.write_bytes(rng.randbytes(1500))
    for number in range(100):
        folder = f"/small/d{rng.randrange(97):02d}/e{rng.randrange(13):02d}"
        commands.append(f"write {fresh} {folder}/new{number:04d}.txt")
    for number in rng.sample(range(small), 100):
        commands.append(f"rm /small/d{number % 97:02d}/e{number % 13:02d}/f{number:06d}.txt")
    subprocess.run(
        ["/usr/sbin/debugfs", "-w", "-f", "-", str(image)],
        input="\n".join(commands).encode(),
        capture_output=True,
        check=True,
    )


def restic_dump(work: Path, attempt: int) -> float:
    if shutil.which("restic") is None:
        return float("nan")
    repo = work / f"restic-{attempt}"
    env = {**os.environ, "RESTIC_PASSWORD": PASSWORD, "RESTIC_REPOSITORY": str(repo)}
    subprocess.run(["restic", "init", "-q"], env=env, check=True, capture_output=True)
    subprocess.run(
        ["restic", "backup", "-q", "."], env=env, check=True, capture_output=True, cwd=work / "tree"
    )
    started = time.perf_counter()
    with open(work / "restic.bin", "wb") as out:
        subprocess.run(["restic", "dump", "-q", "latest", f"/{BIG}"], env=env, check=True, stdout=out)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    assert (work / "restic.bin").read_bytes() == (work / "tree" / BIG).read_bytes()
    return seconds


def generate_versions(count: int) -> None:
    """`count` file versions over 200 machines (names, folders and sizes spread like a real estate), written
    straight into the tables (COPY on PostgreSQL)."""
    from django.db import connection
    from django.utils import timezone

    from catalog.indexer import path_ids
    from catalog.models import FileVersion, RecoveryPoint
    from catalog.services import create_repository
    from tests.factories import MachineFactory

    rng = random.Random(11)
    repository = create_repository(
        actor=None, name=f"search-{uuid.uuid4().hex[:6]}", kind="local", path=tempfile.mkdtemp()
    )
    machines = [MachineFactory(name=f"srv-{n:03d}") for n in range(200)]
    now = timezone.now()
    points = {
        m.pk: RecoveryPoint.objects.create(
            machine=m, repository=repository, snapshot_id=f"s-{m.pk}", taken_at=now, catalog_state="complete"
        )
        for m in machines
    }
    words = ["report", "invoice", "budget", "notes", "config", "backup", "photo", "draft", "final", "data"]
    paths = [
        f"/home/u{n % 500}/{rng.choice(words)}-{n}.{rng.choice(['pdf', 'xlsx', 'txt', 'conf'])}"
        for n in range(max(1000, count // 50))
    ]
    folders = sorted({p.rsplit("/", 1)[0] for p in paths})
    ids = path_ids(paths + folders)
    if connection.vendor == "postgresql":
        import io

        batch = io.StringIO()
        fields = [
            "machine_id",
            "repository_id",
            "volume",
            "path_id",
            "parent_id",
            "kind",
            "size",
            "mode",
            "mtime_ns",
            "link_target",
            "signature",
            "first_point_id",
            "last_point_id",
            "first_at",
            "last_at",
        ]
        for n in range(count):
            machine = machines[n % 200]
            path = paths[rng.randrange(len(paths))]
            row = [
                machine.pk,
                repository.pk,
                "2000:p1",
                ids[path],
                ids[path.rsplit("/", 1)[0]],
                "file",
                rng.randrange(1, 50 * MIB),
                420,
                rng.randrange(1_600_000_000, 1_800_000_000) * 10**9,
                "",
                f"{n:032x}",
                points[machine.pk].pk,
                points[machine.pk].pk,
                now.isoformat(),
                now.isoformat(),
            ]
            batch.write("\t".join(str(v) for v in row) + "\n")
        batch.seek(0)
        with connection.cursor() as cursor:
            cursor.cursor.copy_from(batch, "catalog_fileversion", columns=fields)
            cursor.execute("ANALYZE catalog_fileversion; ANALYZE catalog_pathname")
    else:
        rows = []
        for n in range(count):
            machine = machines[n % 200]
            path = paths[rng.randrange(len(paths))]
            rows.append(
                FileVersion(
                    machine=machine,
                    repository=repository,
                    volume="2000:p1",
                    path_id=ids[path],
                    parent_id=ids[path.rsplit("/", 1)[0]],
                    kind="file",
                    size=rng.randrange(1, 50 * MIB),
                    mode=420,
                    mtime_ns=rng.randrange(1_600_000_000, 1_800_000_000) * 10**9,
                    signature=f"{n:032x}",
                    first_point=points[machine.pk],
                    last_point=points[machine.pk],
                    first_at=now,
                    last_at=now,
                )
            )
            if len(rows) >= 20000:
                FileVersion.objects.bulk_create(rows)
                rows = []
        FileVersion.objects.bulk_create(rows)


def measure_search(queries: int = 30) -> dict[str, Any]:
    import datetime

    from django.db import connection

    from catalog.search import FileQuery, search
    from core.models import User

    admin = User.objects.filter(role="admin").first() or User.objects.create_user(
        "bench-admin", password=secrets.token_urlsafe(), role="admin"
    )
    kinds = {
        "name": lambda n: FileQuery(name=["invoice-1", "budget", "notes-77", "photo-3"][n % 4]),
        "prefix": lambda n: FileQuery(path=f"/home/u{n * 7 % 500}"),
        "range": lambda n: FileQuery(
            name="report",
            size_min=10 * MIB,
            size_max=20 * MIB,
            modified_after=datetime.datetime(2022, 1, 1, tzinfo=datetime.UTC),
        ),
    }
    timings: dict[str, list[float]] = {}
    for label, make in kinds.items():
        search(admin, make(0), limit=50)  # warm
        timings[label] = []
        for n in range(queries):
            started = time.perf_counter()
            search(admin, make(n), limit=50)
            timings[label].append((time.perf_counter() - started) * 1000)
    every = sorted(t for values in timings.values() for t in values)
    size = 0
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_total_relation_size('catalog_fileversion') + pg_total_relation_size('catalog_pathname'), (SELECT count(*) FROM catalog_fileversion)"
            )
            total, rows = cursor.fetchone()
            size = total / max(rows, 1)
    return {
        "timings": timings,
        "p50": statistics.median(every),
        "p95": every[int(len(every) * 0.95) - 1],
        "bytes_per_version": size,
    }


def sqlite_search(count: int) -> None:
    """Child mode: a SQLite database with `count` versions; prints the search figures as JSON."""
    work = Path(tempfile.mkdtemp(prefix="bulwark-catalog-sqlite-"))
    setup_django(f"sqlite:///{work / 'db.sqlite3'}", str(work))
    generate_versions(count)
    print(json.dumps(measure_search()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--versions", type=int, default=None)
    parser.add_argument("--sqlite-search", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--image-mib", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--small", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sqlite_search:
        sqlite_search(args.sqlite_search)
        return
    repeat = max(3, args.repeat)
    versions = args.versions or (1_000_000 if args.quick else 10_000_000)
    image_size = (args.image_mib or (256 if args.quick else 1024)) * MIB
    small = args.small or (20_000 if args.quick else 50_000)
    import psycopg2

    database = f"bulwark_bench_{uuid.uuid4().hex[:8]}"
    admin_connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin_connection.autocommit = True
    admin_connection.cursor().execute(f"CREATE DATABASE {database}")
    work = Path(tempfile.mkdtemp(prefix="bulwark-catalog-bench-"))
    try:
        setup_django(f"postgres://postgres@127.0.0.1:5432/{database}", str(work))
        tree = work / "tree"
        # What the small files, the big one, the inode tables and the journal take leaves the room for real files.
        room = image_size * 0.8 - small * 4096 - 10 * MIB - (small + 20_000) * 256 - 32 * MIB
        files = stage(tree, max(int(room), 0), small)
        image = work / "disk.img"
        subprocess.run(
            [
                "mkfs.ext4",
                "-q",
                "-F",
                "-b",
                "4096",
                "-N",
                str(files + 10_000),
                "-J",
                "size=8",
                "-d",
                str(tree),
                str(image),
                f"{image_size // MIB}M",
            ],
            check=True,
        )
        figures = measure_catalog(work, image, files, small, repeat)
        generate_versions(versions)
        found = measure_search()
        sqlite = subprocess.run(
            [sys.executable, "-m", "benchmarks.catalog", "--sqlite-search", str(versions // 10)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
        )
        sqlite_found = json.loads(sqlite.stdout.strip().splitlines()[-1])
    finally:
        from django.db import connections

        connections.close_all()
        admin_connection.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(work, ignore_errors=True)
    m = {key: statistics.median(values) for key, values in figures.items()}
    print(f"Image {image_size // MIB} MiB, {files:,} files; {repeat} repetitions: median (min-max)")
    print(f"{'measure':<44}{'Bulwark':>28}{'peer':>28}")
    print(
        f"{'catalog walk, files/s (peer: dissect raw)':<44}{median(figures['walk_fps']):>28}{median(figures['dissect_fps']):>28}"
    )
    print(f"{'backup s / catalog s':<44}{median(figures['backup_s']):>28}{median(figures['catalog_s']):>28}")
    print(
        f"{'day-2 catalog s (peer: day 1)':<44}{median(figures['day2_s']):>28}{median(figures['catalog_s']):>28}"
    )
    print(
        f"{'day-2 metadata MiB read (peer: day 1)':<44}{statistics.median(figures['day2_read']) / MIB:>28.1f}{statistics.median(figures['day1_read']) / MIB:>28.1f}"
    )
    print(
        f"{'10 MB file restore s (peer: restic dump)':<44}{median(figures['restore_s']):>28}{median(figures['restic_s']):>28}"
    )
    print(
        f"{'10 MB file restore MiB read':<44}{statistics.median(figures['restore_read']) / MIB:>28.2f}{'':>28}"
    )
    for label, values in found["timings"].items():
        ordered = sorted(values)
        print(
            f"{'search ' + label + ' p50/p95 ms, PostgreSQL ' + format(versions, ','):<44}{statistics.median(ordered):>16.1f} / {ordered[int(len(ordered) * 0.95) - 1]:.1f}"
        )
    print(f"{'search p95 ms, SQLite ' + format(versions // 10, ','):<44}{sqlite_found['p95']:>28.1f}")
    print(
        f"catalog_files_per_s={m['walk_fps']:.0f} catalog_vs_dissect_x={m['walk_fps'] / m['dissect_fps']:.2f} "
        f"backup_catalog_overhead_x={(m['backup_s'] + m['catalog_s']) / m['backup_s']:.2f} "
        f"day2_catalog_x={m['day2_s'] / m['catalog_s']:.2f} file_restore_s={m['restore_s']:.3f} "
        f"file_restore_read_x={m['restore_read'] / 10_000_000:.2f} "
        f"file_restore_vs_restic_x={m['restore_s'] / m['restic_s']:.2f} search_p95_ms={found['p95']:.1f} "
        f"sqlite_search_p95_ms={sqlite_found['p95']:.1f} bytes_per_version={found['bytes_per_version']:.0f}"
    )


if __name__ == "__main__":
    main()
