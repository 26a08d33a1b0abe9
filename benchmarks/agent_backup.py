"""Agent file backups against restic on the same tree, in one run.

python -m benchmarks.agent_backup [--quick] [--size 512M] [--repeat N]

Real files copied from /usr/lib and /usr/share (--quick: 128 MiB, else 512 MiB), each tree holding a second copy
of a tenth of its files (a duplicate folder, as on real servers). Bulwark: the real agent process enrols with a
console served over TLS in this process (SQLite, a local repository) and backs the tree up with source-side
dedup; the console checks every chunk id and stores. restic backs the same tree up into a local repository.

Day 2 rewrites about 4 % of the files (scattered, whole-file rewrites with new content) and adds a few new ones.
Then the whole tree is restored onto the host: the agent unpacks the console's tar stream with its path checks,
restic restores from its repository. Measured: wall time and peak RSS of the agent and of restic, bytes that
travelled from the agent to the console, and the repository sizes. restic writes straight to its repository (no network hop), which favours
it. The whole comparison runs --repeat times (at least 3), each in a process of its own; every figure is the
median with its min-max. Last line: files=... full_x=... incremental_x=... restore_x=... day2_sent_mb=...
size_ratio=... (the medians).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.engine_vs_restic import Run, directory_size, parse_size, run, stage_files

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark passphrase"
MACHINE_ID = "be0c4000000000000000000000000001"


def make_tree(target: Path, budget: int) -> tuple[int, int]:
    stage_files(target / "live", int(budget * 0.9))
    files = sorted(p for p in (target / "live").rglob("*") if p.is_file())
    rng = random.Random(5)
    for path in rng.sample(files, len(files) // 10):  # a duplicate folder: dedup finds it
        copy = target / "copy" / path.relative_to(target / "live")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    count = sum(1 for p in target.rglob("*") if p.is_file())
    return count, directory_size(target)


def day2(target: Path, fraction: float = 0.04) -> int:
    files = sorted(p for p in target.rglob("*") if p.is_file())
    rng = random.Random(2026)
    changed = 0
    for path in rng.sample(files, max(1, int(len(files) * fraction))):
        size = path.stat().st_size
        path.write_bytes(rng.randbytes(max(size, 1)))
        changed += size
    for number in range(20):
        (target / f"new-{number}.bin").write_bytes(rng.randbytes(256 * 1024))
        changed += 256 * 1024
    return changed


def measured(command: list[str], env: dict[str, str]) -> Run:
    """Wall time, and peak RSS taken by a small launcher (see benchmarks.measure)."""
    with tempfile.NamedTemporaryFile() as out:
        result = run(
            [sys.executable, "-m", "benchmarks.measure", out.name, "--", *command], env=env, cwd=ROOT
        )
        result.peak_rss_mb = int(Path(out.name).read_text() or 0) / 1024
    return result


def agent(state: Path, *args: str) -> Run:
    env = {"PYTHONPATH": str(ROOT / "agent")}
    return measured(
        [sys.executable, "-m", "bulwark_agent", "--state-dir", str(state), "--machine-id", MACHINE_ID, *args],
        env,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="128 MiB of files")
    parser.add_argument("--size", default="512M")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--repeat", type=int, default=3, help="whole repetitions (medians are reported)")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)  # one repetition (a child)
    args = parser.parse_args()
    if shutil.which("restic") is None:
        raise SystemExit("restic is missing: apt-get install restic")
    if not args.once:
        repeat(args)
        return
    budget = parse_size("128M" if args.quick else args.size)
    work = Path(tempfile.mkdtemp(prefix="bulwark-agent-bench-"))
    os.environ.update(
        BULWARK_DATA_DIR=str(work / "console"),
        DATABASE_URL=f"sqlite:///{work / 'console.sqlite3'}",
        BULWARK_EMBEDDED_WATCH="false",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    try:
        tree = work / "tree"
        count, size = make_tree(tree, budget)
        print(f"{count} files, {size / 2**20:.0f} MiB", file=sys.stderr)
        results = bench(work, tree)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report(results, count, size)


def repeat(args: argparse.Namespace) -> None:
    """Each repetition in a process of its own (its own console database, repositories and tree); every
    figure is the median of the repetitions with its min-max, and the last line holds the medians."""
    if args.repeat < 3:
        raise SystemExit("--repeat must be at least 3: a figure is the median of three runs or more")
    child = [
        sys.executable,
        "-m",
        "benchmarks.agent_backup",
        "--once",
        "--size",
        "128M" if args.quick else args.size,
    ]
    figures: list[dict[str, float]] = []
    for number in range(args.repeat):
        done = subprocess.run(child, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode:
            raise SystemExit(f"repetition {number + 1} failed:\n{done.stderr[-3000:]}")
        lines = done.stdout.strip().splitlines()
        print(f"repetition {number + 1} of {args.repeat}", file=sys.stderr)
        print("\n".join(lines[:-1]), file=sys.stderr)
        figures.append({key: float(value) for key, value in (item.split("=") for item in lines[-1].split())})
    print(f"median of {len(figures)} repetitions (min-max)")
    print(f"{'figure':<16}{'median':>9}  min-max")
    medians = {}
    for key in figures[0]:
        values = sorted(figure[key] for figure in figures)
        medians[key] = statistics.median(values)
        print(f"{key:<16}{medians[key]:>9.2f}  {values[0]:.2f}-{values[-1]:.2f}")
    print(" ".join(f"{key}={value:.2f}" for key, value in medians.items()) + f" repetitions={len(figures)}")


def bench(work: Path, tree: Path) -> dict[str, object]:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from catalog import repositories
    from catalog.models import RecoveryPoint
    from catalog.services import create_repository
    from inventory import agents
    from inventory.models import Machine
    from protection import services
    from protection.backup import start_backup
    from protection.models import BackupRun
    from tests.live import make_ca_and_server_cert, serve_asgi

    repository = create_repository(actor=None, name="primary", kind="local", path=str(work / "bulwark-repo"))
    policy = services.create_policy(actor=None, name="servers")
    services.update_policy(
        actor=None,
        policy=policy,
        mode="agent",
        repository=repository,
        dedup_location="agent",
        include_paths=str(tree),
    )
    services.create_rule(actor=None, name="agents", policy=policy, match_platform="agent")
    _, token = agents.create_enrolment_token(actor=None, label="bench")  # type: ignore[arg-type]
    ca, cert, key = make_ca_and_server_cert(work / "tls")
    state = work / "agent-state"
    results: dict[str, object] = {}
    restic_env = {"RESTIC_REPOSITORY": str(work / "restic-repo"), "RESTIC_PASSWORD": PASSWORD}
    run(["restic", "init"], env=restic_env)
    with serve_asgi(certfile=cert, keyfile=key) as url:
        agent(state, "enrol", "--server", url, "--token", token, "--ca", str(ca))
        machine = Machine.objects.get(identity=f"agent:{MACHINE_ID}")

        def backup(day: str) -> None:
            backup_run = start_backup(machine=machine, requested_by=None)
            results[f"bulwark_{day}"] = agent(state, "run", "--once")
            finished = BackupRun.objects.get(pk=backup_run.pk)
            if finished.state != "committed":
                raise SystemExit(f"the agent run failed: {finished.error}")
            point = RecoveryPoint.objects.get(run=finished, kind="files")
            engine = repositories.open_repository(repository)
            results[f"bulwark_{day}_sent"] = engine.load_snapshot(point.snapshot_id).stats["sent_bytes"]

        backup("full")
        results["restic_full"] = measured(["restic", "backup", "--quiet", str(tree)], restic_env)
        results["changed"] = day2(tree)
        backup("day2")
        results["restic_day2"] = measured(["restic", "backup", "--quiet", str(tree)], restic_env)
        # Restore the whole tree back onto the agent's host (streamed tar, checked extraction) against restic's.
        from restores import services as restores

        point = RecoveryPoint.objects.filter(machine=machine, kind="files").order_by("-taken_at").first()
        assert point is not None
        request = restores.request_restore(
            actor=None,
            point=point,
            kind="files_to_agent",
            target=str(work / "bulwark-out"),  # type: ignore[arg-type]
        )
        results["bulwark_restore"] = agent(state, "run", "--once")
        request.refresh_from_db()
        if request.state != "done":
            raise SystemExit(f"the agent restore failed: {request.error}")
        results["restic_restore"] = measured(
            ["restic", "restore", "latest", "--target", str(work / "restic-out")], restic_env
        )
        restored = work / "bulwark-out" / str(tree).lstrip("/")
        if subprocess.run(["diff", "-r", "-q", str(tree), str(restored)], check=False).returncode:
            raise SystemExit("the agent restore differs from the tree")
    results["bulwark_size"] = directory_size(work / "bulwark-repo")
    results["restic_size"] = directory_size(work / "restic-repo")
    return results


def report(results: dict[str, object], count: int, size: int) -> None:
    def row(name: str, bulwark: Run, restic: Run, sent: int | None) -> None:
        print(
            f"| {name} | {bulwark.seconds:.2f} s, {size / bulwark.seconds / 1e6:.0f} MB/s, "
            f"{bulwark.peak_rss_mb:.0f} MB | {restic.seconds:.2f} s, {size / restic.seconds / 1e6:.0f} MB/s, "
            f"{restic.peak_rss_mb:.0f} MB | {f'{sent / 2**20:.1f} MiB' if sent is not None else '—'} |"
        )

    full, day2_run = results["bulwark_full"], results["bulwark_day2"]
    restic_full, restic_day2 = results["restic_full"], results["restic_day2"]
    assert isinstance(full, Run) and isinstance(day2_run, Run)
    assert isinstance(restic_full, Run) and isinstance(restic_day2, Run)
    print(f"{count} files, {size / 2**20:.0f} MiB; day 2 rewrote {int(results['changed']) / 2**20:.1f} MiB")  # type: ignore[call-overload]
    print("| step | Bulwark agent (time, rate, peak RSS) | restic | sent by the agent |")
    print("|---|---|---|---|")
    row("first backup", full, restic_full, int(results["bulwark_full_sent"]))  # type: ignore[call-overload]
    row("day 2", day2_run, restic_day2, int(results["bulwark_day2_sent"]))  # type: ignore[call-overload]
    restore, restic_restore = results["bulwark_restore"], results["restic_restore"]
    assert isinstance(restore, Run) and isinstance(restic_restore, Run)
    row("restore to the host", restore, restic_restore, None)
    bulwark_size, restic_size = int(results["bulwark_size"]), int(results["restic_size"])  # type: ignore[call-overload]
    print(f"| repository size | {bulwark_size / 2**20:.1f} MiB | {restic_size / 2**20:.1f} MiB | |")
    print(
        f"files={count} full_x={restic_full.seconds / full.seconds:.2f} "
        f"incremental_x={restic_day2.seconds / day2_run.seconds:.2f} "
        f"restore_x={restic_restore.seconds / restore.seconds:.2f} "
        f"day2_sent_mb={int(results['bulwark_day2_sent']) / 1e6:.1f} "  # type: ignore[call-overload]
        f"size_ratio={bulwark_size / restic_size:.2f}"
    )


if __name__ == "__main__":
    main()
