"""Policies, the rules that assign them, the assignments (with why), and alerts."""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from catalog.models import Repository
from core.models import Credential
from core.querysets import AdminOnlyQuerySet
from inventory.models import Machine, Source
from protection.choices import (
    AlertKind,
    BackupMode,
    DedupLocation,
    RuleAction,
    RuleMode,
    RunState,
    RunTrigger,
    Severity,
)
from protection.querysets import AlertQuerySet, AssignmentQuerySet, BackupRunQuerySet, PolicyQuerySet


class Proxy(models.Model):
    """A Celery worker on its own queue that moves backup data; chosen by site, jurisdiction and load."""

    name = models.CharField(max_length=100, unique=True)
    queue = models.CharField(max_length=120, unique=True)
    site = models.CharField(max_length=64, blank=True)
    jurisdiction = models.CharField(max_length=64, blank=True)
    max_streams = models.PositiveIntegerField(default=4)
    enabled = models.BooleanField(default=True)
    last_seen = models.DateTimeField(null=True, blank=True)

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "proxies"

    def __str__(self) -> str:
        return self.name


class Policy(models.Model):
    """What protection a machine gets: when, how, where, and for how long."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    rpo_minutes = models.PositiveIntegerField(default=24 * 60, help_text="Recovery point objective.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    repository = models.ForeignKey(
        Repository, null=True, blank=True, on_delete=models.PROTECT, related_name="policies"
    )
    mode = models.CharField(max_length=16, choices=BackupMode.choices, default=BackupMode.AGENTLESS)
    interval_minutes = models.PositiveIntegerField(default=24 * 60, help_text="Back up every N minutes.")
    quiesce = models.BooleanField(
        default=True, help_text="Application-consistent snapshots (VMware Tools, VSS)."
    )
    priority = models.PositiveSmallIntegerField(default=5, help_text="1 runs first.")
    keep_last = models.PositiveSmallIntegerField(default=7)
    keep_daily = models.PositiveSmallIntegerField(default=14)
    keep_weekly = models.PositiveSmallIntegerField(default=8)
    keep_monthly = models.PositiveSmallIntegerField(default=12)
    keep_yearly = models.PositiveSmallIntegerField(default=0)
    full_every_days = models.PositiveSmallIntegerField(
        default=30,
        help_text="Read every block again this often, in case changed-block tracking missed a write.",
    )
    window_start = models.TimeField(null=True, blank=True, help_text="Backups start only inside this window.")
    window_end = models.TimeField(
        null=True, blank=True, help_text="May be earlier than the start (overnight)."
    )
    bandwidth_limit_mbps = models.PositiveIntegerField(
        null=True, blank=True, help_text="Read at most this many megabits per second per run."
    )
    dedup_location = models.CharField(
        max_length=16, choices=DedupLocation.choices, default=DedupLocation.PROXY
    )
    pre_script = models.TextField(
        blank=True, help_text="Run in the guest or on the host before the snapshot."
    )
    post_script = models.TextField(blank=True, help_text="Run after the snapshot, also when it failed.")
    guest_credential = models.ForeignKey(
        Credential,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="vSphere: the guest login the scripts run with (through VMware Tools).",
    )
    schedule_cron = models.CharField(
        max_length=100,
        blank=True,
        help_text="Cron schedule (minute hour day month weekday, server time), e.g. '30 22 * * 1-5'; "
        "when set it replaces the interval.",
    )
    # Agent backups: what the agent reads.
    include_paths = models.TextField(
        blank=True, help_text="Agent: folders and files to back up at file level, one absolute path per line."
    )
    exclude_patterns = models.TextField(
        blank=True, help_text="Agent: names or paths to skip, shell patterns, one per line (e.g. *.tmp)."
    )
    volumes = models.TextField(
        blank=True,
        help_text="Agent: block devices to back up whole, one per line (e.g. /dev/sda), for bare-metal restore.",
    )

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def in_window(self, moment: datetime.datetime) -> bool:
        """Whether a backup may start at `moment` (the window is in the server's time zone)."""
        if self.window_start is None or self.window_end is None:
            return True
        now = timezone.localtime(moment).time()
        if self.window_start <= self.window_end:
            return self.window_start <= now < self.window_end
        return now >= self.window_start or now < self.window_end


# What an admin sets on a policy: one list for the form, the API and the audit record.
POLICY_FIELDS = (
    "name",
    "description",
    "rpo_minutes",
    "enabled",
    "repository",
    "interval_minutes",
    "priority",
    "quiesce",
    "keep_last",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "full_every_days",
    "window_start",
    "window_end",
    "bandwidth_limit_mbps",
    "mode",
    "dedup_location",
    "schedule_cron",
    "pre_script",
    "post_script",
    "include_paths",
    "exclude_patterns",
    "volumes",
)


def path_lines(text: str, *, absolute: bool) -> str:
    """One entry per line, blank lines dropped; with `absolute`, every line must be an absolute path
    (ValueError names those that are not)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    relative = [line for line in lines if absolute and not line.startswith("/")]
    if relative:
        raise ValueError(f"not an absolute path: {', '.join(relative[:5])}")
    return "\n".join(lines)


class CopyTarget(models.Model):
    """A further copy of every recovery point of a policy, to another repository (another tier, site or an
    immutable S3 bucket), with a retention of its own."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="copy_targets")
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="copy_of")
    keep_last = models.PositiveSmallIntegerField(default=3)
    keep_daily = models.PositiveSmallIntegerField(default=7)
    keep_weekly = models.PositiveSmallIntegerField(default=4)
    keep_monthly = models.PositiveSmallIntegerField(default=12)
    keep_yearly = models.PositiveSmallIntegerField(default=3)

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["policy", "repository"], name="copy_target_once")]

    def __str__(self) -> str:
        return f"{self.policy} → {self.repository}"


# What a rule matches on, and every field a person sets on a rule (forms, API and audit use these lists).
RULE_CRITERIA = (
    "match_source",
    "match_platform",
    "match_name",
    "match_tags",
    "match_folder",
    "match_resource_pool",
    "match_host",
    "match_guest_os",
)
RULE_FIELDS = ("name", "position", "enabled", "action", "policy", "mode", *RULE_CRITERIA)


class ProtectionRule(models.Model):
    """Puts machines under a policy (or excludes them) by what discovery knows about them.

    Every criterion that is set must match (empty ones match anything); patterns are shell-style (`*`, `?`),
    case-insensitive, and a comma separates alternatives. Rules are evaluated in `position` order: the first
    matching include rule names the policy, and an exclusion that matches always wins, wherever it stands.
    """

    name = models.CharField(max_length=100, unique=True)
    position = models.PositiveIntegerField(unique=True)
    enabled = models.BooleanField(default=True)
    action = models.CharField(max_length=16, choices=RuleAction.choices, default=RuleAction.INCLUDE)
    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.PROTECT, related_name="rules")
    mode = models.CharField(max_length=24, choices=RuleMode.choices, default=RuleMode.ASSIGN_ONLY)
    match_source = models.ForeignKey(
        Source, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    match_platform = models.CharField(max_length=16, blank=True)
    match_name = models.CharField(max_length=500, blank=True)
    match_tags = models.CharField(max_length=500, blank=True, help_text="Any of these tags (category:tag).")
    match_folder = models.CharField(max_length=500, blank=True)
    match_resource_pool = models.CharField(max_length=500, blank=True)
    match_host = models.CharField(max_length=500, blank=True, help_text="Host or cluster.")
    match_guest_os = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AdminOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["position"]

    def __str__(self) -> str:
        return self.name


class Assignment(models.Model):
    """A machine under a policy, and why: the rule that put it there, or the person who did."""

    machine = models.OneToOneField(Machine, on_delete=models.CASCADE, related_name="assignment")
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="assignments")
    rule = models.ForeignKey(
        ProtectionRule, null=True, blank=True, on_delete=models.SET_NULL, related_name="assignments"
    )
    assigned_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=500)
    assigned_at = models.DateTimeField(default=timezone.now)

    objects = AssignmentQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.machine} → {self.policy}"

    @property
    def manual(self) -> bool:
        return self.rule_id is None


class Alert(models.Model):
    """Something an admin should look at. One open alert per key; resolved, never deleted."""

    kind = models.CharField(max_length=32, choices=AlertKind.choices)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    key = models.CharField(max_length=200, help_text="What it is about, e.g. unprotected:<machine id>.")
    machine = models.ForeignKey(
        Machine, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.CASCADE, related_name="alerts")
    message = models.CharField(max_length=1000)
    # An alert of one kind from one check lists its machines here (each with its own cause), instead of one
    # alert per machine: a check that finds 2,000 unprotected machines raises one alert and sends one e-mail.
    machines = models.ManyToManyField(
        Machine, through="AlertMachine", related_name="grouped_alerts", blank=True
    )
    raised_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = AlertQuerySet.as_manager()

    class Meta:
        ordering = ["-raised_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(resolved_at__isnull=True), name="alert_one_open_per_key"
            )
        ]

    def __str__(self) -> str:
        return self.message


class AlertMachine(models.Model):
    """One machine listed by a grouped alert, with its current cause."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="entries")
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="alert_entries")
    cause = models.CharField(max_length=500)
    since = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["machine__name", "pk"]
        constraints = [models.UniqueConstraint(fields=["alert", "machine"], name="alert_machine_once")]

    def __str__(self) -> str:
        return f"{self.machine}: {self.cause}"


class BackupRun(models.Model):
    """One backup of one machine: queued → (waiting) → running → committing → committed | failed | cancelled.

    Claimed with conditional updates (a message delivered twice does no harm); the row is the truth, not Celery.
    """

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="runs")
    policy = models.ForeignKey(Policy, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="runs")
    proxy = models.ForeignKey(Proxy, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.QUEUED, db_index=True)
    trigger = models.CharField(max_length=16, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    phase = models.CharField(max_length=200, blank=True)
    current_disk = models.CharField(max_length=200, blank=True)
    bytes_total = models.BigIntegerField(default=0)
    bytes_done = models.BigIntegerField(default=0)
    bytes_new = models.BigIntegerField(default=0)
    bytes_stored = models.BigIntegerField(default=0)
    rate = models.FloatField(default=0.0, help_text="Bytes per second.")
    steps = models.JSONField(
        default=list,
        blank=True,
        help_text="What the run did, in order: [{at, text}] (snapshot, CBT, scripts...).",
    )
    full_read = models.BooleanField(default=True)
    snapshot_id = models.CharField(max_length=100, blank=True)
    cancel_requested = models.BooleanField(default=False)
    sent_at = models.DateTimeField(null=True, blank=True, help_text="When it was sent to a worker's queue.")
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="The worker's last sign of life.")
    worker = models.CharField(max_length=200, blank=True, help_text="The Celery worker that ran it.")
    error = models.TextField(blank=True)
    lease = models.CharField(
        max_length=64, blank=True, help_text="Agent runs: the repository lease that guards uploaded chunks."
    )

    objects = BackupRunQuerySet.as_manager()

    class Meta:
        ordering = ["-queued_at", "-pk"]
        indexes = [models.Index(fields=["machine", "-queued_at"])]

    def __str__(self) -> str:
        return f"backup of {self.machine} ({self.state})"

    @property
    def fraction(self) -> float:
        return min(1.0, self.bytes_done / self.bytes_total) if self.bytes_total else 0.0

    @property
    def is_active(self) -> bool:
        return self.state in (RunState.QUEUED, RunState.WAITING, RunState.RUNNING, RunState.COMMITTING)

    @property
    def eta_seconds(self) -> float | None:
        if self.rate <= 0 or not self.bytes_total:
            return None
        return max(0.0, (self.bytes_total - self.bytes_done) / self.rate)
