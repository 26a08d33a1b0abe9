"""Files written to an SMB share (restores to a file server), through smbprotocol's smbclient.

The same operations as a VM's guest file system (connectors.vsphere.guestfiles): what is at a path, make a folder
with its parents, write a file. A file is written under a temporary name and renamed when complete, so an
interrupted restore never leaves half a file under the real name.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from connectors.base import BadCredentials, ConnectorError, ProtocolError, Unreachable

UNC = re.compile(
    r"^\\\\(?P<host>[A-Za-z0-9._-]+)(?::(?P<port>\d{1,5}))?\\(?P<share>[^\\/:*?\"<>|]+)(?P<rest>(\\[^\\]+)*)\\?$"
)


class SmbFileError(ConnectorError):
    code = "smb-file"


@dataclass(frozen=True)
class SmbPath:
    host: str
    port: int
    share: str
    folder: str  # below the share, "\\"-separated, without a leading one

    @property
    def unc(self) -> str:
        return f"\\\\{self.host}\\{self.share}" + (f"\\{self.folder}" if self.folder else "")


def parse_unc(text: str) -> SmbPath:
    """\\\\server\\share\\folder (or \\\\server:port\\share\\folder); no '.' or '..' components."""
    match = UNC.match(text.strip())
    if match is None:
        raise ValueError(
            "an SMB folder is written \\\\server\\share\\folder (a port may follow the server: server:4445)"
        )
    parts = [part for part in (match["rest"] or "").split("\\") if part]
    if any(part in (".", "..") for part in parts):
        raise ValueError("an SMB folder may not contain . or .. components")
    return SmbPath(match["host"], int(match["port"] or 445), match["share"], "\\".join(parts))


@dataclass(frozen=True)
class SmbEntry:
    path: str
    kind: str  # file | directory | symlink


class SmbFiles:
    """One share, for one login; paths are full UNC paths."""

    def __init__(self, port: int) -> None:
        self.port = port

    def _fail(self, what: str, error: Exception) -> ConnectorError:
        from smbprotocol.exceptions import SMBOSError

        if isinstance(error, SMBOSError):
            return SmbFileError(f"{what}: {error.strerror}")
        return Unreachable(f"{what}: {error}")

    def stat(self, path: str) -> SmbEntry | None:
        import stat as modes

        import smbclient
        from smbprotocol.exceptions import SMBException, SMBOSError

        try:
            info = smbclient.lstat(path, port=self.port)
        except SMBOSError as error:
            if error.errno == 2:  # ENOENT
                return None
            raise self._fail(f"looking at {path}", error) from None
        except (SMBException, OSError, ValueError) as error:
            raise self._fail(f"looking at {path}", error) from None
        if modes.S_ISDIR(info.st_mode):
            return SmbEntry(path, "directory")
        return SmbEntry(path, "symlink" if modes.S_ISLNK(info.st_mode) else "file")

    def make_folder(self, path: str) -> None:
        import smbclient
        from smbprotocol.exceptions import SMBException

        existing = self.stat(path)
        if existing is not None:
            if existing.kind != "directory":
                raise SmbFileError(f"{path} exists on the share and is not a folder")
            return
        try:
            smbclient.makedirs(path, exist_ok=True, port=self.port)
        except (SMBException, OSError, ValueError) as error:
            raise self._fail(f"creating {path}", error) from None

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
        import smbclient
        from smbprotocol.exceptions import SMBException

        if not overwrite and self.stat(path) is not None:
            raise SmbFileError(f"{path}: FileAlreadyExists")
        folder, _, name = path.rpartition("\\")
        temporary = f"{folder}\\.bulwark-{uuid.uuid4().hex[:12]}-{name}"[: len(folder) + 250]
        done = 0
        try:
            with smbclient.open_file(temporary, mode="xb", port=self.port) as handle:
                for piece in pieces:
                    handle.write(piece)
                    done += len(piece)
                    progress(done)
            if done != size:
                raise ProtocolError(f"{path}: {done} bytes were read from the backup, {size} expected")
            if mtime is not None:
                stamp = mtime.timestamp()
                smbclient.utime(temporary, times=(stamp, stamp), port=self.port)
            smbclient.replace(temporary, path, port=self.port)
        except (SMBException, OSError, ValueError, ProtocolError) as error:
            with suppress(SMBException, OSError, ValueError):  # it may never have been created
                smbclient.remove(temporary, port=self.port)
            if isinstance(error, ProtocolError):
                raise
            raise self._fail(f"writing {path}", error) from None


@contextmanager
def smb_share(where: SmbPath, username: str, password: str, *, timeout: float = 30.0) -> Iterator[SmbFiles]:
    """A logged-in session to the share's server (closed afterwards); a refused login is BadCredentials."""
    import smbclient
    from smbprotocol.exceptions import LogonFailure, SMBException

    try:
        smbclient.register_session(
            where.host, username=username, password=password, port=where.port, connection_timeout=int(timeout)
        )
    except LogonFailure:
        raise BadCredentials(f"the SMB server {where.host} refused the user name or password") from None
    except (SMBException, OSError, ValueError) as error:
        raise Unreachable(f"cannot reach the SMB server {where.host}:{where.port}: {error}") from None
    try:
        yield SmbFiles(where.port)
    finally:
        _close(smbclient, where)


def _close(smbclient: Any, where: SmbPath) -> None:
    with suppress(Exception):  # closing a session that already failed is best effort
        smbclient.delete_session(where.host, port=where.port)
