"""Restores of whole machines: to disk-image files in the restore area, or as a new VM beside the original.

The restore area is BULWARK_RESTORE_ROOT (default: <data dir>/restores). A target folder is one plain name:
separators, "..", absolute paths and a symlink in its place are refused, so a restore can never write outside.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from catalog import files, repositories
from catalog.choices import PointKind
from catalog.models import RecoveryPoint
from connectors.base import ConnectorError
from connectors.registry import connector_for
from core import audit
from core.events import publish_machine_events
from core.models import User
from engine.errors import EngineError
from engine.image import ImageReader, restore_image
from inventory.models import Agent
from restores.file_restores import FileRestoreRefused
from restores.models import RestoreKind, RestoreRequest, RestoreState

logger = logging.getLogger(__name__)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,79}$")


class RestoreRefused(ValueError):
    """The request is not valid (bad target, wrong platform); nothing was started."""


def restore_root() -> Path:
    root = Path(getattr(settings, "BULWARK_RESTORE_ROOT", "") or Path(settings.DATA_DIR) / "restores")
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def target_folder(name: str) -> Path:
    """The folder for a restore, strictly inside the restore root."""
    if not SAFE_NAME.match(name) or name in (".", "..") or ".." in name:
        raise RestoreRefused("the target folder must be one plain name (letters, digits, . _ - and spaces)")
    root = restore_root()
    folder = root / name
    if folder.is_symlink():
        raise RestoreRefused("the target folder is a symbolic link")
    if folder.resolve().parent != root:
        raise RestoreRefused("the target folder would leave the restore area")
    return folder


def agent_target(target: str) -> str:
    """A folder on the agent's host: absolute, normalised, no '..' (the agent checks again on its side)."""
    if not target.startswith("/") or "\0" in target or len(target) > 1000:
        raise RestoreRefused("the target on the host must be an absolute folder, e.g. /srv/restored")
    parts = [part for part in target.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise RestoreRefused("the target on the host may not contain . or .. components")
    return "/" + "/".join(parts)


def clean_paths(point: RecoveryPoint, paths: list[str]) -> list[str]:
    """The chosen paths, checked to exist in the point's snapshot."""
    try:
        return files.checked_paths(*repositories.open_point(point), paths)
    except files.NotFound as error:
        raise RestoreRefused(str(error)) from None


@transaction.atomic
def request_restore(
    *, actor: User, point: RecoveryPoint, kind: str, target: str, paths: list[str] | None = None
) -> RestoreRequest:
    """Queue a restore: a whole machine (image files, new VM) or chosen files back to the agent's host."""
    from restores import tasks

    paths = list(paths or [])
    if kind == RestoreKind.FILES_TO_AGENT:
        if point.kind != "files":
            raise RestoreRefused("this recovery point holds disk images; choose a file backup")
        if not Agent.objects.filter(machine=point.machine, revoked_at__isnull=True).exists():
            raise RestoreRefused(f"{point.machine.name} has no enrolled agent to restore to")
        target = agent_target(target)
        paths = clean_paths(point, paths)
        request = RestoreRequest.objects.create(
            machine=point.machine, point=point, kind=kind, target=target, paths=paths, requested_by=actor
        )
        audit.record(
            "restore.request",
            actor=actor,
            target=point.machine,
            after={"point": point.snapshot_id, "kind": kind, "target": target, "paths": paths[:50]},
        )
        return request  # the agent picks it up on its next poll
    if point.kind != PointKind.IMAGE:
        raise RestoreRefused(
            "this recovery point holds files; restore them to the agent host or download them"
        )
    if kind == RestoreKind.IMAGE_FILES:
        folder = target_folder(target)
        if folder.exists() and any(folder.iterdir()):
            raise RestoreRefused(f"the folder {target} in the restore area is not empty")
    elif kind == RestoreKind.NEW_VM:
        if point.machine.platform != "vsphere" or point.machine.source is None:
            raise RestoreRefused("restoring as a new VM is available for vSphere machines")
        if not SAFE_NAME.match(target):
            raise RestoreRefused("the new VM's name must be plain (letters, digits, . _ - and spaces)")
    else:
        raise RestoreRefused(f"unknown restore kind {kind!r}")
    request = RestoreRequest.objects.create(
        machine=point.machine, point=point, kind=kind, target=target, requested_by=actor
    )
    audit.record(
        "restore.request",
        actor=actor,
        target=point.machine,
        after={"point": point.snapshot_id, "kind": kind, "target": target},
    )
    transaction.on_commit(lambda: tasks.run_restore.delay(request.pk))
    return request


class _Progress:
    def __init__(self, request: RestoreRequest) -> None:
        self.request = request
        self.last = 0.0
        self.offset = 0  # bytes of the disks already restored (the engine reports per disk)

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.25 and done < self.request.bytes_total:
            return
        self.last = now
        RestoreRequest.objects.filter(pk=self.request.pk).update(bytes_done=done)
        publish_machine_events(
            "restore.progress",
            [
                (
                    self.request.machine,
                    {"restore": self.request.pk, "done": done, "total": self.request.bytes_total},
                )
            ],
        )

    def step(self, done: int, total: int | None, phase: str) -> None:  # the engine's Progress protocol
        self(self.offset + done)


def run_restore(request_id: int) -> RestoreRequest:
    """Claim and run a queued restore; the request records the result or the reason it failed."""
    if not RestoreRequest.objects.filter(pk=request_id, state=RestoreState.QUEUED).update(
        state=RestoreState.RUNNING, started_at=timezone.now()
    ):
        return RestoreRequest.objects.get(pk=request_id)
    request = RestoreRequest.objects.select_related(
        "point__repository__passphrase", "machine__source__credential", "smb_credential"
    ).get(pk=request_id)
    try:
        result = _restore(request)
        state, error = RestoreState.DONE, ""
    except (RestoreRefused, FileRestoreRefused, ConnectorError, EngineError, OSError) as failure:
        result, state, error = {}, RestoreState.FAILED, str(failure)
    except Exception as failure:
        logger.exception("restore %s failed unexpectedly", request.pk)
        result, state, error = (
            {},
            RestoreState.FAILED,
            f"unexpected error: {type(failure).__name__}: {failure}",
        )
    RestoreRequest.objects.filter(pk=request.pk).update(
        state=state, finished_at=timezone.now(), result=result, error=error[:5000]
    )
    request.refresh_from_db()
    publish_machine_events(
        "restore.state", [(request.machine, {"restore": request.pk, "state": state, "error": error})]
    )
    return request


def _restore(request: RestoreRequest) -> dict[str, Any]:
    if request.kind == RestoreKind.FILES_TO_VM:
        from restores.file_restores import into_vm

        return into_vm(request, _Progress(request))
    if request.kind == RestoreKind.FILES_TO_SMB:
        from restores.file_restores import into_share

        return into_share(request, _Progress(request))
    engine, snapshot = repositories.open_point(request.point)
    disks = snapshot.disks
    total = sum(int(disk["size"]) for disk in disks)
    RestoreRequest.objects.filter(pk=request.pk).update(bytes_total=total)
    request.bytes_total = total
    progress = _Progress(request)
    if request.kind == RestoreKind.IMAGE_FILES:
        folder = target_folder(request.target)
        folder.mkdir(exist_ok=True)
        files = []
        for disk in disks:
            name = re.sub(r"[^A-Za-z0-9._-]", "_", str(disk["name"])) + ".img"
            path = folder / name
            restore_image(engine, snapshot, disk["name"], path, progress=progress)
            progress.offset += int(disk["size"])
            files.append({"disk": disk["name"], "path": str(path), "bytes": os.path.getsize(path)})
        return {"folder": str(folder), "files": files}
    machine = request.machine
    assert machine.source is not None
    connector: Any = connector_for(machine.source.endpoint(timeout=60.0))
    readers = [(ImageReader(engine, disk), int(disk["size"])) for disk in disks]
    moref = connector.restore_as_new_vm(
        machine.external_id, machine.datacenter, request.target, readers, progress
    )
    return {"vm": moref, "name": request.target}


# --- files back to an agent's host ------------------------------------------------------------------------------


def _agent_restore(agent: Agent, restore_id: int, *states: str) -> RestoreRequest:
    request = (
        RestoreRequest.objects.select_related("point__repository__passphrase", "machine")
        .filter(pk=restore_id, machine=agent.machine, kind=RestoreKind.FILES_TO_AGENT)
        .first()
    )
    if request is None:
        raise RestoreRefused(f"restore {restore_id} is not a restore to this machine")
    if request.state not in states:
        raise RestoreRefused(f"restore {restore_id} is {request.get_state_display().lower()}")
    return request


def start_agent_restore(agent: Agent, restore_id: int) -> dict[str, Any]:
    """Claim a queued file restore for the agent (or describe again the one it already runs)."""
    RestoreRequest.objects.filter(
        pk=restore_id, machine=agent.machine, kind=RestoreKind.FILES_TO_AGENT, state=RestoreState.QUEUED
    ).update(state=RestoreState.RUNNING, started_at=timezone.now())
    request = _agent_restore(agent, restore_id, RestoreState.RUNNING)
    selection = files.measure(*repositories.open_point(request.point), request.paths)
    RestoreRequest.objects.filter(pk=request.pk).update(bytes_total=selection.bytes)
    return {
        "restore": request.pk,
        "target": request.target,
        "paths": request.paths,
        "files": selection.files,
        "folders": selection.folders,
        "bytes": selection.bytes,
    }


def agent_archive(agent: Agent, restore_id: int) -> Iterator[bytes]:
    request = _agent_restore(agent, restore_id, RestoreState.RUNNING)
    engine, snapshot = repositories.open_point(request.point)
    return files.tar_stream(engine, snapshot, request.paths, on_bytes=_Progress(request))


def finish_agent_restore(
    agent: Agent, restore_id: int, *, error: str, result: dict[str, Any]
) -> RestoreRequest:
    request = _agent_restore(agent, restore_id, RestoreState.RUNNING)
    state = RestoreState.FAILED if error else RestoreState.DONE
    RestoreRequest.objects.filter(pk=request.pk).update(
        state=state,
        finished_at=timezone.now(),
        error=error[:5000],
        result={k: v for k, v in result.items() if isinstance(v, (int, str))},
        bytes_done=request.bytes_total if not error else request.bytes_done,
    )
    request.refresh_from_db()
    publish_machine_events(
        "restore.state", [(request.machine, {"restore": request.pk, "state": state, "error": error})]
    )
    return request


def record_download(*, actor: User, point: RecoveryPoint, paths: list[str]) -> RestoreRequest:
    """A browser download is a restore too: it is audited and listed with the machine's restores."""
    request = RestoreRequest.objects.create(
        machine=point.machine,
        point=point,
        kind=RestoreKind.DOWNLOAD,
        target="browser download",
        paths=paths,
        requested_by=actor,
        state=RestoreState.DONE,
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    audit.record(
        "restore.download",
        actor=actor,
        target=point.machine,
        after={"point": point.snapshot_id, "paths": paths[:50]},
    )
    return request
