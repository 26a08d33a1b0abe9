"""File restores on the agent's host: the console streams a tar of the chosen files, the agent writes them under
the target folder.

Nothing is trusted from the archive: every name must be relative, without '..', and stay under the target; a
parent must be a real directory (never a symlink); files are opened with O_NOFOLLOW so a symlink in place is
refused, never written through; symlinks are created last, so none can redirect a later write. Hard links and
devices are not restored.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import ssl
import tarfile
from pathlib import Path
from typing import Any

from bulwark_agent.client import AgentError, Client, Refused

logger = logging.getLogger("bulwark_agent")


class UnsafeEntry(Exception):
    """An archive entry that would land outside the target or through a link."""


def _inside(root: Path, path: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _checked(root: Path, name: str, known: set[Path]) -> Path:
    if not name or name.startswith("/") or "\0" in name:
        raise UnsafeEntry(f"refusing {name!r}: not a relative path")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise UnsafeEntry(f"refusing {name!r}: empty, . or .. components")
    path = root.joinpath(*parts)
    if not _inside(root, path):
        raise UnsafeEntry(f"refusing {name!r}: outside {root}")
    parent = path.parent
    while parent != root and parent not in known:  # folders this restore made or checked are not asked again
        if parent.is_symlink():
            raise UnsafeEntry(f"refusing {name!r}: {parent} is a symbolic link")
        parent = parent.parent
    return path


def _ensure_parents(root: Path, path: Path, known: set[Path]) -> None:
    if path.parent == root or path.parent in known:
        return
    missing = []
    parent = path.parent
    while parent != root and not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700)
    if path.parent.is_symlink() or not path.parent.is_dir():
        raise UnsafeEntry(f"refusing {path}: its parent is not a directory")
    parent = path.parent
    while parent != root:  # every level was checked by _checked or made here
        known.add(parent)
        parent = parent.parent


def _chown(path: Any, member: tarfile.TarInfo, *, follow: bool = True) -> None:
    if os.geteuid() != 0:
        return
    try:
        if isinstance(path, int):
            os.fchown(path, member.uid, member.gid)
        else:
            os.chown(path, member.uid, member.gid, follow_symlinks=follow)
    except OSError as error:
        if error.errno != errno.EPERM:
            raise


HOLE_SPAN = 64 * 1024
_ZEROS = bytes(HOLE_SPAN)


def _write_sparse(handle: Any, data: bytes) -> None:
    """Write data, seeking over whole runs of zeros instead: a sparse file restores sparse."""
    view = memoryview(data)
    for start in range(0, len(view), HOLE_SPAN):
        piece = view[start : start + HOLE_SPAN]
        if piece == _ZEROS[: len(piece)]:
            handle.seek(len(piece), os.SEEK_CUR)
        else:
            handle.write(piece)


def extract(stream: Any, target: str) -> dict[str, int]:
    root = Path(target)
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    figures = {"files": 0, "folders": 0, "symlinks": 0, "bytes": 0, "refused": 0}
    folders: list[tuple[Path, tarfile.TarInfo]] = []
    links: list[tuple[Path, tarfile.TarInfo]] = []
    known: set[Path] = set()  # real folders under root, made or checked by this restore
    written: set[Path] = set()  # files this restore wrote: the only ones a hard link may name
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            path = _checked(root, member.name, known)
            _ensure_parents(root, path, known)
            if member.isdir():
                if path.is_symlink():
                    raise UnsafeEntry(f"refusing {member.name!r}: a symlink stands where a folder goes")
                path.mkdir(mode=0o700, exist_ok=True)
                if not path.is_dir():
                    raise UnsafeEntry(f"refusing {member.name!r}: a file stands where a folder goes")
                known.add(path)
                folders.append((path, member))
                figures["folders"] += 1
            elif member.isreg():
                source = archive.extractfile(member)
                assert source is not None
                if path.is_symlink():
                    raise UnsafeEntry(f"refusing {member.name!r}: a symlink stands where a file goes")
                # Under a temporary name, renamed once complete: a broken stream leaves no partial file under
                # the real name. O_EXCL | O_NOFOLLOW: never written through anything standing there.
                partial = path.with_name(f".{path.name}.{os.urandom(6).hex()}.partial")
                descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                try:
                    with os.fdopen(descriptor, "wb") as handle:
                        while True:
                            data = source.read(1024 * 1024)
                            if not data:
                                break
                            _write_sparse(handle, data)
                            figures["bytes"] += len(data)
                        handle.truncate()  # the length, when the file ends in a hole
                        handle.flush()
                        _chown(descriptor, member)
                        os.fchmod(descriptor, member.mode & 0o7777)
                        os.utime(descriptor, (member.mtime, member.mtime))
                    os.replace(partial, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        partial.unlink()
                    raise
                written.add(path)
                figures["files"] += 1
            elif member.islnk():
                # A hard link, only to a file this restore wrote itself (never to anything else on the host).
                partner = _checked(root, member.linkname, known)
                if partner not in written:
                    raise UnsafeEntry(f"refusing {member.name!r}: a hard link to a file not restored here")
                if path.is_symlink() or path.is_file():
                    path.unlink()
                elif path.exists():
                    raise UnsafeEntry(f"refusing {member.name!r}: a folder stands where a file goes")
                os.link(partner, path, follow_symlinks=False)
                written.add(path)
                figures["files"] += 1
            elif member.issym():
                links.append((path, member))
            else:
                figures["refused"] += 1  # devices, FIFOs
    for path, member in links:
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():
            raise UnsafeEntry(f"refusing {member.name!r}: a folder stands where a symlink goes")
        os.symlink(member.linkname, path)
        _chown(path, member, follow=False)
        figures["symlinks"] += 1
    for path, member in reversed(folders):  # deepest first: writing children changes a folder's times
        if path.is_symlink():
            raise UnsafeEntry(f"refusing {path}: became a symbolic link during the restore")
        _chown(path, member, follow=False)
        os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime))
    return figures


def run_restore(client: Client, restore_id: int) -> str:
    job = client.post(f"/api/agent/restores/{restore_id}/start/", {})
    error = ""
    figures: dict[str, int] = {}
    for attempt in range(3):  # a dropped stream starts over: files already written are simply rewritten
        try:
            with client.open_stream(f"/api/agent/restores/{restore_id}/archive/") as response:
                figures = extract(response, str(job["target"]))
            error = ""
            break
        except UnsafeEntry as refusal:
            error = str(refusal)
            break
        except Refused as refusal:
            error = str(refusal)
            break
        except (
            AgentError,
            ConnectionError,
            TimeoutError,
            ssl.SSLError,
            http.client.HTTPException,
            tarfile.ReadError,
            EOFError,
        ) as failure:
            error = f"the restore stream failed: {failure}"  # the transfer broke: try again
            logger.warning("restore %s attempt %s: %s", restore_id, attempt + 1, failure)
        except OSError as failure:
            error = f"writing on this host failed: {failure}"  # not the network's fault: no retry
            break
    answer = client.post(f"/api/agent/restores/{restore_id}/finish/", {"error": error, "result": figures})
    return str(answer.get("state"))
