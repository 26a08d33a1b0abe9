"""VMware vSphere (vCenter or a standalone ESXi host) through pyvmomi."""

from __future__ import annotations

import http.client
import threading
import xml.parsers.expat
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pyVmomi import vim, vmodl

from connectors.base import (
    NO_PROGRESS,
    Change,
    ChangeIdRejected,
    ConnectorError,
    Endpoint,
    Inventory,
    ProtocolError,
    Unreachable,
)
from connectors.vsphere.backup import (
    DatastoreReader,
    SnapshotDisk,
    SnapshotHandle,
    create_snapshot,
    enable_change_tracking,
    find_vm,
    remove_snapshot,
)
from connectors.vsphere.guest import GuestLogin
from connectors.vsphere.guestfiles import GuestFiles
from connectors.vsphere.inventory import (
    VM_PROPERTIES,
    Topology,
    moref,
    read_machine,
    read_machines,
    read_topology,
)
from connectors.vsphere.session import fault_message, port_of, session
from connectors.vsphere.tags import TagClient
from engine.progress import Progress

WATCH_WAIT_SECONDS = 2


@dataclass
class SnapshotSession:
    """A snapshot being backed up: its disks, a reader per disk, and whether CBT was only just enabled."""

    handle: SnapshotHandle
    endpoint: Endpoint
    port: int
    cookie: str
    tracking_just_enabled: bool
    warnings: list[str] = field(default_factory=list)  # e.g. a post-snapshot script that failed
    steps: list[str] = field(default_factory=list)  # what happened on the VM, in order (scripts, snapshot)

    @property
    def disks(self) -> list[SnapshotDisk]:
        return self.handle.disks

    def open_disk(
        self,
        disk: SnapshotDisk,
        *,
        bytes_per_second: int | None = None,
        check: Callable[[], None] | None = None,
    ) -> DatastoreReader:
        """The snapshot's disk as a read-only file; `check` is called during throttle waits and may raise."""
        return DatastoreReader(
            self.endpoint,
            self.port,
            self.cookie,
            self.handle.datacenter,
            disk,
            bytes_per_second=bytes_per_second,
            check=check,
        )

    def changed_areas(self, disk: SnapshotDisk, since: str) -> list[tuple[int, int]]:
        """(offset, length) areas changed since change id `since` ("*": every allocated area), asking
        QueryChangedDiskAreas page by page until the end of the disk."""
        areas: list[tuple[int, int]] = []
        start = 0
        while start < disk.capacity_bytes:
            try:
                info = self.handle.vm.QueryChangedDiskAreas(
                    snapshot=self.handle.snapshot, deviceKey=int(disk.key), startOffset=start, changeId=since
                )
            except (vmodl.fault.InvalidArgument, vim.fault.FileFault) as error:
                raise ChangeIdRejected(
                    f"vSphere rejected change id {since!r} for {disk.label}: {fault_message(error)}"
                ) from None
            except vmodl.MethodFault as error:
                raise ProtocolError(f"QueryChangedDiskAreas failed: {fault_message(error)}") from None
            areas.extend((int(area.start), int(area.length)) for area in info.changedArea or [])
            covered = int(info.startOffset) + int(info.length)
            if covered <= start:
                raise ProtocolError("QueryChangedDiskAreas made no progress (a zero-length answer)")
            start = covered
        return areas


class VSphereConnector:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def test(self) -> str:
        with session(self.endpoint) as instance:
            about = instance.content.about
            return f"{about.fullName} ({about.apiType})"

    def _is_vcenter(self, content: Any) -> bool:
        return str(content.about.apiType) == "VirtualCenter"

    def _tags(self, content: Any) -> dict[str, list[str]]:
        if not self._is_vcenter(content):
            return {}  # a standalone ESXi host has no tagging service
        return self._tags_with(TagClient(self.endpoint, port_of(self.endpoint)))

    def discover(self, progress: Progress = NO_PROGRESS) -> Inventory:
        with session(self.endpoint) as instance:
            content = instance.content
            try:
                progress.step(0, 3, "reading the topology")
                topology = read_topology(content)
                progress.step(1, 3, "reading tags")
                tags = self._tags(content)
                progress.step(2, 3, "reading virtual machines")
                machines = read_machines(content, topology, tags)
            except vim.fault.HostConnectFault as error:
                raise Unreachable(
                    f"lost the connection to {self.endpoint.address} during discovery: {fault_message(error)}"
                ) from None
            except vmodl.MethodFault as error:
                raise ProtocolError(
                    f"{self.endpoint.address} failed the inventory query: {fault_message(error)}"
                ) from None
            except (OSError, EOFError, http.client.HTTPException) as error:
                raise Unreachable(
                    f"lost the connection to {self.endpoint.address} during discovery: {error}"
                ) from None
            except xml.parsers.expat.ExpatError:
                # The session answered well-formed SOAP until now: an empty or cut answer is a dropped link.
                raise Unreachable(
                    f"lost the connection to {self.endpoint.address} during discovery: the answer broke off"
                ) from None
            progress.step(3, 3, "done")
            return Inventory(
                source_id=str(content.about.instanceUuid or self.endpoint.address),
                product=f"{content.about.fullName}",
                machines=machines,
                topology=topology.summary(),
            )

    def watch(
        self,
        on_change: Callable[[list[Change]], None],
        stop: threading.Event,
        on_connected: Callable[[], None] = lambda: None,
    ) -> None:
        """WaitForUpdatesEx on every VM: creations, clones, renames, moves, power changes and removals arrive
        within seconds. The first answer (every existing VM) only tells the watch is healthy: on_connected
        then has the caller run a full discovery, which also covers anything that changed while no watch ran."""
        with session(self.endpoint) as instance:
            content = instance.content
            try:
                self._watch(content, on_change, stop, on_connected)
            except ConnectorError:
                raise
            except vim.fault.HostConnectFault as error:
                raise Unreachable(
                    f"lost the watch on {self.endpoint.address}: {fault_message(error)}"
                ) from None
            except vmodl.MethodFault as error:
                raise ProtocolError(
                    f"watching {self.endpoint.address} failed: {fault_message(error)}"
                ) from None
            except (OSError, EOFError, http.client.HTTPException) as error:
                raise Unreachable(f"lost the watch on {self.endpoint.address}: {error}") from None
            except xml.parsers.expat.ExpatError:
                raise Unreachable(
                    f"lost the watch on {self.endpoint.address}: the answer broke off"
                ) from None

    def _watch(
        self,
        content: Any,
        on_change: Callable[[list[Change]], None],
        stop: threading.Event,
        on_connected: Callable[[], None],
    ) -> None:
        topology = read_topology(content)
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        collector = content.propertyCollector.CreatePropertyCollector()
        traversal = vmodl.query.PropertyCollector.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PROPERTIES)
            ],
        )
        property_filter = collector.CreateFilter(spec, partialUpdates=False)
        tag_client = TagClient(self.endpoint, port_of(self.endpoint)) if self._is_vcenter(content) else None
        try:
            version = ""
            first = True
            options = vmodl.query.PropertyCollector.WaitOptions(maxWaitSeconds=WATCH_WAIT_SECONDS)
            while not stop.is_set():
                update = collector.WaitForUpdatesEx(version, options)
                if first:  # the first answer holds every VM: the caller's full discovery reads them
                    first = False
                    on_connected()
                    if update is not None:
                        version = update.version
                    continue
                if update is None:
                    continue
                version = update.version
                changes = self._changes(content, update, topology, tag_client)
                if changes:
                    on_change(changes)
        finally:
            with suppress(Exception):  # the session may be gone already
                property_filter.Destroy()
                collector.Destroy()
                view.Destroy()

    def _changes(
        self, content: Any, update: Any, topology: Topology, tag_client: TagClient | None
    ) -> list[Change]:
        """One change per VM the update names, in the order first named, from the VM as it is now.

        A "leave" is not taken on trust: a move between folders sends "leave" and "enter" for a VM that still
        exists, so every named VM is read again and only one that no longer exists is a removal."""
        updates: dict[str, Any] = {}
        reread_topology = False
        for filter_set in update.filterSet or []:
            for object_update in filter_set.objectSet or []:
                ref = moref(object_update.obj)
                updates.setdefault(ref, object_update.obj)
                if object_update.kind in ("enter", "leave"):
                    reread_topology = True  # a new VM, or one that moved: its folder may be new too
                elif any(
                    hasattr(p.val, "_moId") and moref(p.val) not in topology.names
                    for p in object_update.changeSet or []
                ):
                    reread_topology = True  # a new host, folder or pool
        if reread_topology:
            topology.__dict__.update(read_topology(content).__dict__)
        changes: list[Change] = []
        tags_by_object: dict[str, list[str]] | None = None
        for ref, obj in updates.items():
            if tags_by_object is None:  # once per batch of changes, however many VMs it names
                tags_by_object = self._tags_with(tag_client) if tag_client is not None else {}
            machine = read_machine(content, obj, topology, tags_by_object.get(ref, []))
            if machine is None:
                changes.append(Change(kind="remove", external_id=ref))
            else:
                changes.append(Change(kind="upsert", machine=machine))
        return changes

    def _tags_with(self, client: TagClient) -> dict[str, list[str]]:
        client.login()
        try:
            return client.tags_by_object()
        finally:
            client.logout()

    @contextmanager
    def snapshot(
        self,
        external_id: str,
        datacenter: str,
        *,
        name: str,
        quiesce: bool,
        pre_script: str = "",
        post_script: str = "",
        guest_login: GuestLogin | None = None,
    ) -> Iterator[SnapshotSession]:
        """Enable CBT, take a (quiesced) snapshot, and remove it afterwards: always, on failure too. The policy's
        pre-script runs in the guest first (its failure stops the backup), the post-script right after the
        snapshot, also when taking it failed; both through VMware Tools with the guest login."""
        from connectors.vsphere.guest import run_in_guest

        with session(self.endpoint) as instance:
            content = instance.content
            try:
                vm = find_vm(content, external_id)
            except vmodl.MethodFault as error:
                raise ProtocolError(f"snapshot of {external_id} failed: {fault_message(error)}") from None
            if (pre_script.strip() or post_script.strip()) and guest_login is None:
                raise ConnectorError("the policy has guest scripts but no guest login to run them with")
            environment = {"BULWARK_SNAPSHOT": name}
            steps = []
            if pre_script.strip():
                assert guest_login is not None
                run_in_guest(content, vm, guest_login, pre_script, phase="pre", env=environment)
                steps.append("pre-snapshot script ran in the guest (exit 0)")
            try:
                just_enabled = enable_change_tracking(content, vm)
                if just_enabled:
                    steps.append("changed-block tracking enabled on the VM")
                handle = create_snapshot(content, vm, datacenter, name=name, quiesce=quiesce)
                steps.append(f"snapshot taken{' (quiesced)' if handle.quiesced else ''}")
            except vmodl.MethodFault as error:
                raise ProtocolError(f"snapshot of {external_id} failed: {fault_message(error)}") from None
            finally:
                # A failed post-script is a warning: the snapshot is good, and must still be read and removed.
                warnings = []
                if post_script.strip():
                    assert guest_login is not None
                    try:
                        run_in_guest(content, vm, guest_login, post_script, phase="post", env=environment)
                        steps.append("post-snapshot script ran in the guest (exit 0)")
                    except ConnectorError as error:
                        warnings.append(str(error))
            try:
                snap = SnapshotSession(
                    handle,
                    self.endpoint,
                    port_of(self.endpoint),
                    str(instance._stub.cookie or ""),
                    just_enabled,
                )
                snap.warnings = warnings
                snap.steps = steps
                yield snap
            finally:
                remove_snapshot(content, handle)

    @contextmanager
    def guest_files(self, external_id: str, login: GuestLogin) -> Iterator[GuestFiles]:
        """The VM's guest file system through VMware Tools, with the guest login (files restored into the VM)."""
        from connectors.vsphere.guestfiles import guest_files

        try:
            with guest_files(self.endpoint, external_id, login) as files:
                yield files
        except vmodl.MethodFault as error:
            raise ProtocolError(
                f"guest file operations on {external_id} failed: {fault_message(error)}"
            ) from None

    def restore_as_new_vm(
        self,
        original_external_id: str,
        datacenter: str,
        name: str,
        disks: list[tuple[BinaryIO, int]],
        progress: Callable[[int], None],
    ) -> str:
        """Create a VM named `name` beside the original and fill its disks from (reader, size) pairs; returns the
        new VM's managed object id. The VM stays powered off."""
        from connectors.vsphere.restore import create_vm_like, upload_disk

        with session(self.endpoint) as instance:
            content = instance.content
            try:
                vm, paths = create_vm_like(content, original_external_id, name, [size for _, size in disks])
            except vmodl.MethodFault as error:
                raise ProtocolError(f"creating VM {name} failed: {fault_message(error)}") from None
            offset = 0
            for (reader, size), path in zip(disks, paths, strict=True):
                base = offset
                upload_disk(
                    self.endpoint,
                    port_of(self.endpoint),
                    str(instance._stub.cookie or ""),
                    datacenter,
                    path,
                    reader,
                    size,
                    lambda done, base=base: progress(base + done),  # type: ignore[misc]
                )
                offset += size
            return str(vm._moId)
