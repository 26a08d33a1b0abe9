"""The vSphere connector against vcsim: inventory, tags, a live watch, and every failure named clearly."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from connectors.base import BadCredentials, Change, TimedOut, Unreachable, UntrustedCertificate
from connectors.vsphere import VSphereConnector
from tests.connectors.conftest import endpoint_for
from tests.connectors.vsphere_helpers import Admin
from tests.peers import Vcsim, free_port


def test_discovery_reads_the_whole_inventory_in_one_pass(vcsim: Vcsim) -> None:
    admin = Admin(vcsim)
    admin.tag("DC0_C0_RP0_VM0", "backup", "gold")
    admin.close()
    inventory = VSphereConnector(endpoint_for(vcsim)).discover()
    assert inventory.product.startswith("VMware vCenter Server")
    assert inventory.topology["datacenters"] == ["DC0"]
    assert "DC0_C0" in inventory.topology["clusters"]
    by_name = {m.name: m for m in inventory.machines}
    assert len(by_name) == len(inventory.machines) >= 4
    vm = by_name["DC0_C0_RP0_VM0"]
    assert vm.identity.startswith("vsphere:") and len(vm.identity) == len("vsphere:") + 36
    assert vm.bios_uuid and vm.external_id.startswith("vm-")
    assert (vm.datacenter, vm.cluster) == ("DC0", "DC0_C0")
    assert vm.host.startswith("DC0_C0_H")
    assert vm.folder == "/" and vm.resource_pool
    assert vm.datastores == ["LocalDS_0"]
    assert vm.tags == ["backup:gold"]
    assert vm.disks and vm.disks[0].capacity_bytes > 0 and vm.disks[0].path.startswith("[LocalDS_0]")
    assert by_name["DC0_H0_VM0"].cluster == "" and by_name["DC0_H0_VM0"].host == "DC0_H0"


def test_a_clone_is_seen_by_the_watch_within_seconds(vcsim: Vcsim) -> None:
    connector = VSphereConnector(endpoint_for(vcsim))
    seen: list[Change] = []
    arrived = threading.Event()
    stop = threading.Event()

    def on_change(changes: list[Change]) -> None:
        seen.extend(changes)
        if any(c.machine is not None and c.machine.name == "clone-01" for c in changes):
            arrived.set()

    connected = threading.Event()
    watcher = threading.Thread(target=connector.watch, args=(on_change, stop, connected.set), daemon=True)
    watcher.start()
    assert connected.wait(15)  # the first answer (every existing VM) only tells the watch is healthy
    admin = Admin(vcsim)
    admin.clone("DC0_C0_RP0_VM0", "clone-01")
    assert arrived.wait(15), f"the watch did not report the clone; saw {seen}"
    clone = next(c.machine for c in seen if c.machine is not None and c.machine.name == "clone-01")
    original = next(m for m in connector.discover().machines if m.name == "DC0_C0_RP0_VM0")
    assert clone.identity != original.identity  # a clone is a new machine
    admin.destroy("clone-01")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(c.kind == "remove" for c in seen):
        time.sleep(0.1)
    admin.close()
    stop.set()
    watcher.join(timeout=10)
    assert any(c.kind == "remove" and c.external_id == clone.external_id for c in seen)


@pytest.mark.parametrize("folder", ["/new", "/new/nested/deeper"])
def test_a_vm_moved_between_folders_is_an_upsert_never_a_removal(vcsim: Vcsim, folder: str) -> None:
    """vSphere reports a folder move as "leave" and "enter"; the VM still exists, so it must not be gone."""
    connector = VSphereConnector(endpoint_for(vcsim))
    seen: list[Change] = []
    moved = threading.Event()
    connected = threading.Event()
    stop = threading.Event()

    def on_change(changes: list[Change]) -> None:
        seen.extend(changes)
        if any(c.machine is not None and c.machine.folder == folder for c in changes):
            moved.set()

    watcher = threading.Thread(target=connector.watch, args=(on_change, stop, connected.set), daemon=True)
    watcher.start()
    assert connected.wait(15)
    admin = Admin(vcsim)
    try:
        admin.move("DC0_C0_RP0_VM0", folder)
        assert moved.wait(15), f"the move was not reported; saw {seen}"
        time.sleep(0.5)  # anything else the update carried
    finally:
        stop.set()
        watcher.join(timeout=10)
        admin.close()
    assert [c for c in seen if c.kind == "remove"] == []


@pytest.mark.parametrize("after", [50, 3000])
def test_an_answer_cut_half_way_is_unreachable_not_a_protocol_error(
    vcsim: Vcsim, after: int, tmp_path: Path
) -> None:
    """A link that drops mid-answer with a clean TLS close (http.client's IncompleteRead) is the network's
    fault: "unreachable", never "internal" or "protocol"."""
    from dataclasses import replace

    from tests.connectors.tcp_proxy import TlsRelay

    relay = TlsRelay(vcsim.port, tmp_path)

    class CutWhenReading:
        def step(self, done: int, total: int | None, message: str) -> None:
            if done == 0:  # logged in; the inventory query is next
                relay.cut_after(after)

    try:
        endpoint = replace(endpoint_for(vcsim), port=relay.port, thumbprint=relay.thumbprint, timeout=5)
        with pytest.raises(Unreachable):
            VSphereConnector(endpoint).discover(CutWhenReading())
    finally:
        relay.close()


def test_wrong_password_is_named(vcsim: Vcsim) -> None:
    with pytest.raises(BadCredentials, match="refused the user name or password"):
        VSphereConnector(endpoint_for(vcsim, secret="wrong")).test()


def test_an_untrusted_certificate_is_refused_with_its_fingerprint(vcsim: Vcsim) -> None:
    with pytest.raises(UntrustedCertificate) as refused:
        VSphereConnector(endpoint_for(vcsim, thumbprint="")).test()
    expected = vcsim.thumbprint().upper()
    assert expected[:2] + ":" + expected[2:4] in str(refused.value)
    with pytest.raises(UntrustedCertificate, match="does not match the pinned fingerprint"):
        VSphereConnector(endpoint_for(vcsim, thumbprint="ab" * 32)).test()
    assert "vCenter" in VSphereConnector(endpoint_for(vcsim)).test()


def test_a_closed_port_and_an_unknown_host_are_unreachable() -> None:
    from connectors.base import Endpoint

    closed = Endpoint(
        kind="vsphere", address="127.0.0.1", port=free_port(), username="u", secret="p", timeout=3
    )
    with pytest.raises(Unreachable, match="refused the connection"):
        VSphereConnector(closed).test()
    unknown = Endpoint(kind="vsphere", address="vcenter.invalid", username="u", secret="p", timeout=3)
    with pytest.raises(Unreachable, match="cannot resolve"):
        VSphereConnector(unknown).test()


def test_a_server_that_never_answers_times_out() -> None:
    from connectors.base import Endpoint

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)  # accepts connections, never speaks TLS
    try:
        endpoint = Endpoint(
            kind="vsphere",
            address="127.0.0.1",
            port=listener.getsockname()[1],
            username="u",
            secret="p",
            timeout=1.5,
        )
        with pytest.raises(TimedOut, match="did not answer"):
            VSphereConnector(endpoint).test()
    finally:
        listener.close()


def test_custom_attributes_are_read_by_name(vcsim: Vcsim) -> None:
    from tests.connectors.vsphere_helpers import set_custom_attribute

    admin = Admin(vcsim)
    set_custom_attribute(admin, "DC0_H0_VM0", "CostCenter", "CC-4711")
    admin.close()
    vm = next(m for m in VSphereConnector(endpoint_for(vcsim)).discover().machines if m.name == "DC0_H0_VM0")
    assert vm.attributes["CostCenter"] == "CC-4711"


def test_changed_areas_are_paged_until_the_end_of_the_disk(vcsim: Vcsim) -> None:
    """QueryChangedDiskAreas answers at most 64 extents at a time on this vcsim: 128 changed areas need pages."""
    from tests.connectors.vsphere_helpers import upload_disk

    block = 64 * 1024
    image = bytearray(256 * block)
    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM1", bytes(image))
    admin.close()
    connector = VSphereConnector(endpoint_for(vcsim))
    machine = next(m for m in connector.discover().machines if m.name == "DC0_H0_VM1")
    with connector.snapshot(machine.external_id, "DC0", name="first", quiesce=False) as snap:
        first_id = snap.disks[0].change_id
        assert snap.tracking_just_enabled and snap.changed_areas(snap.disks[0], "*") == []  # all zeros
    for number in range(0, 256, 2):
        image[number * block : number * block + 10] = b"changed!!!"
    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM1", bytes(image))
    admin.close()
    with connector.snapshot(machine.external_id, "DC0", name="second", quiesce=False) as snap:
        assert not snap.tracking_just_enabled
        areas = snap.changed_areas(snap.disks[0], first_id)
    assert areas == [(number * block, block) for number in range(0, 256, 2)]


def test_a_bandwidth_limit_slows_the_disk_reads_down(vcsim: Vcsim) -> None:
    import os

    from tests.connectors.vsphere_helpers import upload_disk

    admin = Admin(vcsim)
    upload_disk(admin, "DC0_H0_VM0", os.urandom(4 * 1024 * 1024))
    admin.close()
    connector = VSphereConnector(endpoint_for(vcsim))
    machine = next(m for m in connector.discover().machines if m.name == "DC0_H0_VM0")
    with connector.snapshot(machine.external_id, "DC0", name="limited", quiesce=False) as snap:
        reader = snap.open_disk(snap.disks[0], bytes_per_second=1024 * 1024)  # 1 MiB/s
        now = [reader.throttle.start]
        slept: list[float] = []
        reader.throttle.clock = lambda: now[0]  # a frozen clock: the reads themselves take no time
        reader.throttle.sleep = lambda seconds: (slept.append(seconds), now.__setitem__(0, now[0] + seconds))
        data = reader.read(4 * 1024 * 1024)
        reader.close()
    assert len(data) == 4 * 1024 * 1024
    assert sum(slept) == pytest.approx(4.0)  # 4 MiB at 1 MiB/s: the reader waited four seconds' worth
