"""Agentless Hyper-V backup: a production checkpoint through WinRM, disk bytes read over SMB from the host's
share (smbprotocol), VHD(X) parsed by dissect.hypervisor, changed ranges from resilient change tracking (RCT)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connectors.base import BadCredentials, Endpoint, ProtocolError, Unreachable
from connectors.throttle import Throttle


@dataclass
class HyperVDisk:
    key: str
    label: str
    capacity_bytes: int
    path: str  # on the host
    share: str  # \\host\share\...\disk.vhdx
    uuid: str = ""  # the VHD's disk identifier
    change_id: str = ""  # RCT id of the checkpoint


@dataclass
class CheckpointHandle:
    checkpoint: str
    quiesced: bool
    disks: list[HyperVDisk] = field(default_factory=list)


class VirtualDiskOverSmb:
    """The virtual disk inside a VHD(X) file read over SMB: seekable, read-only, throttled if asked."""

    def __init__(
        self,
        endpoint: Endpoint,
        disk: HyperVDisk,
        *,
        bytes_per_second: int | None = None,
        check: Callable[[], None] | None = None,
    ) -> None:
        import smbclient
        from dissect.hypervisor.disk.vhd import VHD
        from dissect.hypervisor.disk.vhdx import VHDX
        from smbprotocol.exceptions import LogonFailure, SMBException, SMBOSError

        port = int(endpoint.options.get("smb_port", 445))
        server = endpoint.address
        # The share path names the host by its Windows name; reach it at the source's address.
        rest = disk.share.lstrip("\\").split("\\", 1)
        if len(rest) != 2:
            raise ProtocolError(f"disk {disk.label} is not on an SMB share of the host ({disk.path})")
        unc = f"\\\\{server}\\{rest[1]}"
        try:
            smbclient.register_session(
                server,
                username=endpoint.username,
                password=endpoint.secret,
                port=port,
                connection_timeout=int(endpoint.timeout),
            )
            self._file = smbclient.open_file(unc, mode="rb", port=port)
        except LogonFailure:
            raise BadCredentials(f"the SMB share of {server} refused the user name or password") from None
        except SMBOSError as error:
            raise ProtocolError(f"cannot open {unc}: {error.strerror}") from None
        except (SMBException, OSError, ValueError) as error:
            raise Unreachable(f"cannot reach the SMB share of {server}:{port}: {error}") from None
        try:
            self._disk = VHDX(self._file) if unc.lower().endswith(".vhdx") else VHD(self._file)
        except Exception as error:
            self._file.close()
            raise ProtocolError(f"{unc} is not a readable VHD(X): {error}") from None
        self.size = disk.capacity_bytes
        self.throttle = Throttle(bytes_per_second, check=check)

    def read(self, length: int = -1) -> bytes:
        self.throttle.before_read(length)
        data: bytes = self._disk.read(length)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position: int = self._disk.seek(offset, whence)
        return position

    def tell(self) -> int:
        position: int = self._disk.tell()
        return position

    def close(self) -> None:
        self._file.close()


def parse_checkpoint(answer: Any) -> CheckpointHandle:
    from connectors.hyperv import _list

    try:
        handle = CheckpointHandle(
            checkpoint=str(answer["Checkpoint"]), quiesced=bool(answer.get("Production"))
        )
        for item in _list(answer.get("Disks")):
            path = str(item["Path"])
            handle.disks.append(
                HyperVDisk(
                    key=str(item["Key"]),
                    label=path.replace("\\", "/").rsplit("/", 1)[-1],
                    capacity_bytes=int(item["Size"]),
                    path=path,
                    share=str(item.get("Share") or ""),
                    uuid=str(item.get("DiskIdentifier") or ""),
                    change_id=str(item.get("RctId") or ""),
                )
            )
    except (KeyError, TypeError, ValueError) as error:
        raise ProtocolError(f"unexpected checkpoint answer: {error!r}") from None
    return handle


def parse_ranges(answer: Any) -> tuple[list[tuple[int, int]], int, int]:
    """(ranges, bytes processed in this page, disk size) from a GetVirtualDiskChanges answer."""
    from connectors.hyperv import _list

    try:
        offsets = [int(x) for x in _list(answer.get("Offsets"))]
        lengths = [int(x) for x in _list(answer.get("Lengths"))]
        if len(offsets) != len(lengths):
            raise ValueError("offsets and lengths differ in number")
        return list(zip(offsets, lengths, strict=True)), int(answer["Processed"]), int(answer["Size"])
    except (KeyError, TypeError, ValueError) as error:
        raise ProtocolError(f"unexpected change-tracking answer: {error!r}") from None
