"""Backups at scale over two proxies: scheduler overhead, parallel efficiency, progress latency to a browser socket.

python -m benchmarks.protection [--quick] [--vms N]

vcsim with about 200 VMs (--quick: 20), each disk given 2 MiB of real data; a PostgreSQL database of its own;
two proxies as real worker processes (manage.py proxy, 4 streams each) over the local Redis; the console's ASGI
app served in this process with a signed-in admin's WebSocket. Every VM is queued at once and dispatched.

- overhead_ms_per_run: dispatch time plus queue-to-start latency, per run;
- parallel_efficiency: the sum of run durations / (wall time x streams);
- progress_latency_ms: median delay from a run's progress step to its arrival on the browser's WebSocket.
The peer is the ideal: runs back to back with no scheduler at all (sum of run durations / streams).
Last line: runs=... overhead_ms_per_run=... parallel_efficiency=... progress_latency_ms=...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STREAMS = 4


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--vms", type=int, default=None)
    args = parser.parse_args()
    wanted = args.vms or (20 if args.quick else 200)
    sys.path.insert(0, str(ROOT))

    import psycopg2

    database = f"bulwark_bench_{uuid.uuid4().hex[:8]}"
    admin_connection = psycopg2.connect(host="127.0.0.1", user="postgres", dbname="postgres")
    admin_connection.autocommit = True
    admin_connection.cursor().execute(f"CREATE DATABASE {database}")
    data_dir = tempfile.mkdtemp(prefix="bulwark-protection-bench-")
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    broker = redis.rsplit("/", 1)[0] + "/9"
    os.environ.update(
        BULWARK_DATA_DIR=data_dir,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        REDIS_URL=redis,
        CELERY_BROKER_URL=broker,
        BULWARK_EMBEDDED_WATCH="false",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    workers: list[subprocess.Popen[str]] = []
    try:
        run(wanted, data_dir, broker, workers)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
        from django.db import connections

        connections.close_all()
        admin_connection.cursor().execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def run(wanted: int, data_dir: str, broker: str, workers: list[subprocess.Popen[str]]) -> None:
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from celery import Celery
    from django.test import Client

    from catalog.services import create_repository
    from core.models import User
    from inventory.models import Machine
    from inventory.services import create_source
    from protection import services
    from protection.choices import RunState
    from protection.dispatch import dispatch
    from protection.models import BackupRun, Proxy
    from tests.connectors.vsphere_helpers import Admin, upload_disk
    from tests.inventory.test_discovery import discover
    from tests.live import serve_asgi
    from tests.peers import Vcsim, vcsim_available

    if not vcsim_available():
        raise SystemExit("vcsim is missing: make peer-deps")
    server = Vcsim(vms=max(1, wanted // 2))
    try:
        admin = Admin(server)
        view = admin.content.viewManager.CreateContainerView(
            admin.content.rootFolder, [__import__("pyVmomi").vim.VirtualMachine], True
        )
        names = sorted(vm.name for vm in view.view)[:wanted]
        view.Destroy()
        for name in names:
            upload_disk(admin, name, os.urandom(1024 * 1024) + bytes(1024 * 1024))
        admin.close()
        source = create_source(
            actor=None,
            name="vcsim",
            kind="vcenter",
            address="127.0.0.1",
            port=server.port,
            username=server.username,
            password=server.password,
            thumbprint=server.thumbprint(),
        )
        discover(source)
        repository = create_repository(
            actor=None, name="primary", kind="local", path=str(Path(data_dir) / "repo")
        )
        policy = services.create_policy(actor=None, name="all")
        type(policy).objects.filter(pk=policy.pk).update(repository=repository, quiesce=False)
        services.create_rule(actor=None, name="all", policy=policy, match_platform="vsphere")
        for name in ("proxy-a", "proxy-b"):
            workers.append(
                subprocess.Popen(
                    [sys.executable, "manage.py", "proxy", "--name", name, "--streams", str(STREAMS)],
                    cwd=ROOT,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            )
        deadline = time.monotonic() + 60
        while Proxy.objects.count() < 2:
            if time.monotonic() > deadline:
                raise SystemExit("the proxies did not start")
            time.sleep(0.2)
        time.sleep(3)
        user = User.objects.create_user("bench", role="admin")  # signed in by session below, no password
        client = Client()
        client.force_login(user)
        cookie = client.cookies["sessionid"].value
        latencies: list[float] = []
        stop = threading.Event()
        with serve_asgi() as url:
            listener = threading.Thread(target=listen, args=(url, cookie, latencies, stop), daemon=True)
            listener.start()
            time.sleep(1.0)
            machines = list(Machine.objects.filter(name__in=names))
            runs = [
                BackupRun.objects.create(machine=m, policy=policy, repository=repository) for m in machines
            ]
            sender = Celery(broker=broker, set_as_current=False)
            started = time.perf_counter()
            dispatch_seconds = 0.0
            pending = {r.pk for r in runs}
            while pending:
                tick = time.perf_counter()
                dispatch(
                    send=lambda run_id, queue: sender.send_task(
                        "protection.run_backup", args=(run_id,), queue=queue
                    )
                )
                dispatch_seconds += time.perf_counter() - tick
                done = set(
                    BackupRun.objects.filter(
                        pk__in=pending, state__in=[RunState.COMMITTED, RunState.FAILED]
                    ).values_list("pk", flat=True)
                )
                pending -= done
                if time.perf_counter() - started > 1800:
                    raise SystemExit("runs did not finish within 30 minutes")
                time.sleep(0.2)
            wall = time.perf_counter() - started
            stop.set()
        finished = list(BackupRun.objects.filter(pk__in=[r.pk for r in runs]))
    finally:
        server.stop()
    failed = [r for r in finished if r.state != RunState.COMMITTED]
    durations = [
        (r.finished_at - r.started_at).total_seconds() for r in finished if r.started_at and r.finished_at
    ]
    waits = [(r.started_at - r.sent_at).total_seconds() for r in finished if r.started_at and r.sent_at]
    streams = 2 * STREAMS
    ideal = sum(durations) / streams
    overhead_ms = (dispatch_seconds / len(finished) + statistics.mean(waits)) * 1000
    efficiency = sum(durations) / (wall * streams)
    latency_ms = statistics.median(latencies) * 1000 if latencies else float("nan")
    print(f"{'measure':<44}{'value':>12}")
    print(f"{'runs (failed)':<44}{len(finished):>9} ({len(failed)})")
    print(f"{'wall time, all runs':<44}{wall:>10.2f} s")
    print(f"{'ideal: sum of run durations / streams':<44}{ideal:>10.2f} s")
    print(f"{'mean run duration':<44}{statistics.mean(durations):>10.2f} s")
    print(f"{'dispatch time per run':<44}{dispatch_seconds / len(finished) * 1000:>9.1f} ms")
    print(f"{'queue-to-start latency (mean)':<44}{statistics.mean(waits) * 1000:>9.1f} ms")
    print(f"{'progress messages seen on the WebSocket':<44}{len(latencies):>12}")
    print(
        f"runs={len(finished)} overhead_ms_per_run={overhead_ms:.1f} parallel_efficiency={efficiency:.2f} "
        f"progress_latency_ms={latency_ms:.1f} failed={len(failed)}"
    )


def listen(url: str, cookie: str, latencies: list[float], stop: threading.Event) -> None:
    import websockets

    async def consume() -> None:
        uri = url.replace("http://", "ws://") + "/ws/events/"
        headers = {"Cookie": f"sessionid={cookie}", "Origin": url}
        async with websockets.connect(uri, additional_headers=headers) as socket:
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(socket.recv(), timeout=0.5)
                except TimeoutError:
                    continue
                except websockets.ConnectionClosed:
                    return  # the server stops at the end of the run
                payload = json.loads(message)
                if payload.get("type") == "run.progress" and "at" in payload.get("data", {}):
                    latencies.append(time.time() - payload["data"]["at"])

    asyncio.run(consume())


if __name__ == "__main__":
    main()
