"""The whole vSphere inventory in one PropertyCollector retrieval, turned into plain dataclasses.

Every object type is read through one ContainerView from the root folder with only the properties needed
(RetrievePropertiesEx, continued page by page), never by attribute access per VM: one round trip per page
instead of dozens per VM, and unset properties are simply absent instead of faulting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim, vmodl

from connectors.base import DiscoveredDisk, DiscoveredMachine

PAGE = 1000

VM_PROPERTIES = [
    "name",
    "parent",
    "resourcePool",
    "datastore",
    "customValue",
    "config.instanceUuid",
    "config.uuid",
    "config.template",
    "config.guestFullName",
    "config.annotation",
    "config.changeTrackingEnabled",
    "config.hardware.device",
    "guest.guestFullName",
    "guest.hostName",
    "guest.net",
    "guest.ipAddress",
    "runtime.powerState",
    "runtime.host",
]

TOPOLOGY_PROPERTIES: dict[Any, list[str]] = {
    vim.Datacenter: ["name", "parent", "vmFolder"],
    vim.Folder: ["name", "parent"],
    vim.ComputeResource: ["name", "parent"],  # clusters are ClusterComputeResource, a subtype
    vim.HostSystem: ["name", "parent"],
    vim.ResourcePool: ["name", "parent"],
    vim.Datastore: ["name"],
}


def moref(obj: Any) -> str:
    return str(obj._moId)


@dataclass
class Topology:
    """Names and parents of everything that places a VM: folders, pools, hosts, clusters, datacenters."""

    names: dict[str, str] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    vm_folders: set[str] = field(default_factory=set)  # each datacenter's root VM folder
    custom_fields: dict[int, str] = field(default_factory=dict)

    def add(self, kind: str, ref: str, props: dict[str, Any]) -> None:
        self.kinds[ref] = kind
        self.names[ref] = str(props.get("name", ref))
        if props.get("parent") is not None:
            self.parents[ref] = moref(props["parent"])
        if props.get("vmFolder") is not None:
            self.vm_folders.add(moref(props["vmFolder"]))

    def ancestor(self, ref: str, kind: str) -> str:
        seen = 0
        while ref and seen < 100:
            if self.kinds.get(ref) == kind:
                return ref
            ref = self.parents.get(ref, "")
            seen += 1
        return ""

    def folder_path(self, folder: str) -> str:
        """ "/Production/Databases" below the datacenter's VM folder."""
        parts: list[str] = []
        while (
            folder
            and folder not in self.vm_folders
            and self.kinds.get(folder) == "Folder"
            and len(parts) < 100
        ):
            parts.append(self.names.get(folder, folder))
            folder = self.parents.get(folder, "")
        return "/" + "/".join(reversed(parts))

    def pool_path(self, pool: str) -> str:
        parts: list[str] = []
        while pool and self.kinds.get(pool) == "ResourcePool" and len(parts) < 100:
            parts.append(self.names.get(pool, pool))
            pool = self.parents.get(pool, "")
        return "/".join(reversed(parts))

    def summary(self) -> dict[str, list[str]]:
        wanted = {
            "Datacenter": "datacenters",
            "ClusterComputeResource": "clusters",
            "HostSystem": "hosts",
            "Datastore": "datastores",
            "ResourcePool": "resource_pools",
            "Folder": "folders",
        }
        out: dict[str, list[str]] = {label: [] for label in wanted.values()}
        for ref, kind in self.kinds.items():
            if kind in wanted:
                out[wanted[kind]].append(self.names[ref])
        return {key: sorted(value) for key, value in out.items()}


def collect(content: Any, types: dict[Any, list[str]]) -> Iterable[tuple[Any, dict[str, Any]]]:
    """(object, {property: value}) for every object of the given types, through one container view."""
    view = content.viewManager.CreateContainerView(content.rootFolder, list(types), True)
    try:
        traversal = vmodl.query.PropertyCollector.TraversalSpec(
            name="view", path="view", skip=False, type=vim.view.ContainerView
        )
        spec = vmodl.query.PropertyCollector.FilterSpec(
            objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=view, skip=True, selectSet=[traversal])],
            propSet=[
                vmodl.query.PropertyCollector.PropertySpec(type=kind, pathSet=paths)
                for kind, paths in types.items()
            ],
        )
        collector = content.propertyCollector
        result = collector.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=PAGE)
        )
        while result is not None:
            for item in result.objects:
                yield item.obj, {prop.name: prop.val for prop in item.propSet}
            if not result.token:
                break
            result = collector.ContinueRetrievePropertiesEx(result.token)
    finally:
        view.Destroy()


def read_topology(content: Any) -> Topology:
    topology = Topology()
    for obj, props in collect(content, TOPOLOGY_PROPERTIES):
        topology.add(type(obj).__name__.rsplit(".", 1)[-1], moref(obj), props)
    for definition in content.customFieldsManager.field if content.customFieldsManager else []:
        topology.custom_fields[int(definition.key)] = str(definition.name)
    return topology


def read_machines(content: Any, topology: Topology, tags: dict[str, list[str]]) -> list[DiscoveredMachine]:
    return [
        machine_from(moref(obj), props, topology, tags.get(moref(obj), []))
        for obj, props in collect(content, {vim.VirtualMachine: VM_PROPERTIES})
    ]


def read_machine(content: Any, vm: Any, topology: Topology, tags: list[str]) -> DiscoveredMachine | None:
    """One VM's properties (after a watch saw it change); None if it is gone meanwhile."""
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=vm, skip=False)],
        propSet=[vmodl.query.PropertyCollector.PropertySpec(type=vim.VirtualMachine, pathSet=VM_PROPERTIES)],
    )
    try:
        result = content.propertyCollector.RetrievePropertiesEx(
            [spec], vmodl.query.PropertyCollector.RetrieveOptions()
        )
    except vmodl.fault.ManagedObjectNotFound:
        return None
    if result is None or not result.objects:
        return None
    item = result.objects[0]
    return machine_from(moref(vm), {prop.name: prop.val for prop in item.propSet}, topology, tags)


def machine_from(ref: str, props: dict[str, Any], topology: Topology, tags: list[str]) -> DiscoveredMachine:
    instance_uuid = str(props.get("config.instanceUuid") or "")
    host = moref(props["runtime.host"]) if props.get("runtime.host") is not None else ""
    cluster = topology.ancestor(topology.parents.get(host, ""), "ClusterComputeResource")
    datacenter = topology.ancestor(
        moref(props["parent"]) if props.get("parent") is not None else "", "Datacenter"
    )
    if not datacenter and host:
        datacenter = topology.ancestor(host, "Datacenter")
    ips: list[str] = []
    for nic in props.get("guest.net") or []:
        ips.extend(str(address) for address in (nic.ipAddress or []) if address not in ips)
    if props.get("guest.ipAddress") and props["guest.ipAddress"] not in ips:
        ips.insert(0, str(props["guest.ipAddress"]))
    attributes = {
        topology.custom_fields.get(int(value.key), str(value.key)): str(getattr(value, "value", ""))
        for value in props.get("customValue") or []
    }
    if props.get("config.annotation"):
        attributes["notes"] = str(props["config.annotation"])
    cbt = props.get("config.changeTrackingEnabled")
    disks = [
        DiscoveredDisk(
            key=str(device.key),
            label=str(device.deviceInfo.label) if device.deviceInfo else f"disk {device.key}",
            capacity_bytes=int(device.capacityInBytes or 0) or int(device.capacityInKB or 0) * 1024,
            path=str(getattr(device.backing, "fileName", "") or ""),
            change_tracking=bool(cbt) if cbt is not None else None,
        )
        for device in props.get("config.hardware.device") or []
        if isinstance(device, vim.vm.device.VirtualDisk)
    ]
    return DiscoveredMachine(
        identity=f"vsphere:{instance_uuid}" if instance_uuid else f"vsphere-moref:{ref}",
        external_id=ref,
        name=str(props.get("name", ref)),
        kind="vm",
        platform="vsphere",
        power_state=str(props.get("runtime.powerState") or ""),
        guest_os=str(props.get("guest.guestFullName") or props.get("config.guestFullName") or ""),
        hostname=str(props.get("guest.hostName") or ""),
        ip_addresses=ips,
        datacenter=topology.names.get(datacenter, ""),
        cluster=topology.names.get(cluster, ""),
        host=topology.names.get(host, ""),
        folder=topology.folder_path(moref(props["parent"])) if props.get("parent") is not None else "",
        resource_pool=topology.pool_path(moref(props["resourcePool"]))
        if props.get("resourcePool") is not None
        else "",
        datastores=sorted(topology.names.get(moref(ds), moref(ds)) for ds in props.get("datastore") or []),
        tags=list(tags),
        attributes=attributes,
        bios_uuid=str(props.get("config.uuid") or ""),
        template=bool(props.get("config.template")),
        disks=disks,
    )
