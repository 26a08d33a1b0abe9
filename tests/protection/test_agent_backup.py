"""Agent backups end to end: a real agent process backs files and a volume up into a real repository through a
live console over TLS (source-side dedup, pre/post scripts), restores files back to its host, survives a dropped
connection and a kill; the console refuses chunks whose ids lie and commits only what is stored."""

from __future__ import annotations

import io
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from catalog import repositories
from catalog.models import RecoveryPoint
from catalog.services import create_repository
from engine.files import restore_tree
from engine.image import restore_image
from engine.maintenance import verify
from inventory import agents
from inventory.models import Agent, Machine
from protection import agent_runs, services
from protection.backup import BackupRefused, cancel_run, reap_stale_runs, start_backup
from protection.choices import RunState
from protection.models import BackupRun
from restores import services as restores
from restores.models import RestoreRequest
from tests.conftest import Estate
from tests.live import make_ca_and_server_cert, serve_asgi
from tests.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
MACHINE_ID = "5eed0000000000000000000000000a11"


def agent_command(state: Path, *args: str) -> tuple[list[str], dict[str, str]]:
    """The agent as its own process (this checkout's package), and its environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "agent")}
    command = [sys.executable, "-m", "bulwark_agent", "--state-dir", str(state), "--machine-id", MACHINE_ID]
    return [*command, "--hostname", "files-01", *args], env


def agent(state: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command, env = agent_command(state, *args)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def make_tree(root: Path, seed: int = 3) -> None:
    rng = random.Random(seed)
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "app.conf").write_text("listen 8443\n" * 40)
    os.chmod(root / "etc" / "app.conf", 0o640)
    (root / "data" / "deep" / "er").mkdir(parents=True)
    (root / "data" / "big.bin").write_bytes(rng.randbytes(3 * 1024 * 1024))
    (root / "data" / "copy.bin").write_bytes((root / "data" / "big.bin").read_bytes())  # dedups to nothing
    (root / "data" / "deep" / "er" / "note.txt").write_text("deep note\n")
    (root / "data" / "empty").write_bytes(b"")
    (root / "data" / "skip.tmp").write_text("excluded")
    (root / "data" / "link").symlink_to("deep/er/note.txt")
    os.utime(root / "etc" / "app.conf", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


@pytest.fixture
def setup(tmp_path: Path, transactional_db: None, estate: Estate, settings) -> Iterator[dict]:  # type: ignore[no-untyped-def, type-arg]
    settings.DATA_DIR = tmp_path
    repositories.forget_open_repositories()
    ca, cert, key = make_ca_and_server_cert(tmp_path / "tls")
    source = tmp_path / "host"
    make_tree(source)
    volume = tmp_path / "sdb.img"
    rng = random.Random(9)
    image = bytearray(4 * 1024 * 1024)
    image[0:65536] = rng.randbytes(65536)
    image[1024 * 1024 : 1024 * 1024 + 200_000] = rng.randbytes(200_000)
    volume.write_bytes(bytes(image))
    repository = create_repository(actor=None, name="primary", kind="local", path=str(tmp_path / "repo"))
    policy = services.create_policy(actor=None, name="servers")
    policy.mode = "agent"
    policy.repository = repository
    policy.dedup_location = "agent"
    policy.include_paths = f"{source}/etc\n{source}/data\n"
    policy.exclude_patterns = "*.tmp"
    policy.volumes = str(volume)
    policy.pre_script = f"echo pre > {tmp_path}/pre-ran"
    policy.post_script = f"echo post > {tmp_path}/post-ran"
    policy.save()
    services.create_rule(actor=None, name="agents", policy=policy, match_platform="agent")
    _, token = agents.create_enrolment_token(actor=estate.admin, label="rack 2")
    state = tmp_path / "state"
    with serve_asgi(certfile=cert, keyfile=key) as url:
        enrolled = agent(state, "enrol", "--server", url, "--token", token, "--ca", str(ca))
        assert enrolled.returncode == 0, enrolled.stderr
        machine = Machine.objects.get(identity=f"agent:{MACHINE_ID}")
        yield {
            "url": url,
            "ca": ca,
            "state": state,
            "source": source,
            "volume": volume,
            "machine": machine,
            "policy": policy,
            "repository": repository,
            "tmp": tmp_path,
        }


def one_file_tree(chunk: bytes, size: int) -> bytes:
    """A file-tree chunk as an agent sends it: one file "f" made of one chunk."""
    import json

    entry = {"name": "f", "type": "file", "size": size, "chunks": [chunk.hex()], "mode": 420}
    entry.update(uid=0, gid=0, mtime_ns=0, atime_ns=0)
    return json.dumps({"version": 1, "entries": [entry]}, sort_keys=True, separators=(",", ":")).encode()


def agent_storing(state: Path, run: BackupRun, *, more_than: int) -> subprocess.Popen[str]:
    """Start `bulwark-agent run --once` and return once the run has stored more than `more_than` new bytes."""
    command, env = agent_command(state, "run", "--once")
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.bytes_new > more_than:
            break
        time.sleep(0.05)
    return process


def snapshot_of(point: RecoveryPoint):  # type: ignore[no-untyped-def]
    engine = repositories.open_repository(point.repository)
    return engine, engine.load_snapshot(point.snapshot_id)


def test_an_agent_backs_up_files_and_a_volume_with_source_side_dedup(setup, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    machine, source, tmp = setup["machine"], setup["source"], setup["tmp"]
    run = start_backup(machine=machine, requested_by=estate.admin)
    assert run.phase == "waiting for the agent to pick it up" and run.sent_at is None  # no proxy takes it

    done = agent(setup["state"], "run", "--once")
    assert done.returncode == 0, done.stderr
    run.refresh_from_db()
    assert run.state == RunState.COMMITTED, (run.error, done.stderr)
    assert (tmp / "pre-ran").read_text() == "pre\n" and (tmp / "post-ran").read_text() == "post\n"
    steps = [step["text"] for step in run.steps]  # the step log, as for agentless runs
    assert steps[0] == "started by the agent on files-01; deduplication on the agent"
    assert steps[1] == "pre-script" and steps[2] == "pre-script ran (exit 0)"
    assert "reading files" in steps and f"reading {setup['volume']}" in steps
    assert any(s.startswith("files point ") and "committed: 5 file(s)" in s for s in steps)
    assert any(s.startswith("volume point ") for s in steps) and "post-script ran (exit 0)" in steps
    files_point = RecoveryPoint.objects.get(run=run, kind="files")
    image_point = RecoveryPoint.objects.get(run=run, kind="image")
    engine, snapshot = snapshot_of(files_point)
    # Restored by the engine, the tree is the source's (without the excluded file), with modes and times.
    restored = tmp / "restored"
    restore_tree(engine, snapshot, restored)
    base = restored / str(source).lstrip("/")
    assert (base / "data" / "big.bin").read_bytes() == (source / "data" / "big.bin").read_bytes()
    assert (base / "data" / "deep" / "er" / "note.txt").read_text() == "deep note\n"
    assert os.readlink(base / "data" / "link") == "deep/er/note.txt"
    assert not (base / "data" / "skip.tmp").exists()
    assert (base / "etc" / "app.conf").stat().st_mode & 0o777 == 0o640
    assert (base / "etc" / "app.conf").stat().st_mtime_ns == 1_600_000_000_123_456_789
    # The copy deduplicated at the source: about 3 MiB of file data travelled, not 6.
    first = snapshot.stats
    assert first["sent_bytes"] < 3.5 * 1024 * 1024 and first["files"] == 5
    _, image_snapshot = snapshot_of(image_point)
    restore_image(engine, image_snapshot, str(setup["volume"]), tmp / "sdb.restored")
    assert (tmp / "sdb.restored").read_bytes() == setup["volume"].read_bytes()
    assert image_snapshot.disks[0]["stats"]["zero_bytes"] >= 3 * 1024 * 1024  # zero blocks not stored
    # The catalog (queued by the agent's commit): the same rows from the file tree as from an image's walk.
    from catalog import indexer
    from catalog.choices import CatalogState
    from catalog.models import FileVersion

    assert indexer.catalog_point(files_point).catalog_state == CatalogState.COMPLETE
    rows = {
        v.path.text: v for v in FileVersion.objects.filter(first_point=files_point).select_related("path")
    }
    assert (
        rows[f"{source}/data/big.bin"].size == 3 * 1024 * 1024
        and rows[f"{source}/data/big.bin"].kind == "file"
    )
    assert rows[f"{source}/data/link"].kind == "symlink" and rows[f"{source}/data/link"].link_target
    assert f"{source}/data/skip.tmp" not in rows
    volume = indexer.catalog_point(image_point)  # a raw volume without a file system: said so, not an error
    assert volume.catalog_state == CatalogState.FAILED and "no known file system" in volume.catalog_detail

    # Day 2: one small file changes; unchanged files are not even read, and almost nothing travels.
    (source / "etc" / "app.conf").write_text("listen 9443\n" * 40)
    second = start_backup(machine=machine, requested_by=estate.admin)
    done = agent(setup["state"], "run", "--once")
    second.refresh_from_db()
    assert second.state == RunState.COMMITTED, (second.error, done.stderr)
    _, snapshot2 = snapshot_of(RecoveryPoint.objects.get(run=second, kind="files"))
    assert snapshot2.stats["read_bytes"] < 4096 and snapshot2.stats["unchanged_files"] == 4
    assert snapshot2.stats["sent_bytes"] < 20_000  # the changed file, its trees and the volume's tables
    assert verify(engine).ok


def test_files_restore_back_to_the_agent_host_and_as_a_download(setup, estate: Estate, client_for) -> None:  # type: ignore[no-untyped-def]
    machine, source, tmp = setup["machine"], setup["source"], setup["tmp"]
    start_backup(machine=machine, requested_by=estate.admin)
    assert agent(setup["state"], "run", "--once").returncode == 0
    point = RecoveryPoint.objects.get(machine=machine, kind="files")
    inside = str(source).lstrip("/")

    # Back to the host, into another folder: only the chosen folder comes back, with its metadata.
    target = tmp / "back"
    with pytest.raises(restores.RestoreRefused):
        restores.request_restore(actor=estate.admin, point=point, kind="files_to_agent", target="relative/x")
    with pytest.raises(restores.RestoreRefused):
        restores.request_restore(
            actor=estate.admin, point=point, kind="files_to_agent", target=str(target), paths=["no/such"]
        )
    request = restores.request_restore(
        actor=estate.admin, point=point, kind="files_to_agent", target=str(target), paths=[f"{inside}/etc"]
    )
    done = agent(setup["state"], "run", "--once")
    assert done.returncode == 0, done.stderr
    request.refresh_from_db()
    assert request.state == "done", (request.error, done.stderr)
    restored = target / inside / "etc" / "app.conf"
    assert restored.read_text() == (source / "etc" / "app.conf").read_text()
    assert restored.stat().st_mode & 0o777 == 0o640
    assert not (target / inside / "data").exists()

    # As a download in the browser: a tar of the folder, streamed.
    helpdesk: Client = client_for("helpdesk")
    response = helpdesk.get(f"/restores/points/{point.pk}/download/", {"path": f"{inside}/data"})
    assert response.status_code == 404  # not in the help-desk operator's scope
    machine.groups.add(estate.finance)
    response = helpdesk.get(f"/restores/points/{point.pk}/download/", {"path": f"{inside}/data"})
    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(b"".join(response.streaming_content))) as archive:
        names = archive.getnames()
        assert f"{inside}/data/deep/er/note.txt" in names and f"{inside}/data/skip.tmp" not in names
        member = archive.extractfile(f"{inside}/data/big.bin")
        assert member is not None and member.read() == (source / "data" / "big.bin").read_bytes()
    assert RestoreRequest.objects.filter(kind="download", machine=machine).exists()
    owner: Client = client_for("owner")
    assert owner.get(f"/restores/points/{point.pk}/download/", {"path": inside}).status_code == 403


class DroppingProxy:
    """A TCP relay that cuts the first `drops` connections carrying a chunk upload after a few KiB."""

    def __init__(self, upstream: int, drops: int) -> None:
        self.upstream = upstream
        self.drops = drops
        self.port = free_port()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.stopping = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self.relay, args=(client,), daemon=True).start()

    def relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream))
        cut = self.drops > 0
        sent = 0

        def back() -> None:
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                client.close()

        threading.Thread(target=back, daemon=True).start()
        try:
            while data := client.recv(65536):
                sent += len(data)
                # TLS hides the path: a large request is the chunk upload.
                if cut and sent > 256 * 1024:
                    self.drops -= 1
                    break
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self.stopping = True
        self.server.close()


def test_a_dropped_connection_is_ridden_out_and_a_killed_agent_resumes(setup, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    machine, state = setup["machine"], setup["state"]
    policy = setup["policy"]
    policy.volumes = ""
    policy.save()
    # Through a relay that drops the first two uploads midway: the agent retries and the run commits.
    port = int(setup["url"].rsplit(":", 1)[1])
    relay = DroppingProxy(port, drops=2)
    settings_file = state / "agent.json"
    original = settings_file.read_text()
    settings_file.write_text(original.replace(f":{port}", f":{relay.port}"))
    try:
        run = start_backup(machine=machine, requested_by=estate.admin)
        done = agent(state, "run", "--once")
        run.refresh_from_db()
        assert run.state == RunState.COMMITTED, (run.error, done.stderr)
        assert relay.drops == 0 and "trying again" in done.stderr
    finally:
        relay.close()
        settings_file.write_text(original)

    # A new big file; the agent is killed mid-upload. Its run is reaped; the next run sends only the rest.
    rng = random.Random(11)
    (setup["source"] / "data" / "large.bin").write_bytes(rng.randbytes(40 * 1024 * 1024))
    policy.bandwidth_limit_mbps = 64  # 8 MB/s: the kill lands while the agent paces itself, not after its end
    policy.save()
    killed = start_backup(machine=machine, requested_by=estate.admin)
    process = agent_storing(state, killed, more_than=16 * 1024 * 1024)  # a batch or more stored
    process.send_signal(signal.SIGKILL)
    process.wait()
    policy.bandwidth_limit_mbps = None
    policy.save()
    killed.refresh_from_db()
    assert killed.state == RunState.RUNNING and killed.bytes_new > 0
    stored_before = killed.bytes_new
    BackupRun.objects.filter(pk=killed.pk).update(heartbeat_at=killed.heartbeat_at.replace(year=2000))
    assert [r.pk for r in reap_stale_runs()] == [killed.pk]
    again = start_backup(machine=machine, requested_by=estate.admin)
    done = agent(state, "run", "--once")
    again.refresh_from_db()
    assert again.state == RunState.COMMITTED, (again.error, done.stderr)
    _, snapshot = snapshot_of(RecoveryPoint.objects.get(run=again, kind="files"))
    assert snapshot.stats["sent_bytes"] <= 40 * 1024 * 1024 - stored_before + 1024 * 1024


def test_a_cancel_stops_an_agent_paced_by_a_slow_bandwidth_limit(setup, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    """At 1 Mbit/s the agent waits about two minutes after each 16 MiB batch; a cancel cuts that wait short:
    the agent stops within seconds, the run shows one state, and nothing is committed."""
    machine, state, policy = setup["machine"], setup["state"], setup["policy"]
    policy.volumes = ""
    policy.bandwidth_limit_mbps = 1
    policy.save()
    (setup["source"] / "data" / "large.bin").write_bytes(random.Random(12).randbytes(24 * 1024 * 1024))
    run = start_backup(machine=machine, requested_by=estate.admin)
    process = agent_storing(state, run, more_than=0)  # the first batch is stored; the agent now paces itself
    assert run.state == RunState.RUNNING
    asked = time.monotonic()
    cancel_run(run=run, actor=estate.admin)
    try:
        process.wait(timeout=60)  # a guard against a hang; the closing note has what it took
    finally:
        process.kill()
    sys.stderr.write(f"agent cancel took {time.monotonic() - asked:.2f} s\n")  # for the closing note (-s)
    run.refresh_from_db()
    assert run.state == RunState.CANCELLED and run.phase == "cancelled" and run.error == ""
    assert run.steps[-1]["text"] == "cancelled on request"
    assert not RecoveryPoint.objects.filter(run=run).exists()
    assert "was cancelled by the console" in (process.stderr.read() if process.stderr else "")


def test_the_console_refuses_lying_chunks_and_commits_only_what_is_stored(setup, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    machine = setup["machine"]
    agent_row = Agent.objects.get(machine=machine)
    run = start_backup(machine=machine, requested_by=estate.admin)
    spec = agent_runs.start(agent_row, run.pk)
    assert spec["source_dedup"] and len(spec["id_key"]) == 64
    assert agent_runs.start(agent_row, run.pk)["run"] == run.pk  # asked again after a lost answer: same job
    engine = repositories.open_repository(setup["repository"])
    data = b"real content" * 100
    honest = engine.master.chunk_id_of(data)
    lie = agent_runs.FRAME.pack(0, bytes(31) + b"\x01", len(data)) + data
    with pytest.raises(agent_runs.AgentJobError) as refused:
        agent_runs.store_chunks(agent_row, run.pk, io.BytesIO(lie))
    assert refused.value.code == "bad-chunk"
    assert engine.index.lookup(bytes(31) + b"\x01") is None
    assert agent_runs.missing(agent_row, run.pk, [honest.hex()]) == [honest.hex()]
    with pytest.raises(agent_runs.AgentJobError) as truncated:
        agent_runs.store_chunks(agent_row, run.pk, io.BytesIO(lie[:50]))
    assert truncated.value.code == "truncated"
    # A tree naming a chunk never sent: the commit says which are missing and writes nothing.
    import json

    tree = one_file_tree(honest, 5)
    tree_id = engine.master.chunk_id_of(tree)
    agent_runs.store_chunks(
        agent_row, run.pk, io.BytesIO(agent_runs.FRAME.pack(1, tree_id, len(tree)) + tree)
    )
    with pytest.raises(agent_runs.AgentJobError) as missing:
        agent_runs.commit(agent_row, run.pk, {"kind": "files", "tree": tree_id.hex()})
    assert missing.value.code == "missing" and missing.value.extra["missing"] == [honest.hex()]
    snapshots_before = len(engine.snapshot_ids())
    agent_runs.store_chunks(agent_row, run.pk, io.BytesIO(agent_runs.FRAME.pack(0, honest, len(data)) + data))
    point = agent_runs.commit(agent_row, run.pk, {"kind": "files", "tree": tree_id.hex()})
    assert (
        agent_runs.commit(agent_row, run.pk, {"kind": "files", "tree": tree_id.hex()}) == point
    )  # idempotent
    assert len(repositories.open_repository(setup["repository"]).snapshot_ids()) == snapshots_before + 1
    # A malformed name in a tree is refused at commit.
    evil = json.dumps(
        {"version": 1, "entries": [{"name": "..", "type": "dir", "tree": tree_id.hex()}]}
    ).encode()
    evil_id = engine.master.chunk_id_of(evil)
    agent_runs.store_chunks(
        agent_row, run.pk, io.BytesIO(agent_runs.FRAME.pack(1, evil_id, len(evil)) + evil)
    )
    RecoveryPoint.objects.filter(run=run).delete()
    with pytest.raises(agent_runs.AgentJobError) as malformed:
        agent_runs.commit(agent_row, run.pk, {"kind": "files", "tree": evil_id.hex()})
    assert "malformed" in str(malformed.value)
    # Without dedup at the agent, the repository answers no "do you have this?" question.
    setup["policy"].dedup_location = "central"
    setup["policy"].save()
    with pytest.raises(agent_runs.AgentJobError) as no_oracle:
        agent_runs.missing(agent_row, run.pk, [honest.hex()])
    assert no_oracle.value.code == "no-source-dedup"
    # Another machine's agent cannot touch this run.
    other = Machine.objects.create(identity="agent:other", name="other", kind="physical", platform="agent")
    stranger = Agent.objects.create(machine=other, key_prefix="x", key_digest="y")
    with pytest.raises(agent_runs.AgentJobError) as foreign:
        agent_runs.missing(stranger, run.pk, [honest.hex()])
    assert foreign.value.status == 404


def test_agent_mode_needs_an_agent_and_something_to_back_up(setup, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    machine, policy = setup["machine"], setup["policy"]
    policy.include_paths = policy.volumes = ""
    policy.save()
    with pytest.raises(BackupRefused, match="names no paths or volumes"):
        start_backup(machine=machine, requested_by=estate.admin)
    Agent.objects.filter(machine=machine).delete()
    with pytest.raises(BackupRefused, match="no enrolled agent"):
        start_backup(machine=machine, requested_by=estate.admin)


def test_which_chunks_are_missing_is_answered_after_a_prune_in_another_process(setup, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    """The console keeps the repository open between requests; a prune elsewhere deletes a chunk it has in its
    cached index. The agent must be told to send it, and the commit must name only chunks really stored."""

    machine = setup["machine"]
    agent_row = Agent.objects.get(machine=machine)
    engine = repositories.open_repository(setup["repository"])  # cached in this (console) process
    data = random.Random(11).randbytes(200_000)
    chunk = engine.master.chunk_id_of(data)
    with engine.writer() as writer:  # stored and indexed, used by no snapshot: the next prunes remove it
        writer.add(data)
        writer.flush()
    assert engine.index.lookup(chunk) is not None
    storage = repositories.storage_for(setup["repository"])
    for _ in range(2):  # set aside, then deleted, by another process (an admin's prune, another console)
        pruned = subprocess.run(
            [sys.executable, "-m", "engine", "--repo", str(storage.root), "prune", "--grace-minutes", "0"],  # type: ignore[attr-defined]
            env={**os.environ, "BULWARK_PASSPHRASE": setup["repository"].passphrase.reveal()},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert pruned.returncode == 0, pruned.stderr
    run = start_backup(machine=machine, requested_by=estate.admin)
    agent_runs.start(agent_row, run.pk)
    assert agent_runs.missing(agent_row, run.pk, [chunk.hex()]) == [chunk.hex()]
    tree = one_file_tree(chunk, len(data))
    tree_id = engine.master.chunk_id_of(tree)
    agent_runs.store_chunks(
        agent_row, run.pk, io.BytesIO(agent_runs.FRAME.pack(1, tree_id, len(tree)) + tree)
    )
    with pytest.raises(agent_runs.AgentJobError) as missing:  # the stale cache must not vouch for it
        agent_runs.commit(agent_row, run.pk, {"kind": "files", "tree": tree_id.hex()})
    assert missing.value.code == "missing"
    agent_runs.store_chunks(agent_row, run.pk, io.BytesIO(agent_runs.FRAME.pack(0, chunk, len(data)) + data))
    point = agent_runs.commit(agent_row, run.pk, {"kind": "files", "tree": tree_id.hex()})
    repositories.forget_open_repositories()
    fresh, snapshot = snapshot_of(point)
    restore_tree(fresh, snapshot, setup["tmp"] / "out", owners=False)
    assert (setup["tmp"] / "out" / "f").read_bytes() == data
    assert verify(fresh, full=True).ok


def test_an_image_commit_whose_blocks_have_the_wrong_length_is_refused(setup, estate: Estate) -> None:  # type: ignore[no-untyped-def]
    """A short read taken for a block would shift every later byte of the restored volume."""
    machine = setup["machine"]
    agent_row = Agent.objects.get(machine=machine)
    run = start_backup(machine=machine, requested_by=estate.admin)
    spec = agent_runs.start(agent_row, run.pk)
    engine = repositories.open_repository(setup["repository"])
    block_size = spec["block_size"]
    short = random.Random(12).randbytes(10_000)  # what a short read returns: not a whole block
    short_id = engine.master.chunk_id_of(short)
    table = short_id + bytes(32)
    table_id = engine.master.chunk_id_of(table)
    frames = agent_runs.FRAME.pack(0, short_id, len(short)) + short
    frames += agent_runs.FRAME.pack(1, table_id, len(table)) + table
    agent_runs.store_chunks(agent_row, run.pk, io.BytesIO(frames))
    disk = {"name": "sdb", "size": 2 * block_size, "tables": [table_id.hex()]}
    with pytest.raises(agent_runs.AgentJobError) as refused:
        agent_runs.commit(agent_row, run.pk, {"kind": "image", "disks": [disk]})
    assert refused.value.status == 400 and "10000 bytes" in str(refused.value)
    assert not RecoveryPoint.objects.filter(run=run).exists()
