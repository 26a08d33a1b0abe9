"""Files into a VM's guest through VMware Tools guest operations: no network path to the guest, no agent.

With the guest login: ListFilesInGuest to see what is there, MakeDirectoryInGuest for missing folders, and
InitiateFileTransferToGuest for a one-time URL on the ESXi host that takes a PUT of the file's bytes (the file
appears when complete); permissions and times go with it as GuestPosixFileAttributes (Linux guests) or
GuestWindowsFileAttributes.
"""

from __future__ import annotations

import datetime
import http.client
import ssl
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyVmomi import vim, vmodl

from connectors import tls
from connectors.base import ConnectorError, Endpoint, ProtocolError, Unreachable
from connectors.vsphere.backup import find_vm
from connectors.vsphere.guest import GuestLogin, GuestLoginRefused, GuestUnavailable
from connectors.vsphere.session import fault_message, port_of, session


class GuestFileError(ConnectorError):
    """One file could not be written in the guest (the others may still be)."""

    code = "guest-file"


@dataclass(frozen=True)
class GuestEntry:
    path: str
    kind: str  # file | directory | symlink
    size: int


class GuestFiles:
    """One VM's guest file system, for one login, over one vCenter session."""

    def __init__(self, endpoint: Endpoint, content: Any, vm: Any, login: GuestLogin) -> None:
        self.endpoint = endpoint
        self.manager = content.guestOperationsManager.fileManager
        self.vm = vm
        self.auth = vim.vm.guest.NamePasswordAuthentication(username=login.username, password=login.password)
        self.login = login
        guest_id = str(getattr(getattr(vm, "config", None), "guestId", "") or "").lower()
        self.windows = guest_id.startswith("win")

    def _call(
        self,
        what: str,
        method: Callable[..., Any],
        *args: Any,
        tolerate: tuple[type[Exception], ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Call a guest file method; the faults in `tolerate` give None, the others a ConnectorError saying why."""
        try:
            return method(self.vm, self.auth, *args, **kwargs)
        except tolerate:
            return None
        except vim.fault.InvalidGuestLogin:
            raise GuestLoginRefused(f"the guest refused the login of {self.login.username!r}") from None
        except (vim.fault.GuestOperationsUnavailable, vim.fault.InvalidPowerState) as error:
            raise GuestUnavailable(
                "guest operations are unavailable (VMware Tools not running, or the VM is off): "
                + fault_message(error)
            ) from None
        except vim.fault.FileFault as error:
            raise GuestFileError(f"{what}: {type(error).__name__}: {fault_message(error)}") from None
        except vmodl.MethodFault as error:
            raise ConnectorError(f"{what} in the guest failed: {fault_message(error)}") from None

    def stat(self, path: str) -> GuestEntry | None:
        """What is at `path` in the guest (not following a link), or None."""
        found = self._call(
            f"looking at {path}",
            self.manager.ListFilesInGuest,
            path,
            maxResults=1,
            tolerate=(vim.fault.FileNotFound,),
        )
        files = list(found.files or []) if found is not None else []
        if not files:
            return None
        return GuestEntry(path=path, kind=str(files[0].type), size=int(files[0].size or 0))

    def make_folder(self, path: str) -> None:
        """Create a folder and its parents; an existing folder is fine, a file in its place is not."""
        existing = self.stat(path)
        if existing is not None:
            if existing.kind != "directory":
                raise GuestFileError(f"{path} exists in the guest and is not a folder")
            return
        self._call(  # FileAlreadyExists: made meanwhile
            f"creating {path}",
            self.manager.MakeDirectoryInGuest,
            path,
            createParentDirectories=True,
            tolerate=(vim.fault.FileAlreadyExists,),
        )

    def _attributes(self, mode: int | None, mtime: datetime.datetime | None) -> Any:
        if self.windows:
            return vim.vm.guest.FileManager.WindowsFileAttributes(modificationTime=mtime)
        return vim.vm.guest.FileManager.PosixFileAttributes(
            permissions=(mode & 0o7777) if mode else None, modificationTime=mtime
        )

    def upload(
        self,
        path: str,
        size: int,
        pieces: Iterable[bytes],
        *,
        overwrite: bool,
        mode: int | None = None,
        mtime: datetime.datetime | None = None,
        progress: Callable[[int], None] = lambda done: None,
    ) -> None:
        """Write `size` bytes from `pieces` to `path` in the guest; FileAlreadyExists unless `overwrite`."""
        url = self._call(
            f"writing {path}",
            self.manager.InitiateFileTransferToGuest,
            path,
            self._attributes(mode, mtime),
            size,
            overwrite,
        )
        self._put(str(url), path, size, pieces, progress)

    def _put(
        self, url: str, path: str, size: int, pieces: Iterable[bytes], progress: Callable[[int], None]
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        host = parsed.hostname or "*"
        if host == "*":  # the host vCenter told us to use: the one we are connected to
            address, port = self.endpoint.address, port_of(self.endpoint)
        else:
            address, port = host, parsed.port or 443
        connection = http.client.HTTPSConnection(
            address, port, timeout=max(self.endpoint.timeout, 60.0), context=tls.client_context(self.endpoint)
        )
        target = parsed.path + ("?" + parsed.query if parsed.query else "")
        try:
            connection.putrequest("PUT", target, skip_accept_encoding=True)
            connection.putheader("Content-Type", "application/octet-stream")
            connection.putheader("Content-Length", str(size))
            connection.endheaders()
            done = 0
            for piece in pieces:
                connection.send(piece)
                done += len(piece)
                progress(done)
            if done != size:
                raise ProtocolError(f"{path}: {done} bytes were read from the backup, {size} expected")
            response = connection.getresponse()
            response.read()
            if response.status not in (200, 201, 204):
                raise GuestFileError(f"the guest refused the upload of {path}: HTTP {response.status}")
        except (OSError, http.client.HTTPException, ssl.SSLError) as error:
            raise Unreachable(f"uploading {path} to the guest through {address} failed: {error}") from None
        finally:
            connection.close()


@contextmanager
def guest_files(endpoint: Endpoint, external_id: str, login: GuestLogin) -> Iterator[GuestFiles]:
    with session(endpoint) as instance:
        content = instance.content
        vm = find_vm(content, external_id)
        yield GuestFiles(endpoint, content, vm, login)
