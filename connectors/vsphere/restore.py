"""Restore as a new VM: created beside the original (same folder, resource pool, host and datastore), its disks
thin-provisioned with the recovered capacities, then filled through the datastore HTTP interface with PUT."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

from pyVmomi import vim

from connectors import tls
from connectors.base import Conflict, ConnectorError, Endpoint, ProtocolError, Unreachable
from connectors.vsphere.backup import BACKING, _props, find_vm, wait_for_task
from connectors.vsphere.inventory import collect

UPLOAD_PIECE = 4 * 1024 * 1024


def vm_named(content: Any, name: str) -> bool:
    """Whether any VM (or template) of this vCenter has this name, compared as vSphere shows names."""
    wanted = name.casefold()
    return any(
        str(props.get("name", "")).casefold() == wanted
        for _, props in collect(content, {vim.VirtualMachine: ["name"]})
    )


def create_vm_like(
    content: Any, original_moref: str, name: str, capacities: list[int]
) -> tuple[Any, list[str]]:
    """A powered-off VM named `name` placed like the original, with one thin disk per capacity. Returns the VM
    and its disks' datastore paths ("[ds] name/name.vmdk"), in order."""
    if vm_named(content, name):
        raise Conflict(f"a VM named {name!r} already exists on this vCenter; choose another name")
    original = find_vm(content, original_moref)
    props = _props(
        content,
        original,
        vim.VirtualMachine,
        [
            "parent",
            "resourcePool",
            "runtime.host",
            "datastore",
            "config.guestId",
            "config.hardware.numCPU",
            "config.hardware.memoryMB",
        ],
    )
    datastores = props.get("datastore") or []
    if not datastores or props.get("resourcePool") is None:
        raise ConnectorError("the original VM has no datastore or resource pool to place the new VM beside")
    datastore_name = _props(content, datastores[0], vim.Datastore, ["name"])["name"]
    controller = vim.vm.device.VirtualDeviceSpec(
        operation="add",
        device=vim.vm.device.ParaVirtualSCSIController(key=-100, busNumber=0, sharedBus="noSharing"),
    )
    disks = []
    for unit, capacity in enumerate(capacities):
        unit_number = unit if unit < 7 else unit + 1  # unit 7 is the controller's own
        disk = vim.vm.device.VirtualDisk(
            key=-(200 + unit),
            controllerKey=-100,
            unitNumber=unit_number,
            capacityInKB=(capacity + 1023) // 1024,
            capacityInBytes=capacity,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
                diskMode="persistent", thinProvisioned=True, fileName=f"[{datastore_name}]"
            ),
        )
        disks.append(vim.vm.device.VirtualDeviceSpec(operation="add", fileOperation="create", device=disk))
    spec = vim.vm.ConfigSpec(
        name=name,
        guestId=props.get("config.guestId") or "otherGuest64",
        numCPUs=props.get("config.hardware.numCPU") or 1,
        memoryMB=props.get("config.hardware.memoryMB") or 1024,
        files=vim.vm.FileInfo(vmPathName=f"[{datastore_name}]"),
        deviceChange=[controller, *disks],
    )
    vm = wait_for_task(
        content,
        props["parent"].CreateVM_Task(
            config=spec, pool=props["resourcePool"], host=props.get("runtime.host")
        ),
    )
    devices = (
        _props(content, vm, vim.VirtualMachine, ["config.hardware.device"]).get("config.hardware.device")
        or []
    )
    paths = [
        str(getattr(d.backing, "fileName", "")) for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
    ]
    if len(paths) != len(capacities):
        raise ProtocolError(f"the new VM has {len(paths)} disks, {len(capacities)} were asked for")
    return vm, paths


def upload_disk(
    endpoint: Endpoint,
    port: int,
    cookie: str,
    datacenter: str,
    datastore_path: str,
    source: BinaryIO,
    size: int,
    progress: Callable[[int], None],
) -> None:
    """PUT `size` bytes read from `source` into the disk's data file (its -flat.vmdk where one exists)."""
    match = BACKING.match(datastore_path)
    if match is None:
        raise ProtocolError(f"cannot upload to {datastore_path!r}")
    query = urllib.parse.urlencode({"dcPath": datacenter, "dsName": match["datastore"]})
    path = match["path"]
    flat = path[:-5] + "-flat.vmdk" if path.endswith(".vmdk") else path
    connection = http.client.HTTPSConnection(
        endpoint.address, port, timeout=endpoint.timeout, context=tls.client_context(endpoint)
    )
    try:
        target = path
        connection.request(
            "HEAD", "/folder/" + urllib.parse.quote(flat) + "?" + query, headers={"Cookie": cookie}
        )
        response = connection.getresponse()
        response.read()
        if response.status == 200:
            target = flat
        url = "/folder/" + urllib.parse.quote(target) + "?" + query
        connection.putrequest("PUT", url)
        connection.putheader("Cookie", cookie)
        connection.putheader("Content-Type", "application/octet-stream")
        connection.putheader("Content-Length", str(size))
        connection.endheaders()
        for done, piece in _pieces(source, size):
            connection.send(piece)
            progress(done)
        response = connection.getresponse()
        response.read()
        if response.status not in (200, 201, 204):
            raise ProtocolError(f"the datastore refused the upload of {target}: HTTP {response.status}")
    except (OSError, http.client.HTTPException, ssl.SSLError) as error:
        raise Unreachable(f"uploading to {endpoint.address} failed: {error}") from None
    finally:
        connection.close()


def _pieces(source: BinaryIO, size: int) -> Iterator[tuple[int, bytes]]:
    done = 0
    while done < size:
        piece = source.read(min(UPLOAD_PIECE, size - done))
        if not piece:
            raise ProtocolError("the restored image ended before its size")
        done += len(piece)
        yield done, piece
