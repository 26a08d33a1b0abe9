"""Which proxy runs which backup: the least-loaded proxy in the machine's site and jurisdiction, within each
proxy's stream limit and the per-datastore and per-host snapshot limits. Runs that fit nowhere wait (state
"waiting", with the reason) and are dispatched again whenever a run ends and every minute.

Without any proxy (the embedded install), runs go to the default queue, at most DEFAULT_STREAMS at a time.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from protection.choices import BackupMode, RunState
from protection.models import BackupRun, Proxy

DEFAULT_QUEUE = "celery"
PROXY_ONLINE_SECONDS = 120


def online_proxies() -> list[Proxy]:
    recent = timezone.now() - datetime.timedelta(seconds=PROXY_ONLINE_SECONDS)
    return list(Proxy.objects.filter(enabled=True, last_seen__gte=recent).order_by("name"))


def _why_not(run: BackupRun, proxies: list[Proxy]) -> str:
    machine = run.machine
    site = machine.source.site if machine.source else ""
    if not proxies:
        return "no proxy is online"
    if site and not any(p.site == site for p in proxies):
        return f"no proxy online in site {site}"
    if machine.jurisdiction and not any(p.jurisdiction in ("", machine.jurisdiction) for p in proxies):
        return f"no proxy online in jurisdiction {machine.jurisdiction}"
    return "every eligible proxy is at its stream limit"


Sender = Callable[[int, str], None]


def send_to_queue(run_id: int, queue: str) -> None:
    from config.celery import app

    app.send_task("protection.run_backup", args=(run_id,), queue=queue)


def dispatch(*, send: Sender = send_to_queue) -> list[BackupRun]:
    """Send every queued or waiting run that fits somewhere now; returns the runs sent."""
    sent: list[BackupRun] = []
    with transaction.atomic():
        pending = list(
            BackupRun.objects.select_for_update(of=("self",))
            .filter(
                state__in=[RunState.QUEUED, RunState.WAITING], sent_at__isnull=True, cancel_requested=False
            )
            .exclude(policy__mode=BackupMode.AGENT)  # the machine's agent picks those up itself
            .select_related("machine__source", "policy")
            .order_by("policy__priority", "queued_at")
        )
        if not pending:
            return sent
        active = list(
            BackupRun.objects.filter(
                Q(state__in=[RunState.RUNNING, RunState.COMMITTING])
                | Q(state=RunState.QUEUED, sent_at__isnull=False)
            ).values_list("proxy_id", "machine__host", "machine__datastores")
        )
        load: Counter[int | None] = Counter(proxy for proxy, _, _ in active)
        per_host: Counter[str] = Counter(host for _, host, _ in active if host)
        per_datastore: Counter[str] = Counter(ds for _, _, stores in active for ds in (stores or []))
        proxies = online_proxies()
        for run in pending:
            machine = run.machine
            if machine.host and per_host[machine.host] >= settings.BULWARK_SNAPSHOTS_PER_HOST:
                reason = f"host {machine.host} has {per_host[machine.host]} snapshots for backups already"
                _wait(run, reason)
                continue
            busy = [
                ds
                for ds in machine.datastores or []
                if per_datastore[ds] >= settings.BULWARK_SNAPSHOTS_PER_DATASTORE
            ]
            if busy:
                _wait(run, f"datastore {busy[0]} has its limit of snapshots for backups")
                continue
            queue, proxy = DEFAULT_QUEUE, None
            if proxies:
                site = machine.source.site if machine.source else ""
                eligible = [
                    p
                    for p in proxies
                    if (not site or p.site == site)
                    and (not machine.jurisdiction or p.jurisdiction in ("", machine.jurisdiction))
                    and load[p.pk] < p.max_streams
                ]
                if not eligible:
                    _wait(run, _why_not(run, proxies))
                    continue
                proxy = min(eligible, key=lambda p: (load[p.pk] / p.max_streams, load[p.pk], p.name))
                queue = proxy.queue
            elif load[None] >= settings.BULWARK_DEFAULT_STREAMS:
                _wait(run, "every stream of the embedded worker is busy")
                continue
            load[proxy.pk if proxy else None] += 1
            if machine.host:
                per_host[machine.host] += 1
            for ds in machine.datastores or []:
                per_datastore[ds] += 1
            BackupRun.objects.filter(pk=run.pk).update(
                state=RunState.QUEUED,
                proxy=proxy,
                sent_at=timezone.now(),
                phase=f"sent to proxy {proxy.name}" if proxy else "sent to the embedded worker",
            )
            run_id = run.pk
            transaction.on_commit(lambda run_id=run_id, queue=queue: send(run_id, queue))
            sent.append(run)
    return sent


def _wait(run: BackupRun, reason: str) -> None:
    BackupRun.objects.filter(pk=run.pk).update(state=RunState.WAITING, phase=f"waiting: {reason}"[:200])
