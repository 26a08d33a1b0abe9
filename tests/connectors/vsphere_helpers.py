"""Acting on vcsim the way an admin would in the vSphere client (clone, rename, tag), through pyvmomi."""

from __future__ import annotations

import contextlib
import ssl
import time
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from connectors.vsphere.tags import TagClient
from tests.connectors.conftest import endpoint_for
from tests.peers import Vcsim


class Admin:
    def __init__(self, server: Vcsim) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.server = server
        self.instance = SmartConnect(
            host="127.0.0.1", port=server.port, user=server.username, pwd=server.password, sslContext=context
        )
        self.content = self.instance.content

    def close(self) -> None:
        Disconnect(self.instance)

    def vm(self, name: str) -> Any:
        view = self.content.viewManager.CreateContainerView(
            self.content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[
                    vmodl.query.PropertyCollector.ObjectSpec(
                        obj=view,
                        skip=True,
                        selectSet=[
                            vmodl.query.PropertyCollector.TraversalSpec(
                                name="v", path="view", skip=False, type=vim.view.ContainerView
                            )
                        ],
                    )
                ],
                propSet=[
                    vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])
                ],
            )
            for item in self.content.propertyCollector.RetrieveContents([spec]):
                if item.propSet[0].val == name:
                    return item.obj
        finally:
            view.Destroy()
        raise LookupError(name)

    def wait(self, task: Any, timeout: float = 30.0) -> Any:
        """Task state read through the PropertyCollector (attribute reads of unset properties crash vcsim)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            spec = vmodl.query.PropertyCollector.FilterSpec(
                objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task, skip=False)],
                propSet=[
                    vmodl.query.PropertyCollector.PropertySpec(
                        type=vim.Task, pathSet=["info.state", "info.result", "info.error"]
                    )
                ],
            )
            props = {
                p.name: p.val for p in self.content.propertyCollector.RetrieveContents([spec])[0].propSet
            }
            if props.get("info.state") == "success":
                return props.get("info.result")
            if props.get("info.state") == "error":
                raise RuntimeError(f"task failed: {props.get('info.error')}")
            time.sleep(0.05)
        raise TimeoutError("task did not finish")

    def clone(self, source_name: str, new_name: str) -> Any:
        source = self.vm(source_name)
        spec = vim.vm.CloneSpec(location=vim.vm.RelocateSpec(), powerOn=False, template=False)
        parent = (
            self.content.propertyCollector.RetrieveContents(
                [
                    vmodl.query.PropertyCollector.FilterSpec(
                        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=source, skip=False)],
                        propSet=[
                            vmodl.query.PropertyCollector.PropertySpec(
                                type=vim.VirtualMachine, pathSet=["parent"]
                            )
                        ],
                    )
                ]
            )[0]
            .propSet[0]
            .val
        )
        return self.wait(source.CloneVM_Task(folder=parent, name=new_name, spec=spec))

    def rename(self, name: str, new_name: str) -> None:
        self.wait(self.vm(name).Rename_Task(newName=new_name))

    def destroy(self, name: str) -> None:
        vm = self.vm(name)
        with contextlib.suppress(RuntimeError):  # already off
            self.wait(vm.PowerOffVM_Task())
        self.wait(vm.Destroy_Task())

    def vm_folder(self, path: str) -> Any:
        """The datacenter's VM folder at `path` ("/a/b"), creating the folders that are missing."""
        folder = self.content.rootFolder.childEntity[0].vmFolder
        for name in [part for part in path.split("/") if part]:
            child = next(
                (c for c in folder.childEntity if isinstance(c, vim.Folder) and c.name == name), None
            )
            folder = child if child is not None else folder.CreateFolder(name)
        return folder

    def move(self, vm_name: str, folder_path: str) -> None:
        self.wait(self.vm_folder(folder_path).MoveIntoFolder_Task([self.vm(vm_name)]))

    def power(self, vm_name: str, on: bool) -> None:
        vm = self.vm(vm_name)
        self.wait(vm.PowerOnVM_Task() if on else vm.PowerOffVM_Task())

    def create(self, name: str, folder_path: str = "/") -> None:
        """A new, empty VM in the first cluster's resource pool."""
        view = self.content.viewManager.CreateContainerView(self.content.rootFolder, [vim.ResourcePool], True)
        try:
            pool = view.view[0]
        finally:
            view.Destroy()
        config = vim.vm.ConfigSpec(
            name=name,
            guestId="otherGuest64",
            numCPUs=1,
            memoryMB=128,
            files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
        )
        self.wait(self.vm_folder(folder_path).CreateVM_Task(config=config, pool=pool))

    def tag(self, vm_name: str, category: str, tag: str) -> None:
        client = TagClient(endpoint_for(self.server), self.server.port)
        client.login()
        try:
            category_id = client.create_category(category)
            tag_id = client.create_tag(category_id, tag)
            client.attach(tag_id, "VirtualMachine", self.vm(vm_name)._moId)
        finally:
            client.logout()


def set_custom_attribute(admin: Admin, vm_name: str, key: str, value: str) -> None:
    manager = admin.content.customFieldsManager
    field = manager.AddCustomFieldDef(name=key, moType=vim.VirtualMachine)
    manager.SetField(entity=admin.vm(vm_name), key=field.key, value=value)


def migrate(admin: Admin, vm_name: str, host_name: str) -> None:
    """vMotion: the VM moves to another host of its cluster."""
    view = admin.content.viewManager.CreateContainerView(admin.content.rootFolder, [vim.HostSystem], True)
    try:
        host = next(h for h in view.view if h.name == host_name)
    finally:
        view.Destroy()
    admin.wait(admin.vm(vm_name).RelocateVM_Task(spec=vim.vm.RelocateSpec(host=host)))


def upload_disk(admin: Admin, vm_name: str, data: bytes) -> None:
    """Give a vcsim VM real disk content (vcsim keeps empty disk files): resize its disk to the data's size and
    PUT the bytes into the disk's flat extent through the datastore HTTP interface."""
    import urllib.request

    vm = admin.vm(vm_name)
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm, skip=False)],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.VirtualMachine, pathSet=["config.hardware.device"]
            )
        ],
    )
    devices = admin.content.propertyCollector.RetrieveContents([spec])[0].propSet[0].val
    disk = next(d for d in devices if isinstance(d, vim.vm.device.VirtualDisk))
    disk.capacityInKB = len(data) // 1024
    disk.capacityInBytes = len(data)
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    admin.wait(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])))
    datastore, _, path = disk.backing.fileName.partition("] ")
    flat = path.removesuffix(".vmdk") + "-flat.vmdk"  # a disk's data lives in its flat extent, as on VMFS
    url = f"https://127.0.0.1:{admin.server.port}/folder/{flat}?dcPath=DC0&dsName={datastore.strip('[')}"
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        url, data=data, method="PUT", headers={"Cookie": admin.instance._stub.cookie}
    )
    with urllib.request.urlopen(request, context=context) as response:  # noqa: S310  (a local test server)
        assert response.status in (200, 201)


def snapshot_count(admin: Admin, vm_name: str) -> int:
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=admin.vm(vm_name), skip=False)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=["snapshot"])],
    )
    result = admin.content.propertyCollector.RetrieveContents([spec])
    props = result[0].propSet if result and result[0].propSet else []
    if not props or props[0].val is None:
        return 0

    def count(trees: list[Any]) -> int:
        return sum(1 + count(tree.childSnapshotList or []) for tree in trees)

    return count(props[0].val.rootSnapshotList or [])
