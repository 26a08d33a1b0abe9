"""Policies, the rules that assign them, the assignments (with why), and alerts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from core.querysets import AdminOnlyQuerySet
from inventory.models import Machine, Source
from protection.choices import AlertKind, RuleAction, RuleMode, Severity
from protection.querysets import AlertQuerySet, AssignmentQuerySet, PolicyQuerySet


class Policy(models.Model):
    """What protection a machine gets. Schedules, retention and targets join in the protection issue."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    rpo_minutes = models.PositiveIntegerField(default=24 * 60, help_text="Recovery point objective.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PolicyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name


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
    raised_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

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
