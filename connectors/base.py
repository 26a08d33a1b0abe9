"""The contract every connector keeps: plain dataclasses out, typed errors with a reason, never fake data.

A connector is chosen by kind through `connectors.registry`. Discovery returns one complete `Inventory` or raises;
a partial answer is an error, so the caller never marks machines gone because a source was half reachable.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.progress import NullProgress, Progress

# --- errors ------------------------------------------------------------------------------------------------------


class ConnectorError(Exception):
    """A source could not be used; str() is a reason an admin can act on (never a credential)."""

    code = "error"


class Unreachable(ConnectorError):
    code = "unreachable"


class TimedOut(ConnectorError):
    code = "timeout"


class UntrustedCertificate(ConnectorError):
    code = "untrusted-certificate"

    def __init__(self, message: str, *, fingerprint: str = "") -> None:
        super().__init__(message)
        self.fingerprint = fingerprint  # SHA-256 of what the server presents (hex), when it could be read


class BadCredentials(ConnectorError):
    code = "bad-credentials"


class Misconfigured(ConnectorError):
    code = "misconfigured"


class Conflict(ConnectorError):
    """What was asked for clashes with what exists (a VM of that name on the target)."""

    code = "conflict"


class ChangeIdRejected(ConnectorError):
    """The platform no longer knows the change id (CBT reset, resize, restored snapshot): read the whole disk."""

    code = "cbt-reset"


class ProtocolError(ConnectorError):
    """The endpoint answered, but not as the platform would (wrong product, malformed reply)."""

    code = "protocol"


# --- what a source describes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Where a source lives and how to talk to it. `secret` is decrypted only for the connection."""

    kind: str  # vsphere | hyperv | agent
    address: str
    port: int | None = None
    username: str = ""
    secret: str = field(default="", repr=False)
    verify_tls: bool = True
    ca_pem: str = ""  # extra trusted certificate(s) (a self-signed vCenter), PEM
    thumbprint: str = ""  # or the SHA-256 fingerprint of the one certificate to accept
    timeout: float = 20.0
    options: dict[str, Any] = field(default_factory=dict)  # e.g. hyperv transport ntlm|kerberos|credssp


@dataclass
class DiscoveredDisk:
    key: str  # stable within the machine (device key, VHD path)
    label: str
    capacity_bytes: int
    path: str = ""  # "[datastore] vm/vm.vmdk", a VHDX path, /dev/sda
    change_tracking: bool | None = None  # CBT / RCT enabled (None: not applicable)


@dataclass
class DiscoveredMachine:
    """One machine as its platform reports it. `identity` never changes for the life of the machine."""

    identity: str  # "vsphere:<instanceUuid>", "hyperv:<VM Id>", "agent:<machine id>"
    external_id: str  # the platform's handle: a managed object reference, a VM Id
    name: str
    kind: str  # vm | physical
    platform: str  # vsphere | hyperv | agent
    power_state: str = ""
    guest_os: str = ""
    hostname: str = ""
    ip_addresses: list[str] = field(default_factory=list)
    datacenter: str = ""
    cluster: str = ""
    host: str = ""
    folder: str = ""  # path below the datacenter's VM folder, "/" separated
    resource_pool: str = ""
    datastores: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # "category:tag" (vSphere), or plain
    attributes: dict[str, str] = field(default_factory=dict)  # custom attributes, notes
    bios_uuid: str = ""
    template: bool = False
    disks: list[DiscoveredDisk] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)  # anything else worth showing


@dataclass
class Inventory:
    """A complete answer from one source. `topology` counts what was walked (datacenters, clusters, ...)."""

    source_id: str  # the endpoint's own id (vCenter instanceUuid, Hyper-V cluster or host name)
    product: str  # "VMware vCenter Server 8.0.2", "Hyper-V on Windows Server 2022"
    machines: list[DiscoveredMachine]
    topology: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Change:
    """What a watch saw: a machine created, changed (renamed, moved...) or removed."""

    kind: str  # "upsert" | "remove"
    machine: DiscoveredMachine | None = None  # for upsert
    external_id: str = ""  # for remove


class Connector(Protocol):
    def test(self) -> str:
        """Connect and log in; returns the product name and version, or raises a ConnectorError."""
        ...

    def discover(self, progress: Progress = ...) -> Inventory:
        """The whole inventory in one pass, or a ConnectorError: never a partial list."""
        ...

    def watch(
        self,
        on_change: Callable[[list[Change]], None],
        stop: threading.Event,
        on_connected: Callable[[], None] = ...,
    ) -> None:
        """Call on_change as the platform reports changes, in the order they happened, until stop is set.

        on_connected is called once per connection, as soon as the platform's first answer shows the watch
        healthy; changes from that moment on reach on_change, and the caller runs a full discovery for whatever
        changed while no watch ran. A removal is reported only once the platform confirms the machine is gone
        (a move reports "left" and "entered" for a machine that still exists). Raises ConnectorError when the
        connection is lost."""
        ...


NO_PROGRESS: Progress = NullProgress()


class FileSink(Protocol):
    """Where restored files are written, one by one: a VM's guest (VMware Tools), an SMB share. Paths are the
    sink's own (absolute; with "\\" on Windows guests and shares)."""

    def stat(self, path: str) -> Any:
        """What is at `path` (an object with `kind`: file, directory or symlink), or None."""
        ...

    def make_folder(self, path: str) -> None: ...

    def upload(
        self,
        path: str,
        size: int,
        pieces: Iterable[bytes],
        *,
        overwrite: bool,
        mode: int | None = None,
        mtime: datetime.datetime | None = None,
        progress: Callable[[int], None] = ...,
    ) -> None:
        """Write `size` bytes; the file appears under `path` only when complete; FileAlreadyExists unless
        `overwrite`."""
        ...
