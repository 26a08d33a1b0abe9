"""Files out of an image point: chosen in its catalog, checked against the machine's restore rules, held for
approval where a group demands it, then written back into the VM through VMware Tools guest operations (to the
original location or another folder) or handed out as a download.

Only the chosen files' stored blocks are read (catalog.extract); nothing is mounted and no helper VM is booted.
"""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.utils import timezone

from catalog import extract, repositories
from catalog.choices import EntryKind, PointKind
from catalog.models import FileVersion, RecoveryPoint
from catalog.search import in_point
from connectors.base import ConnectorError, FileSink
from connectors.registry import connector_for
from core import audit
from core.choices import CredentialKind, Role
from core.events import publish_machine_events
from core.models import Credential, User
from restores.models import Conflict, RestoreKind, RestoreRequest, RestoreState, RestoreTarget
from restores.rules import Limits, extension_of, limits_for

MAX_ENTRIES = 100_000  # per restore: a larger selection is a whole-disk restore
WRITTEN_BY_WORKERS = (RestoreKind.FILES_TO_VM, RestoreKind.FILES_TO_SMB)
SYSTEM_MARKERS = {"/etc": "/", "/Windows": "C:"}  # what marks a volume as the guest's system volume


class FileRestoreRefused(ValueError):
    """The request is not allowed or not valid; nothing was queued."""


@dataclass
class Selection:
    # (path relative to the folder of the chosen item, its catalogued version), folders before their contents
    rows: list[tuple[str, FileVersion]] = field(default_factory=list)
    files: int = 0
    folders: int = 0
    bytes: int = 0


def normalised(path: str) -> str:
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise FileRestoreRefused(f"{path!r}: a path may not contain '..'")
    return "/" + "/".join(parts)


def select(user: User, point: RecoveryPoint, volume: str, paths: list[str]) -> Selection:
    """The catalogued entries under the chosen paths, as this user may see them, folders before their contents."""
    if not paths:
        raise FileRestoreRefused("choose at least one file or folder")
    visible = (
        in_point(FileVersion.objects.visible_to(user), point).filter(volume=volume).select_related("path")
    )
    selection = Selection()
    seen: set[int] = set()
    for chosen in dict.fromkeys(normalised(path) for path in paths):
        root = visible.filter(path__text=chosen).first()
        if root is None:
            raise FileRestoreRefused(f"{chosen} is not in this recovery point's catalog")
        base = posixpath.dirname(chosen)
        found = [root]
        if root.kind == EntryKind.DIR:
            prefix = chosen.rstrip("/") + "/"
            found += list(
                visible.filter(path__text__startswith=prefix).order_by("path__text")[: MAX_ENTRIES + 1]
            )
        for row in found:
            if row.pk in seen:
                continue
            seen.add(row.pk)
            relative = posixpath.relpath(row.path.text, base)
            selection.rows.append((relative, row))
            if row.kind == EntryKind.DIR:
                selection.folders += 1
            elif row.kind in (EntryKind.FILE, EntryKind.HARDLINK):
                selection.files += 1
                selection.bytes += row.size
        if len(selection.rows) > MAX_ENTRIES:
            raise FileRestoreRefused(
                f"the selection holds more than {MAX_ENTRIES:,} entries; restore the whole disk instead"
            )
    selection.rows.sort(key=lambda item: item[0].count("/"))  # folders before their contents
    return selection


def check_limits(limits: Limits, target: str, selection: Selection) -> None:
    if target not in limits.targets:
        raise FileRestoreRefused(
            f"the restore rules of {', '.join(limits.groups)} do not allow restores to "
            f"{RestoreTarget(target).label.lower()}"
        )
    if limits.extensions is not None:
        refused = [
            row.path.text
            for _, row in selection.rows
            if row.kind in (EntryKind.FILE, EntryKind.HARDLINK)
            and extension_of(row.path.text) not in limits.extensions
        ]
        if refused:
            shown = ", ".join(refused[:3]) + (f" and {len(refused) - 3} more" if len(refused) > 3 else "")
            raise FileRestoreRefused(
                f"the restore rules allow only {', '.join(sorted(limits.extensions)) or 'no'} files; not {shown}"
            )
    if limits.max_bytes is not None and selection.bytes > limits.max_bytes:
        raise FileRestoreRefused(
            f"the selection holds {selection.bytes:,} bytes; the restore rules allow at most {limits.max_bytes:,}"
        )


def system_root(point: RecoveryPoint, volume: str) -> str | None:
    """Where the volume is in the guest, when the catalog shows it is the system volume ('/' or 'C:')."""
    marks = in_point(FileVersion.objects.all(), point).filter(
        volume=volume, kind=EntryKind.DIR, path__text__in=list(SYSTEM_MARKERS)
    )
    found = marks.values_list("path__text", flat=True).first()
    return SYSTEM_MARKERS[found] if found else None


def guest_folder(target: str) -> str:
    """An absolute folder in the guest (Linux /srv/x or Windows C:\\x), without '..'."""
    windows = len(target) >= 2 and target[1] == ":" and target[0].isalpha()
    if not (target.startswith("/") or windows) or "\0" in target or len(target) > 1000:
        raise FileRestoreRefused(
            "the folder in the machine must be absolute, e.g. /srv/restored or C:\\Restored"
        )
    parts = [part for part in target.replace("\\", "/").split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise FileRestoreRefused("the folder in the machine may not contain . or .. components")
    return ("" if windows else "/") + "/".join(parts)


def guest_login_for(point: RecoveryPoint) -> Any:
    """The guest login of the policy the machine is under (as for its guest scripts)."""
    try:
        credential = point.machine.assignment.policy.guest_credential  # type: ignore[attr-defined]
    except ObjectDoesNotExist:
        credential = None
    if credential is None:
        raise FileRestoreRefused(
            f"the policy of {point.machine.name} has no guest login, which VMware Tools needs to write files "
            "into the VM; an admin sets one on the policy (or restore to a download)"
        )
    return credential


@transaction.atomic
def request_file_restore(
    *,
    actor: User,
    point: RecoveryPoint,
    volume: str,
    paths: list[str],
    target: str,
    folder: str = "",
    conflict: str = Conflict.KEEP_BOTH,
    smb_credential: int | None = None,
) -> RestoreRequest:
    """A restore of chosen files out of an image point: into the VM (its original location or another folder)
    or as a download; held for an admin's approval where the machine's restore rules demand it."""
    from restores import tasks

    if point.kind != PointKind.IMAGE:
        raise FileRestoreRefused(
            "this recovery point holds files; restore them to the agent host or download them"
        )
    if target not in RestoreTarget.values:
        raise FileRestoreRefused(f"unknown target {target!r}")
    if conflict not in Conflict.values:
        raise FileRestoreRefused(f"unknown choice for existing files {conflict!r}")
    selection = select(actor, point, volume, paths)
    limits = limits_for(actor, point.machine)
    check_limits(limits, target, selection)
    machine = point.machine
    share_login = None
    if target == RestoreTarget.DOWNLOAD:
        kind, where = RestoreKind.DOWNLOAD, "browser download"
    elif target == RestoreTarget.SMB:
        from connectors.smb import parse_unc

        try:
            parse_unc(folder)
        except ValueError as error:
            raise FileRestoreRefused(str(error)) from None
        where = folder.strip()  # as given, with its port if one was named
        share_login = Credential.objects.filter(pk=smb_credential or 0, kind=CredentialKind.SMB).first()
        if share_login is None:
            raise FileRestoreRefused("choose the SMB login to write with (an admin adds SMB credentials)")
        kind = RestoreKind.FILES_TO_SMB
    else:
        if machine.platform != "vsphere" or machine.source is None:
            raise FileRestoreRefused(
                "files can be written back into vSphere VMs (through VMware Tools); download them for this machine"
            )
        guest_login_for(point)
        kind = RestoreKind.FILES_TO_VM
        if target == RestoreTarget.IN_PLACE:
            if system_root(point, volume) is None:
                raise FileRestoreRefused(
                    "the original location is known only for the system volume; choose another folder"
                )
            where = ""
        else:
            where = guest_folder(folder)
    state = RestoreState.AWAITING_APPROVAL if limits.approval else RestoreState.QUEUED
    request = RestoreRequest.objects.create(
        machine=machine,
        point=point,
        kind=kind,
        target=where,
        volume=volume,
        paths=[normalised(path) for path in paths],
        conflict=conflict,
        smb_credential=share_login,
        requested_by=actor,
        state=state,
        bytes_total=selection.bytes,
    )
    audit.record(
        "restore.request",
        actor=actor,
        target=machine,
        after={
            "point": point.snapshot_id,
            "kind": kind,
            "target": where or "original location",
            "paths": request.paths[:50],
            "awaiting_approval": limits.approval,
        },
    )
    if state == RestoreState.QUEUED and kind in WRITTEN_BY_WORKERS:
        transaction.on_commit(lambda: tasks.run_restore.delay(request.pk))
    return request


def _announce(request: RestoreRequest) -> None:
    publish_machine_events(
        "restore.state",
        [
            (
                request.machine,
                {"restore": request.pk, "state": request.state, "error": request.decision_reason},
            )
        ],
    )


def decide(*, actor: User, request_id: int, approve: bool, reason: str = "") -> RestoreRequest:
    """An admin approves or refuses a held restore (never their own: four eyes); audited, and the requester's page
    hears it at once."""
    if actor.role != Role.ADMIN:
        raise FileRestoreRefused("only an admin approves restores")
    reason = reason.strip()[:500]
    if not approve and not reason:
        raise FileRestoreRefused("say why the restore is refused; the requester sees the reason")
    with transaction.atomic():
        request = RestoreRequest.objects.select_for_update().select_related("machine").get(pk=request_id)
        if request.state != RestoreState.AWAITING_APPROVAL:
            raise FileRestoreRefused(
                f"this restore is {request.get_state_display().lower()}, not awaiting approval"
            )
        if request.requested_by_id == actor.pk:
            raise FileRestoreRefused("a restore is approved by another admin than the one who asked for it")
        request.state = RestoreState.QUEUED if approve else RestoreState.REFUSED
        request.decided_by, request.decided_at, request.decision_reason = actor, timezone.now(), reason
        if not approve:
            request.finished_at = request.decided_at
        request.save(update_fields=["state", "decided_by", "decided_at", "decision_reason", "finished_at"])
        audit.record(
            "restore.approve" if approve else "restore.refuse",
            actor=actor,
            target=request.machine,
            after={"restore": request.pk, "reason": reason},
        )
        if approve and request.kind in WRITTEN_BY_WORKERS:
            from restores import tasks

            transaction.on_commit(lambda: tasks.run_restore.delay(request.pk))
    _announce(request)
    return request


# --- running ----------------------------------------------------------------------------------------------------


def _kept_name(path: str, attempt: int) -> str:
    folder, name = posixpath.split(path)
    return posixpath.join(folder, f"RESTORED-{name}" if attempt == 1 else f"RESTORED-{attempt}-{name}")


def _guest_path(path: str, windows: bool) -> str:
    return path.replace("/", "\\") if windows else path


def _requested_selection(request: RestoreRequest) -> Selection:
    requester = request.requested_by
    if requester is None:
        raise FileRestoreRefused("the account that asked for this restore no longer exists")
    return select(requester, request.point, request.volume, request.paths)


def into_vm(request: RestoreRequest, progress: Any) -> dict[str, Any]:
    """Write the selection into the VM through VMware Tools, with the policy's guest login."""
    from connectors.vsphere.guest import GuestLogin

    point, machine = request.point, request.machine
    selection = _requested_selection(request)
    credential = guest_login_for(point)
    root = request.target or system_root(point, request.volume)
    if root is None:
        raise FileRestoreRefused("the original location of this volume is not known")
    assert machine.source is not None
    connector: Any = connector_for(machine.source.endpoint(timeout=60.0))
    login = GuestLogin(credential.username, credential.reveal())
    with connector.guest_files(machine.external_id, login) as guest:
        return write_files(
            request,
            selection,
            guest,
            root,
            windows=root[1:2] == ":",
            in_place=not request.target,
            progress=progress,
        )


def into_share(request: RestoreRequest, progress: Any) -> dict[str, Any]:
    """Write the selection into a folder of an SMB share, with the SMB login the request names."""
    from connectors.smb import parse_unc, smb_share

    selection = _requested_selection(request)
    credential = request.smb_credential
    if credential is None:
        raise FileRestoreRefused("the SMB login of this restore no longer exists")
    where = parse_unc(request.target)
    with smb_share(where, credential.username, credential.reveal()) as share:
        return write_files(
            request, selection, share, where.unc, windows=True, in_place=False, progress=progress
        )


def write_files(
    request: RestoreRequest,
    selection: Selection,
    sink: FileSink,
    root: str,
    *,
    windows: bool,
    in_place: bool,
    progress: Any,
) -> dict[str, Any]:
    """Write a selection through a file sink (a VM's guest, an SMB share: stat, make_folder, upload); per file:
    written, kept beside the existing one, skipped (and why) or failed (and why) while the others go on."""
    from connectors.smb import SmbFileError
    from connectors.vsphere.guestfiles import GuestFileError

    engine, snapshot = repositories.open_point(request.point)
    restored: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    made: set[str] = set()
    done = 0

    def folder(path: str) -> None:
        if path not in made:
            sink.make_folder(_guest_path(path, windows))
            made.add(path)

    for relative, row in selection.rows:
        # In place: the path itself under the volume's root; another folder: the chosen item's name inside it.
        inside = row.path.text if in_place else "/" + relative
        destination = (root.rstrip("/") + inside) if root != "/" else inside
        shown = _guest_path(destination, windows)  # the sink's own spelling, for the restore's report
        try:
            if row.kind == EntryKind.DIR:
                folder(destination)
                continue
            if row.kind == EntryKind.SYMLINK:
                why = f"a symbolic link to {row.link_target} (not created there; it is never followed)"
                skipped.append({"path": shown, "why": why})
                continue
            if row.kind not in (EntryKind.FILE, EntryKind.HARDLINK):
                skipped.append({"path": shown, "why": f"a {row.get_kind_display().lower()}"})
                continue
            folder(posixpath.dirname(destination) or "/")
            written = destination
            existing = sink.stat(shown)
            if existing is not None and existing.kind == "directory":
                failed.append({"path": shown, "why": "a folder of that name is in the way"})
                continue
            if existing is not None and request.conflict == Conflict.SKIP:
                skipped.append({"path": shown, "why": "a file of that name exists"})
                continue
            if existing is not None and request.conflict == Conflict.KEEP_BOTH:
                attempt = 1
                while sink.stat(_guest_path(_kept_name(destination, attempt), windows)) is not None:
                    attempt += 1
                written = _kept_name(destination, attempt)
            base = done
            sink.upload(
                _guest_path(written, windows),
                row.size,
                extract.file_bytes(engine, snapshot, row) if row.size else iter(()),
                overwrite=request.conflict == Conflict.OVERWRITE,
                mode=row.mode,
                mtime=datetime.datetime.fromtimestamp(row.mtime_ns / 1e9, tz=datetime.UTC)
                if row.mtime_ns
                else None,
                progress=lambda n, base=base: progress(base + n),  # type: ignore[misc]
            )
            done += row.size
            restored.append(
                {
                    "path": _guest_path(written, windows),
                    "bytes": row.size,
                    "as": "copy" if written != destination else "",
                }
            )
        except (GuestFileError, SmbFileError, extract.NotReadable) as error:
            failed.append({"path": shown, "why": str(error)})
    if failed and not restored:
        raise ConnectorError(f"no file could be written: {failed[0]['path']}: {failed[0]['why']}")
    return {
        "into": root if not in_place else "original location",
        "restored": restored[:1000],
        "restored_count": len(restored),
        "skipped": skipped[:200],
        "failed": failed[:200],
        "bytes": done,
    }


def download_rows(request: RestoreRequest) -> tuple[str, Iterator[bytes], int | None]:
    """An approved (or unheld) download restore: one file as itself, several as a tar; name, pieces, length."""
    selection = _requested_selection(request)
    engine, snapshot = repositories.open_point(request.point)
    if len(selection.rows) == 1 and selection.rows[0][1].kind in (EntryKind.FILE, EntryKind.HARDLINK):
        row = selection.rows[0][1]
        return row.path.name, extract.file_bytes(engine, snapshot, row), row.size
    name = f"{request.machine.name}-{request.point.taken_at:%Y%m%d-%H%M}.tar".replace(" ", "_")
    return name, extract.tar_of(engine, snapshot, selection.rows), None


def mark(
    request: RestoreRequest, state: str, *, error: str = "", result: dict[str, Any] | None = None
) -> None:
    RestoreRequest.objects.filter(pk=request.pk).update(
        state=state,
        started_at=request.started_at or timezone.now(),
        finished_at=timezone.now(),
        error=error[:5000],
        result=result or {},
        bytes_done=request.bytes_total if state == RestoreState.DONE else request.bytes_done,
    )
