"""Discovery at scale against vcsim: full sync time, database queries per sync, clone-to-protected latency.

python -m benchmarks.discovery [--quick] [--vms N]

Starts vcsim with about 2,000 VMs (--quick: 200), a fresh SQLite database, one vCenter source and one rule
matching every VM. Measures: the first full sync (all machines new), a second one (nothing changed), the
database queries of each, and, with the live watch running, the time from CloneVM_Task completing to the
clone's policy assignment existing (five clones, median). The peer: the same inventory read the naive way
(pyvmomi attribute access per VM, one round trip per property), timed on up to 200 VMs and scaled.
Last line: vms=... sync_s=... queries=... clone_to_protected_s=...
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def setup_django(data_dir: str) -> None:
    os.environ["BULWARK_DATA_DIR"] = data_dir
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def naive_read(server: Any, limit: int) -> tuple[int, float]:
    """What a simple script does: walk VMs and read each property by attribute access."""
    import ssl

    from pyVim.connect import Disconnect, SmartConnect
    from pyVmomi import vim

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    instance = SmartConnect(
        host="127.0.0.1", port=server.port, user=server.username, pwd=server.password, sslContext=context
    )
    try:
        content = instance.content
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        started = time.perf_counter()
        count = 0
        for vm in view.view[:limit]:
            _ = (vm.name, vm.config.instanceUuid, vm.config.uuid, vm.runtime.powerState, vm.runtime.host.name)
            _ = (
                vm.config.guestFullName,
                [d.key for d in vm.config.hardware.device],
                [d.name for d in vm.datastore],
            )
            _ = (vm.parent.name, vm.resourcePool.name)
            count += 1
        return count, time.perf_counter() - started
    finally:
        Disconnect(instance)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="about 200 VMs")
    parser.add_argument("--vms", type=int, default=None)
    parser.add_argument("--clones", type=int, default=5)
    args = parser.parse_args()
    wanted = args.vms or (200 if args.quick else 2000)

    sys.path.insert(0, str(ROOT))
    from tests.peers import Vcsim, vcsim_available

    if not vcsim_available():
        raise SystemExit("vcsim is missing: make peer-deps")
    data_dir = tempfile.mkdtemp(prefix="bulwark-discovery-bench-")
    setup_django(data_dir)

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from inventory.discovery import run_discovery
    from inventory.models import DiscoveryRun, Machine
    from inventory.services import create_source
    from inventory.watch import SourceWatcher
    from protection import services as protection
    from protection.models import Assignment
    from tests.connectors.vsphere_helpers import Admin

    # vcsim puts -vm machines in each resource pool and on each standalone host: two places by default.
    server = Vcsim(vms=max(1, wanted // 2))
    try:
        policy = protection.create_policy(actor=None, name="everything")
        protection.create_rule(actor=None, name="all VMs", policy=policy, match_platform="vsphere")
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
        results: dict[str, tuple[float, int, int]] = {}
        for label in ("first sync", "second sync"):
            run = DiscoveryRun.objects.create(source=source, trigger="manual")
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                run = run_discovery(run.pk)
                seconds = time.perf_counter() - started
            if run.state != "succeeded":
                raise SystemExit(f"discovery failed: {run.error}")
            results[label] = (seconds, len(queries), run.found)
        vms = results["first sync"][2]
        assigned = Assignment.objects.count()

        watcher = SourceWatcher(source.pk)
        watcher.start()
        time.sleep(1.0)
        admin = Admin(server)
        latencies = []
        first_vm = Machine.objects.filter(source=source).order_by("name").first()
        assert first_vm is not None
        for number in range(args.clones):
            name = f"bench-clone-{number:02d}"
            admin.clone(first_vm.name, name)
            cloned = time.perf_counter()
            while not Assignment.objects.filter(machine__name=name).exists():
                if time.perf_counter() - cloned > 60:
                    raise SystemExit(f"{name} was not protected within 60 s")
                time.sleep(0.02)
            latencies.append(time.perf_counter() - cloned)
        admin.close()
        watcher.stop()
        watcher.join(timeout=15)

        naive_count, naive_seconds = naive_read(server, min(vms, 200))
    finally:
        server.stop()

    naive_scaled = naive_seconds / naive_count * vms
    print(f"{'step':<34}{'seconds':>9}{'queries':>9}{'VMs':>7}")
    for label, (seconds, queries, found) in results.items():
        print(f"{label:<34}{seconds:>9.2f}{queries:>9}{found:>7}")
    print(
        f"{'naive attribute reads (scaled)':<34}{naive_scaled:>9.2f}{'-':>9}{vms:>7}   ({naive_count} VMs read, {naive_seconds:.2f} s)"
    )
    print(f"machines under a policy after the first sync: {assigned} of {vms}")
    print(
        f"clone to protected: {', '.join(f'{x:.2f}' for x in latencies)} s (median {statistics.median(latencies):.2f} s)"
    )
    first_seconds, first_queries, _ = results["first sync"]
    print(
        f"vms={vms} sync_s={first_seconds:.2f} queries={first_queries} resync_s={results['second sync'][0]:.2f} "
        f"resync_queries={results['second sync'][1]} clone_to_protected_s={statistics.median(latencies):.2f} "
        f"naive_read_s={naive_scaled:.2f}"
    )


if __name__ == "__main__":
    main()
