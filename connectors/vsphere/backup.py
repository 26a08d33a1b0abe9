"""Agentless vSphere backup: a (quiesced) snapshot, its disks read through the datastore HTTP interface with
Range requests, and the snapshot always removed afterwards.

The datastore interface (`/folder/<path>?dcPath=<datacenter>&dsName=<datastore>`) needs no proprietary transport
library: it is plain HTTPS with the session cookie of the SOAP login. A disk's data lives in its `-flat.vmdk`
extent on VMFS/NFS; where no such file exists (vcsim keeps the data in the descriptor's name), the named file
is read. Reads past the end of a thin file return zeros, up to the disk's capacity.
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from connectors import tls
from connectors.base import ConnectorError, Endpoint, ProtocolError, Unreachable
from connectors.throttle import Throttle
from connectors.vsphere.session import fault_message

BACKING = re.compile(r"^\[(?P<datastore>[^\]]+)\]\s*(?P<path>.+)$")
READ_ATTEMPTS = 3
READ_AHEAD = 4 * 1024 * 1024


@dataclass
class SnapshotDisk:
    key: str  # the device key: stable for the VM
    label: str
    capacity_bytes: int
    datastore: str
    path: str  # inside the datastore
    uuid: str = ""
    change_id: str = ""  # the snapshot's disk change id (CBT), when tracking is on


@dataclass
class SnapshotHandle:
    vm: Any
    snapshot: Any
    datacenter: str
    disks: list[SnapshotDisk] = field(default_factory=list)
    quiesced: bool = False


def _props(content: Any, obj: Any, kind: Any, paths: list[str]) -> dict[str, Any]:
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=obj, skip=False)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths)],
    )
    result = content.propertyCollector.RetrieveContents([spec])
    return {prop.name: prop.val for prop in result[0].propSet} if result else {}


def wait_for_task(content: Any, task: Any, *, timeout: float = 3600.0) -> Any:
    """A task's result, its state read through the PropertyCollector (never by attribute access)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        props = _props(content, task, vim.Task, ["info.state", "info.result", "info.error"])
        if props.get("info.state") == "success":
            return props.get("info.result")
        if props.get("info.state") == "error":
            error = props.get("info.error")
            raise ProtocolError(f"vSphere task failed: {fault_message(error) if error else 'unknown error'}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    raise ProtocolError(f"vSphere task did not finish within {timeout:.0f} s")


def find_vm(content: Any, moref: str) -> Any:
    vm = vim.VirtualMachine(moref, content.propertyCollector._stub)
    try:
        _props(content, vm, vim.VirtualMachine, ["name"])
    except vmodl.fault.ManagedObjectNotFound:
        raise ConnectorError(f"the VM {moref} no longer exists in vCenter") from None
    return vm


def enable_change_tracking(content: Any, vm: Any) -> bool:
    """Turn CBT on if it is off; True if it was changed (the next backup must read every block)."""
    if _props(content, vm, vim.VirtualMachine, ["config.changeTrackingEnabled"]).get(
        "config.changeTrackingEnabled"
    ):
        return False
    wait_for_task(content, vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(changeTrackingEnabled=True)))
    return True


def create_snapshot(content: Any, vm: Any, datacenter: str, *, name: str, quiesce: bool) -> SnapshotHandle:
    try:
        snapshot = wait_for_task(
            content,
            vm.CreateSnapshot_Task(name=name, description="Bulwark backup", memory=False, quiesce=quiesce),
        )
    except ProtocolError as error:
        if not quiesce:
            raise
        # No VMware Tools or a failing VSS writer: a crash-consistent snapshot is better than no backup.
        snapshot = wait_for_task(
            content,
            vm.CreateSnapshot_Task(
                name=name, description=f"Bulwark backup ({error})", memory=False, quiesce=False
            ),
        )
        quiesce = False
    handle = SnapshotHandle(vm=vm, snapshot=snapshot, datacenter=datacenter, quiesced=quiesce)
    devices = (
        _props(content, snapshot, vim.vm.Snapshot, ["config.hardware.device"]).get("config.hardware.device")
        or []
    )
    for device in devices:
        if not isinstance(device, vim.vm.device.VirtualDisk):
            continue
        if getattr(device.backing, "parent", None) is not None:
            # The data before this snapshot is spread over a chain of delta disks that the datastore interface
            # serves only as raw sparse files: refuse rather than read half a disk.
            remove_snapshot(content, handle)
            raise ConnectorError(
                f"disk {device.key} of this VM sits on a chain of older snapshots: delete or consolidate them first"
            )
        match = BACKING.match(str(getattr(device.backing, "fileName", "")))
        if match is None:
            raise ProtocolError(
                f"disk {device.key} has a backing this connector cannot read: {device.backing}"
            )
        handle.disks.append(
            SnapshotDisk(
                key=str(device.key),
                label=str(device.deviceInfo.label) if device.deviceInfo else f"disk {device.key}",
                capacity_bytes=int(device.capacityInBytes or 0) or int(device.capacityInKB or 0) * 1024,
                datastore=match["datastore"],
                path=match["path"],
                uuid=str(getattr(device.backing, "uuid", "") or ""),
                change_id=str(getattr(device.backing, "changeId", "") or ""),
            )
        )
    return handle


def remove_snapshot(content: Any, handle: SnapshotHandle) -> None:
    wait_for_task(content, handle.snapshot.RemoveSnapshot_Task(removeChildren=False))


class DatastoreReader:
    """A read-only, seekable file over one datastore file, through HTTPS Range requests on one kept-alive
    connection (reconnected on error, READ_ATTEMPTS times)."""

    def __init__(
        self,
        endpoint: Endpoint,
        port: int,
        cookie: str,
        datacenter: str,
        disk: SnapshotDisk,
        *,
        bytes_per_second: int | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.throttle = Throttle(bytes_per_second, check=check)
        self.port = port
        self.cookie = cookie
        self.size = disk.capacity_bytes
        self.position = 0
        query = urllib.parse.urlencode({"dcPath": datacenter, "dsName": disk.datastore})
        base, _, name = disk.path.rpartition("/")
        flat = f"{base}/{name[:-5]}-flat.vmdk" if name.endswith(".vmdk") else disk.path
        self._connection: http.client.HTTPSConnection | None = None
        self._buffer = b""
        self._buffer_offset = 0
        self.url = self._choose([flat, disk.path], query)

    def _connect(self) -> http.client.HTTPSConnection:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(
                self.endpoint.address,
                self.port,
                timeout=self.endpoint.timeout,
                context=tls.client_context(self.endpoint),
            )
        return self._connection

    def _request(self, method: str, url: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        last: Exception | None = None
        for _ in range(READ_ATTEMPTS):
            try:
                connection = self._connect()
                connection.request(method, url, headers={"Cookie": self.cookie, **headers})
                response = connection.getresponse()
                body = response.read()
                return response.status, body, {k.lower(): v for k, v in response.getheaders()}
            except (OSError, http.client.HTTPException, ssl.SSLError) as error:
                last = error
                self.close()
        raise Unreachable(f"reading {url} from {self.endpoint.address} failed: {last}")

    def _choose(self, candidates: list[str], query: str) -> str:
        for path in candidates:
            url = "/folder/" + urllib.parse.quote(path) + "?" + query
            status, _, _ = self._request("HEAD", url, {})
            if status == 200:
                return url
        raise ProtocolError(f"none of {candidates} exists on the datastore")

    def pread(self, length: int, offset: int) -> bytes:
        if offset >= self.size or length <= 0:
            return b""
        length = min(length, self.size - offset)
        self.throttle.before_read(length)
        status, body, _ = self._request("GET", self.url, {"Range": f"bytes={offset}-{offset + length - 1}"})
        if status == 416:  # past the end of a thin file: zeros up to the capacity
            return bytes(length)
        if status not in (200, 206):
            raise ProtocolError(f"the datastore answered {status} to a read of {self.url}")
        if status == 200:  # a server that ignores Range sends the whole file
            body = body[offset : offset + length]
        return body + bytes(length - len(body))

    def read(self, length: int = -1) -> bytes:
        """Sequential reads come from READ_AHEAD-sized ranged requests (one GET per 4 MiB, not per block)."""
        if length < 0:
            length = self.size - self.position
        start = self.position - self._buffer_offset
        if not (start >= 0 and start + length <= len(self._buffer)):
            self._buffer = self.pread(max(length, READ_AHEAD), self.position)
            self._buffer_offset, start = self.position, 0
        data = self._buffer[start : start + length]
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: offset, 1: self.position + offset, 2: self.size + offset}[whence]
        return self.position

    def tell(self) -> int:
        return self.position

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
